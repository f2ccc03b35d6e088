"""Keys: create (the secret is shown once), revoke, usage; the webhook delivery log."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mediarelay.api.webhooks import check_webhook_url
from mediarelay.domain import MediarelayError, now_ms
from mediarelay.store.webhooks import PENDING, STATES
from mediarelay.web import charts, extensions
from mediarelay.web import money as billing_view
from mediarelay.web.charts import Series
from mediarelay.web.common import (
    AdminRoute,
    Denied,
    Redirect,
    admin_session,
    checked_session,
    flash,
    form_data,
    page,
    ui,
)
from mediarelay.web.dashboard import DAY, STATUS_ORDER, WINDOWS
from mediarelay.web.session import COOKIE, Session

router = APIRouter(route_class=AdminRoute, include_in_schema=False)

MAX_NAME = 200


def currency(admin: Any) -> str:
    billing = extensions.billing(admin.services)
    return str(getattr(billing, "currency", "") or "")


def key_list(admin: Any) -> dict[str, Any]:
    keys = admin.services.keys.list()
    usage = admin.queries.key_usage(now_ms() - DAY)
    billing = extensions.billing(admin.services)
    money = billing_view.all_accounts(admin.services.db, currency(admin)) if billing is not None else {}
    keys.sort(key=lambda k: (k.revoked_at is not None, -(usage.get(k.id, {}).get("last", 0)), -k.created_at))
    return {"keys": keys, "usage": usage, "money": money}


@router.get("/admin/keys")
async def keys_page(request: Request, session: Session = Depends(admin_session)) -> Response:
    ctx = await asyncio.to_thread(key_list, ui(request))
    return page(request, "keys.html", {**ctx, "values": {}, "errors": {}}, nav="keys")


def parse_new_key(admin: Any, form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The create form checked like the API checks its input; returns (values, errors by field)."""
    errors: dict[str, str] = {}
    name = form.get("name", "").strip()
    if not name:
        errors["name"] = "Give the key a name (who or what uses it)."
    elif len(name) > MAX_NAME:
        errors["name"] = f"At most {MAX_NAME} characters."
    url = form.get("webhook_url", "").strip() or None
    if url is not None:
        try:
            url = check_webhook_url(url, admin.services.webhooks.guard, "webhook URL")
        except MediarelayError as exc:
            errors["webhook_url"] = exc.message
    values: dict[str, Any] = {"name": name, "is_admin": form.get("is_admin") == "on", "webhook_url": url}
    if extensions.billing(admin.services) is not None:
        values["money"], money_errors = billing_view.parse_new_key(form)
        errors.update(money_errors)
    return values, errors


@router.post("/admin/keys")
async def create_key(request: Request, session: Session = Depends(checked_session)) -> Response:
    admin = ui(request)
    form = await form_data(request)
    values, errors = parse_new_key(admin, form)
    if errors:
        ctx = await asyncio.to_thread(key_list, admin)
        return page(request, "keys.html", {**ctx, "values": form, "errors": errors}, nav="keys", status=400)
    svc = admin.services
    if "money" in values:
        key, secret = await asyncio.to_thread(
            lambda: billing_view.create_key(
                svc.db,
                values["name"],
                admin=values["is_admin"],
                webhook_url=values["webhook_url"],
                money=values["money"],
            )
        )
    else:
        key, secret = await asyncio.to_thread(
            lambda: svc.keys.create(
                values["name"], is_admin=values["is_admin"], webhook_url=values["webhook_url"]
            )
        )
    session.secret_once = (key.id, secret)
    flash(session, f"Key “{key.name}” created.")
    raise Redirect(f"/admin/keys/{key.id}")


def key_detail(admin: Any, key_id: str) -> dict[str, Any] | None:
    row = admin.queries.key_row(key_id)
    if row is None:
        return None
    window = WINDOWS["30d"]
    now = now_ms()
    start = window.start(now)
    labels = window.labels(start)
    by_status = {s.value: [0.0] * window.buckets for s in STATUS_ORDER}
    for b, status, n in admin.queries.key_daily(key_id, start, DAY):
        if 0 <= b < window.buckets and status in by_status:
            by_status[status][b] += n
    chart = charts.stacked_bars(
        "chart-key",
        f"Tasks of {row['name'] or row['prefix']}, last 30 days",
        "Top-level tasks this key submitted per day, stacked by their current status (UTC).",
        labels,
        [Series(s.value, by_status[s.value], f"s-{s.value}") for s in STATUS_ORDER],
        unit=" tasks",
    )
    ctx: dict[str, Any] = {
        "key": row,
        "usage": admin.queries.key_usage(now - DAY).get(key_id, {}),
        "chart": chart,
        "deliveries": admin.services.webhooks.repo.page(key_id=key_id, limit=20),
        "money": None,
        "ledger": [],
        "by_model": None,
        "currency": currency(admin),
    }
    if extensions.billing(admin.services) is not None:
        db = admin.services.db
        ctx.update(
            money=billing_view.account(db, key_id, ctx["currency"]),
            ledger=billing_view.ledger_entries(db, key_id),
            by_model=billing_view.usage_by_model(db, key_id),
        )
    return ctx


@router.get("/admin/keys/{key_id}")
async def key_page(request: Request, key_id: str, session: Session = Depends(admin_session)) -> Response:
    ctx = await asyncio.to_thread(key_detail, ui(request), key_id)
    if ctx is None:
        raise Denied(404, f"No key has the id “{key_id}”.")
    secret = None
    if session.secret_once is not None and session.secret_once[0] == key_id:
        secret, session.secret_once = session.secret_once[1], None
    return page(request, "key.html", {**ctx, "secret": secret}, nav="keys")


