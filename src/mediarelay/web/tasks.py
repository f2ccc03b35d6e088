"""Tasks: the filtered list (live), one task's page (live), cancel and retry."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from mediarelay.api.services import Services
from mediarelay.dialects import DIALECTS
from mediarelay.domain import MediarelayError, Status, Task, TaskSpec, now_ms
from mediarelay.store.tasks import Idempotency
from mediarelay.web.common import (
    AdminRoute,
    Denied,
    Redirect,
    admin_session,
    checked_session,
    flash,
    page,
    ui,
)
from mediarelay.web.queries import TaskFilter, TaskRow
from mediarelay.web.session import Session

router = APIRouter(route_class=AdminRoute, include_in_schema=False)

PAGE_SIZE = 50
MAIN_ROLES = ("video", "image")
# The params a retry carries over from the original: they came from headers, not from the body.
CARRIED_PARAMS = ("sandbox", "webhook_url")


# -- the list -----------------------------------------------------------------------------------


def parse_time(value: str) -> int | None:
    """`YYYY-MM-DDTHH:MM` (a datetime-local input, read as UTC) or epoch milliseconds."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        if len(value) > 15:  # beyond year 33000: not a time, and too big for a BIGINT
            raise ValueError(value)
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", ""))
    return int(parsed.replace(tzinfo=UTC).timestamp() * 1000)


def read_filter(request: Request) -> tuple[TaskFilter, dict[str, Any], list[str]]:
    """The filter from the query string, the values to put back in the form, and any complaints."""
    qp = request.query_params
    errors = []
    statuses = tuple(s for s in qp.getlist("status") if s in Status.__members__.values())
    times: dict[str, int | None] = {}
    for name in ("from", "to"):
        try:
            times[name] = parse_time(qp.get(name, ""))
        except ValueError:
            errors.append(f"“{qp.get(name)}” is not a date and time; that filter is ignored.")
            times[name] = None
    flt = TaskFilter(
        statuses=statuses,
        dialect=qp.get("dialect") or None,
        model=(qp.get("model") or "").strip() or None,
        channel=qp.get("channel") or None,
        key_id=qp.get("key") or None,
        created_after=times["from"],
        created_before=times["to"],
    )
    form = {
        "status": statuses,
        "dialect": flt.dialect or "",
        "model": flt.model or "",
        "channel": flt.channel or "",
        "key": flt.key_id or "",
        "from": qp.get("from", "") if times["from"] is not None else "",
        "to": qp.get("to", "") if times["to"] is not None else "",
    }
    return flt, form, errors


def filter_query(form: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = [("status", s) for s in form["status"]]
    pairs += [(k, form[k]) for k in ("dialect", "model", "channel", "key", "from", "to") if form[k]]
    return urlencode(pairs)


def signature(rows: list[TaskRow]) -> str:
    """Changes when any shown row changes: the live list skips the swap (204) when it is the same."""
    digest = hashlib.blake2b(digest_size=8)
    for r in rows:
        digest.update(f"{r.id}:{r.status}:{r.progress}:{r.channel};".encode())
    return digest.hexdigest()


def _rows(request: Request, flt: TaskFilter, before: int | None) -> tuple[list[TaskRow], bool]:
    rows = ui(request).queries.task_rows(flt, limit=PAGE_SIZE + 1, before_seq=before)
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


@router.get("/admin/tasks")
async def task_list(request: Request, session: Session = Depends(admin_session)) -> Response:
    admin = ui(request)
    qp = request.query_params
    notice = ""
    if ident := qp.get("q", "").strip():
        found = await asyncio.to_thread(admin.queries.find_task_id, ident)
        if found:
            raise Redirect(f"/admin/tasks/{found}")
        notice = f"No task has the id “{ident}”."
    flt, form, errors = read_filter(request)
    before_text = qp.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) <= 18 else None
    rows, more = await asyncio.to_thread(_rows, request, flt, before)
    models, seen_channels, keys = await asyncio.to_thread(
        lambda: (
            admin.queries.distinct("model"),
            admin.queries.distinct("channel"),
            admin.services.keys.list(),
        )
    )
    channels = sorted(set(admin.services.channels.channels) | set(seen_channels))
    query = filter_query(form)
    return page(
        request,
        "tasks.html",
        {
            "rows": rows,
            "more": more,
            "before": before,
            "next_before": rows[-1].seq if rows and more else None,
            "form": form,
            "query": query,
            "sig": signature(rows),
            "errors": errors,
            "notice": notice,
            "search": ident,
            "statuses": [s.value for s in Status],
            "dialects": [d.name for d in DIALECTS],
            "models": models,
            "channels": channels,
            "keys": keys,
        },
        nav="tasks",
    )


