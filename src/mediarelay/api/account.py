"""A key's own money: `GET /v1/account` (balance, spend, limits), its usage report and its ledger.

Amounts are integers in micro-units of the operator's currency (docs/billing.md). Errors use the
OpenAI-style envelope. (No `from __future__ import annotations` here: FastAPI must see the real types.)
"""

import asyncio
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from mediarelay.api.errors import refuse_nul
from mediarelay.api.services import Services
from mediarelay.billing import accounts
from mediarelay.domain import invalid
from mediarelay.store.keys import ApiKey

router = APIRouter(tags=["Account"], dependencies=[Depends(refuse_nul)])

GroupBy = Literal["day", "model", "channel"]


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def caller(request: Request) -> ApiKey:
    return await _svc(request).auth.require(request.headers.get("authorization"))


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def key_json(svc: Services, key: ApiKey, status: accounts.AccountStatus | None) -> dict[str, Any]:
    """A key with its account: what `/v1/account` and the admin key endpoints show."""
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "prefix": key.prefix,
        "admin": key.is_admin,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "currency": svc.billing.currency or None,
        **(status.to_json() if status else {}),
    }


def time_bound(value: str | None, param: str, *, end: bool = False) -> int | None:
    """Epoch milliseconds, or a UTC date `YYYY-MM-DD` (a `to` date includes that whole day)."""
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid(f"{param}: epoch milliseconds or a date YYYY-MM-DD", param) from None
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return start + 86_400_000 if end else start


def entries_page(entries: list[Any], limit: int) -> dict[str, Any]:
    page = entries[:limit]
    return {
        "object": "list",
        "data": [accounts.entry_json(e) for e in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": len(entries) > limit,
    }


@router.get("/v1/account", summary="The caller's balance, spend and limits")
async def get_account(request: Request) -> Response:
    key = await caller(request)
    svc = _svc(request)
    status = await asyncio.to_thread(accounts.status, svc.db, key.id)
    return json_response({**key_json(svc, key, status), "object": "account"})


@router.get("/v1/account/usage", summary="The caller's usage by day, model or channel")
async def get_usage(
    request: Request,
    group_by: GroupBy = Query("day"),
    from_: str | None = Query(None, alias="from", description="epoch ms or YYYY-MM-DD (UTC), inclusive"),
    to: str | None = Query(None, description="epoch ms (exclusive) or YYYY-MM-DD (inclusive)"),
) -> Response:
    key = await caller(request)
    report = await asyncio.to_thread(
        lambda: accounts.usage(
            _svc(request).db,
            key_id=key.id,
            group_by=group_by,
            start=time_bound(from_, "from"),
            end=time_bound(to, "to", end=True),
        )
    )
    return json_response(report)


@router.get("/v1/account/ledger", summary="The caller's ledger, newest first")
async def get_ledger(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    after: int | None = Query(None, description="the id of the last entry of the previous page"),
) -> Response:
    key = await caller(request)
    found = await asyncio.to_thread(accounts.entries, _svc(request).db, key.id, limit=limit + 1, after=after)
    return json_response(entries_page(found, limit))
