"""The operator's API (admin keys only; others get 403): keys with their balances and limits, top-ups,
adjustments, ledgers, usage reports and the price table. Amounts are integer micro-units of the
operator's currency (docs/billing.md). Errors use the OpenAI-style envelope.
(No `from __future__ import annotations` here: FastAPI must see the real body model types.)
"""

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mediarelay.api.account import entries_page, json_response, key_json, time_bound
from mediarelay.api.admission import REPLAYED, idempotency_key
from mediarelay.api.errors import refuse_nul
from mediarelay.api.services import Services
from mediarelay.api.webhooks import check_webhook_url
from mediarelay.billing import accounts
from mediarelay.billing.prices import PriceRule, PriceTable
from mediarelay.domain import ErrorKind, MediarelayError, not_found
from mediarelay.store import ledger
from mediarelay.store.keys import ApiKey

router = APIRouter(prefix="/v1/admin", tags=["Admin"], dependencies=[Depends(refuse_nul)])

Amount = Field(ge=1, le=accounts.MAX_AMOUNT)
Limit = Field(default=None, ge=0, le=accounts.MAX_AMOUNT)
Count = Field(default=None, ge=1, le=1_000_000)
LIMIT_FIELDS = ("credit_limit", "daily_cap", "max_concurrent", "rpm")


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def require_admin(request: Request) -> ApiKey:
    key = await _svc(request).auth.require(request.headers.get("authorization"))
    if not key.is_admin:
        raise MediarelayError(ErrorKind.FORBIDDEN, "this endpoint needs an admin key")
    return key


async def target(request: Request, ident: str) -> ApiKey:
    """The key named in the path, by id or printed prefix."""
    await require_admin(request)
    key = await asyncio.to_thread(_svc(request).keys.get, ident)
    if key is None:
        raise not_found("no such key")
    return key


async def key_view(svc: Services, key: ApiKey) -> dict[str, Any]:
    return key_json(svc, key, await asyncio.to_thread(accounts.status, svc.db, key.id))


# -- keys -----------------------------------------------------------------------------------------------


class KeyCreate(BaseModel):
    """A new key. [MR] With a `balance` and no `credit_limit` it is prepaid (credit limit 0); with
    neither it has unlimited credit (postpaid)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    admin: bool = False
    webhook_url: str | None = Field(default=None, description="the key's default webhook URL")
    balance: int = Field(default=0, ge=0, le=accounts.MAX_AMOUNT, description="opening top-up")
    credit_limit: int | None = Field(
        default=None, ge=0, le=accounts.MAX_AMOUNT, description="how far below 0 it may go; null: unlimited"
    )
    daily_cap: int | None = Limit
    max_concurrent: int | None = Count
    rpm: int | None = Count


class KeyUpdate(BaseModel):
    """Change a key's name or limits: a field left out is kept, `null` removes the limit."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    credit_limit: int | None = Limit
    daily_cap: int | None = Limit
    max_concurrent: int | None = Count
    rpm: int | None = Count


@router.post(
    "/keys",
    summary="Create a key with a balance and limits (its secret is shown once)",
    status_code=201,  # what it answers (the document said 200)
)
async def create_key(request: Request, body: KeyCreate) -> Response:
    await require_admin(request)
    svc = _svc(request)
    url = check_webhook_url(body.webhook_url, svc.webhooks.guard, "webhook_url") if body.webhook_url else None
    given = body.model_fields_set
    credit = body.credit_limit if "credit_limit" in given else (0 if body.balance else None)
    limits = ledger.Limits(
        credit_limit=credit, daily_cap=body.daily_cap, max_concurrent=body.max_concurrent, rpm=body.rpm
    )
    key, secret = await asyncio.to_thread(
        lambda: accounts.create_key(
            svc.db, body.name, admin=body.admin, webhook_url=url, balance=body.balance, limits=limits
        )
    )
    return json_response({**await key_view(svc, key), "secret": secret}, status=201)


@router.get("/keys", summary="Every key with its balance and limits")
async def list_keys(request: Request) -> Response:
    await require_admin(request)
    svc = _svc(request)
    keys = await asyncio.to_thread(svc.keys.list)
    found = await asyncio.to_thread(accounts.statuses, svc.db)
    return json_response({"object": "list", "data": [key_json(svc, k, found.get(k.id)) for k in keys]})


@router.get("/keys/{key_id}", summary="One key (by id or printed prefix) with its balance and limits")
async def get_key(request: Request, key_id: str) -> Response:
    return json_response(await key_view(_svc(request), await target(request, key_id)))


@router.patch("/keys/{key_id}", summary="Change a key's name or limits")
async def update_key(request: Request, key_id: str, body: KeyUpdate) -> Response:
    key = await target(request, key_id)
    svc = _svc(request)
    changes = {f: getattr(body, f) for f in LIMIT_FIELDS if f in body.model_fields_set}
    if changes:
        await asyncio.to_thread(lambda: accounts.set_limits(svc.db, key.id, **changes))
        svc.billing.forget(key.id)
    if body.name is not None:
        await asyncio.to_thread(svc.keys.rename, key.id, body.name)
    renamed = await asyncio.to_thread(svc.keys.get, key.id)
    return json_response(await key_view(svc, renamed or key))