@router.get("/admin/tasks/rows")
async def task_rows(request: Request, session: Session = Depends(admin_session)) -> Response:
    """The live list's body; 204 (nothing to swap) while it is unchanged."""
    flt, form, _ = read_filter(request)
    rows, _ = await asyncio.to_thread(_rows, request, flt, None)
    sig = signature(rows)
    if sig == request.query_params.get("sig"):
        return Response(status_code=204)
    return page(
        request, "_task_rows.html", {"rows": rows, "query": filter_query(form), "sig": sig}, partial=True
    )


# -- one task -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preview:
    """One result with what was derived from it, as the page shows it."""

    index: int
    main: Any
    poster: Any | None
    thumbnail: Any | None
    spritesheet: Any | None


def previews(task: Task) -> list[Preview]:
    out = []
    for role in MAIN_ROLES:
        for a in task.assets_with(role):

            def derived(r: str, i: int = a.index) -> Any | None:
                return next((x for x in task.assets_with(r) if x.index == i), None)

            out.append(Preview(a.index, a, derived("poster"), derived("thumbnail"), derived("spritesheet")))
    return out


async def load_task(request: Request, ident: str) -> Task:
    admin = ui(request)
    task_id = await asyncio.to_thread(admin.queries.find_task_id, ident)
    task = await asyncio.to_thread(admin.services.tasks.get, task_id) if task_id else None
    if task is None:
        raise Denied(404, f"No task has the id “{ident}”.")
    return task


def live_context(svc: Services, task: Task) -> dict[str, Any]:
    """What changes while a task runs (the part of its page that is polled)."""
    children = svc.tasks.children(task.id) if task.params.get("fanout") else []
    events = svc.tasks.events(task.id)
    start = task.created_at
    timeline = [{**e, "offset": e["at"] - start} for e in events]
    return {
        "task": task,
        "stamp": f"{task.version}." + ".".join(str(c.version) for c in children),
        "children": children,
        "timeline": timeline,
        "previews": previews(task),
        "files": sorted(task.assets, key=lambda a: (a.index, a.role)),
        "active": not task.status.terminal or any(not c.status.terminal for c in children),
        "retryable": task.parent_id is None and task.status in (Status.FAILED, Status.CANCELED),
        "duration": (task.finished_at - task.created_at) if task.finished_at else None,
    }


def full_context(admin: Any, task: Task) -> dict[str, Any]:
    svc: Services = admin.services
    ctx = live_context(svc, task)
    children = tuple(ctx["children"])
    ctx.update(
        key=admin.queries.key_row(task.key_id),
        parent=svc.tasks.get(task.parent_id) if task.parent_id else None,
        retries=admin.queries.retries_of(task),
        retry_of=task.params.get("retry_of"),
        client_view=svc.views.render(task, children).body.decode(),
        deliveries=svc.webhooks.repo.page(key_id=None, limit=20, task_id=task.id),
    )
    return ctx