@router.post("/admin/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: str, session: Session = Depends(checked_session)) -> Response:
    admin = ui(request)
    row = await asyncio.to_thread(admin.queries.key_row, key_id)
    if row is None:
        raise Denied(404, f"No key has the id “{key_id}”.")
    revoked = await asyncio.to_thread(admin.services.keys.revoke, key_id)
    admin.services.auth.forget()  # this node stops accepting it now, not in 5 s
    admin.sessions.end_key(key_id)
    if key_id == session.key_id:
        admin.sessions.end(request.cookies.get(COOKIE))
        raise Redirect("/admin/login")
    name = row["name"] or row["prefix"]
    flash(session, f"Key “{name}” revoked." if revoked else f"Key “{name}” was already revoked.")
    raise Redirect(f"/admin/keys/{key_id}")


@router.post("/admin/keys/{key_id}/webhook")
async def set_webhook(request: Request, key_id: str, session: Session = Depends(checked_session)) -> Response:
    """Set or clear the key's default webhook URL (checked like `PUT /v1/webhook` checks it)."""
    admin = ui(request)
    if await asyncio.to_thread(admin.queries.key_row, key_id) is None:
        raise Denied(404, f"No key has the id “{key_id}”.")
    url = (await form_data(request)).get("webhook_url", "").strip() or None
    if url is not None:
        try:
            url = check_webhook_url(url, admin.services.webhooks.guard, "webhook URL")
        except MediarelayError as exc:
            flash(session, exc.message, "error")
            raise Redirect(f"/admin/keys/{key_id}") from None
    await asyncio.to_thread(admin.services.webhooks.repo.set_key_settings, key_id, url=url)
    flash(session, f"Webhook URL set to {url}." if url else "Webhook URL removed.")
    raise Redirect(f"/admin/keys/{key_id}")


@router.post("/admin/keys/{key_id}/topup")
async def top_up(request: Request, key_id: str, session: Session = Depends(checked_session)) -> Response:
    admin = ui(request)
    if (
        extensions.billing(admin.services) is None
        or await asyncio.to_thread(admin.queries.key_row, key_id) is None
    ):
        raise Denied(404, f"No key has the id “{key_id}”.")
    form = await form_data(request)
    try:
        amount = billing_view.parse_money(form.get("amount", ""), allow_zero=False)
    except ValueError as exc:
        flash(session, f"Not topped up: {exc}", "error")
        raise Redirect(f"/admin/keys/{key_id}") from None
    note = form.get("note", "").strip()[:1000] or None
    entry = await asyncio.to_thread(billing_view.top_up, admin.services.db, key_id, amount, note)
    cur = currency(admin)
    flash(
        session,
        f"Added {billing_view.fmt_amount(amount, cur)}; the balance is now "
        f"{billing_view.fmt_amount(entry.balance_after, cur)}.",
    )
    raise Redirect(f"/admin/keys/{key_id}")


@router.post("/admin/keys/{key_id}/limits")
async def set_limits(request: Request, key_id: str, session: Session = Depends(checked_session)) -> Response:
    admin = ui(request)
    billing = extensions.billing(admin.services)
    if billing is None or await asyncio.to_thread(admin.queries.key_row, key_id) is None:
        raise Denied(404, f"No key has the id “{key_id}”.")
    values, errors = billing_view.parse_limits(await form_data(request))
    if errors:
        flash(session, "Limits not changed: " + " ".join(f"{k}: {v}" for k, v in errors.items()), "error")
        raise Redirect(f"/admin/keys/{key_id}")
    await asyncio.to_thread(billing_view.set_limits, admin.services.db, key_id, values)
    billing.forget(key_id)  # this node applies them now, not when its cache expires
    flash(session, "Limits saved.")
    raise Redirect(f"/admin/keys/{key_id}")


# -- the webhook delivery log ------------------------------------------------------------------


@router.get("/admin/webhooks")
async def deliveries(request: Request, session: Session = Depends(admin_session)) -> Response:
    admin = ui(request)
    qp = request.query_params
    state = qp.get("state") if qp.get("state") in STATES else None
    key_id = qp.get("key") or None
    task_id = qp.get("task", "").strip() or None
    after = qp.get("after") or None
    limit = 50

    def load() -> tuple[list[Any], dict[str, str]]:
        found = admin.services.webhooks.repo.page(
            key_id=key_id, limit=limit + 1, after=after, task_id=task_id, state=state
        )
        return found, admin.queries.key_names()

    found, names = await asyncio.to_thread(load)
    events = found[:limit]
    return page(
        request,
        "webhooks.html",
        {
            "events": events,
            "more": len(found) > limit,
            "names": names,
            "states": STATES,
            "form": {"state": state or "", "key": key_id or "", "task": task_id or ""},
            "pending": PENDING,
        },
        nav="webhooks",
    )


@router.post("/admin/webhooks/{event_id}/retry")
async def redeliver(request: Request, event_id: str, session: Session = Depends(checked_session)) -> Response:
    hooks = ui(request).services.webhooks
    if await asyncio.to_thread(hooks.repo.redeliver, event_id):
        if hooks.dispatcher is not None:
            hooks.dispatcher.wake()
        flash(session, "Delivery queued again.")
    else:
        flash(
            session,
            "That delivery is still pending (it is retried on its schedule) or does not exist.",
            "warn",
        )
    back = (await form_data(request)).get("back", "")
    raise Redirect(back if back.startswith("/admin/") else "/admin/webhooks")