@router.delete("/keys/{key_id}", summary="Revoke a key (its ledger stays)")
async def revoke_key(request: Request, key_id: str) -> Response:
    key = await target(request, key_id)
    svc = _svc(request)
    await asyncio.to_thread(svc.keys.revoke, key.id)
    svc.auth.forget()
    revoked = await asyncio.to_thread(svc.keys.get, key.id)
    return json_response(await key_view(svc, revoked or key))


# -- money ----------------------------------------------------------------------------------------------


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Amount
    note: str | None = Field(default=None, max_length=1000)


class Adjustment(BaseModel):
    """A correction of either sign; it may not take the balance below the key's credit limit."""

    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=-accounts.MAX_AMOUNT, le=accounts.MAX_AMOUNT)
    note: str | None = Field(default=None, max_length=1000)


async def _credit(request: Request, key_id: str, amount: int, note: str | None, kind: str) -> Response:
    key = await target(request, key_id)
    reference = idempotency_key(request.headers)
    entry, fresh = await asyncio.to_thread(
        lambda: accounts.credit(_svc(request).db, key.id, amount, kind=kind, note=note, reference=reference)
    )
    return json_response(accounts.entry_json(entry), headers=None if fresh else REPLAYED)


@router.post("/keys/{key_id}/topups", summary="Add credit (idempotent with an Idempotency-Key header)")
async def top_up(request: Request, key_id: str, body: TopUp) -> Response:
    return await _credit(request, key_id, body.amount, body.note, ledger.TOPUP)


@router.post("/keys/{key_id}/adjustments", summary="Correct a balance up or down (idempotent likewise)")
async def adjust(request: Request, key_id: str, body: Adjustment) -> Response:
    if body.amount == 0:
        raise MediarelayError(ErrorKind.INVALID_REQUEST, "amount: must not be 0", param="amount")
    return await _credit(request, key_id, body.amount, body.note, ledger.ADJUST)


@router.get("/keys/{key_id}/ledger", summary="A key's ledger, newest first")
async def key_ledger(
    request: Request,
    key_id: str,
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(None, description="the id of the last entry of the previous page"),
) -> Response:
    key = await target(request, key_id)
    found = await asyncio.to_thread(accounts.entries, _svc(request).db, key.id, limit=limit + 1, after=after)
    return json_response(entries_page(found, limit))


@router.get("/usage", summary="Usage by day, model, channel or key, for one key or all")
async def usage(
    request: Request,
    key_id: str | None = Query(None, description="one key (id or printed prefix); default: every key"),
    group_by: Literal["day", "model", "channel", "key"] = Query("day"),
    from_: str | None = Query(None, alias="from", description="epoch ms or YYYY-MM-DD (UTC), inclusive"),
    to: str | None = Query(None, description="epoch ms (exclusive) or YYYY-MM-DD (inclusive)"),
) -> Response:
    await require_admin(request)
    svc = _svc(request)
    owner = (await target(request, key_id)).id if key_id else None
    report = await asyncio.to_thread(
        lambda: accounts.usage(
            svc.db,
            key_id=owner,
            group_by=group_by,
            start=time_bound(from_, "from"),
            end=time_bound(to, "to", end=True),
        )
    )
    return json_response(report)


# -- prices ---------------------------------------------------------------------------------------------


class PriceTableBody(BaseModel):
    """The whole table: rules in order (the first match wins) and the price of everything else."""

    model_config = ConfigDict(extra="forbid")

    prices: list[PriceRule] = Field(max_length=1000)
    default: PriceRule | None = Field(default=None, description="omitted: the configuration file's")


def table_json(svc: Services, table: PriceTable) -> dict[str, Any]:
    return {
        "object": "price_table",
        "source": table.source,
        "currency": svc.billing.currency or None,
        **table.to_json(),
    }


@router.get("/prices", summary="The price table in force")
async def get_prices(request: Request) -> Response:
    await require_admin(request)
    svc = _svc(request)
    return json_response(table_json(svc, await asyncio.to_thread(svc.billing.table)))


@router.put("/prices", summary="Replace the price table (kept across restarts)")
async def put_prices(request: Request, body: PriceTableBody) -> Response:
    await require_admin(request)
    svc = _svc(request)
    table = await asyncio.to_thread(svc.billing.set_table, body.prices, body.default)
    return json_response(table_json(svc, table))


@router.delete("/prices", summary="Go back to the configuration file's price table")
async def reset_prices(request: Request) -> Response:
    await require_admin(request)
    svc = _svc(request)
    table = await asyncio.to_thread(svc.billing.set_table, None)
    return json_response(table_json(svc, table))