@router.get("/admin/tasks/{ident}")
async def task_page(request: Request, ident: str, session: Session = Depends(admin_session)) -> Response:
    task = await load_task(request, ident)
    ctx = await asyncio.to_thread(full_context, ui(request), task)
    return page(request, "task.html", ctx, nav="tasks")


@router.get("/admin/tasks/{ident}/live")
async def task_live(request: Request, ident: str, session: Session = Depends(admin_session)) -> Response:
    """The polled part of a task page; 204 (nothing to swap) while the task has not changed."""
    task = await load_task(request, ident)
    svc = ui(request).services
    ctx = await asyncio.to_thread(live_context, svc, task)
    if ctx["stamp"] == request.query_params.get("v"):
        return Response(status_code=204)
    # A status change is announced to screen readers through a live region that stays on the page.
    announce = task.status.value != request.query_params.get("s")
    return page(request, "_task_live.html", {**ctx, "announce": announce}, partial=True)


@router.post("/admin/tasks/{ident}/cancel")
async def cancel(request: Request, ident: str, session: Session = Depends(checked_session)) -> Response:
    task = await load_task(request, ident)
    if task.status.terminal and not task.params.get("fanout"):
        flash(session, f"The task had already {task.status.value}: nothing to cancel.", "warn")
    else:
        done = await ui(request).services.engine.cancel(task)
        flash(session, f"Task {done.status.value}.")
    raise Redirect(f"/admin/tasks/{task.id}")


def retry_spec(task: Task) -> TaskSpec:
    """The task's original request parsed again by its dialect: a new task (new ids) linked to the old
    one by `params.retry_of`; header-given controls (sandbox, webhook URL) are carried over."""
    dialect = next((d for d in DIALECTS if d.name == task.dialect), None)
    if dialect is None:
        raise Denied(409, f"This build has no dialect {task.dialect!r} to re-parse the request with.")
    try:
        spec = dialect.parse(dialect.submit_model.model_validate(task.request))
    except (ValidationError, MediarelayError, ValueError) as exc:
        raise Denied(
            409, f"This task cannot be retried from here: its request does not parse ({exc})."
        ) from None
    if (spec.model, spec.operation) != (task.model, task.operation):
        raise Denied(
            409, "This task was not made by a plain submit (a remix?): re-submit it through the API."
        )
    carried = {k: task.params[k] for k in CARRIED_PARAMS if k in task.params}

    def link(s: TaskSpec, top: bool) -> TaskSpec:
        params = {**carried, **s.params}
        if top:
            params["retry_of"] = task.id
        return dataclasses.replace(s, params=params)

    return dataclasses.replace(link(spec, True), children=tuple(link(c, False) for c in spec.children))


@router.post("/admin/tasks/{ident}/retry")
async def retry(request: Request, ident: str, session: Session = Depends(checked_session)) -> Response:
    task = await load_task(request, ident)
    if task.parent_id is not None:
        raise Denied(409, "A batch item is retried with its batch: retry the parent task.")
    if not task.status.terminal:
        flash(session, "The task is still running: cancel it first to retry.", "warn")
        raise Redirect(f"/admin/tasks/{task.id}")
    spec = retry_spec(task)
    # A second click (or a second operator) gets the first retry back instead of a second new task.
    once = Idempotency(key=f"mediarelay-admin-retry:{task.id}", fingerprint=task.id)
    started = now_ms()
    try:
        new = await ui(request).services.engine.submit(spec, task.key_id, idempotency=once)
    except MediarelayError as exc:  # the owner's balance or limits refuse it, like any submit
        flash(session, f"Not retried: {exc.message}", "error")
        raise Redirect(f"/admin/tasks/{task.id}") from None
    if new.created_at < started:
        flash(
            session,
            "This task had already been retried: here is that retry (retry it, if it failed too).",
            "warn",
        )
    else:
        flash(session, f"Retried as a new task, {new.id}, for the same key.")
    raise Redirect(f"/admin/tasks/{new.id}")
