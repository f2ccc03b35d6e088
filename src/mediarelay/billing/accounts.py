"""Operator actions on keys' money, shared by the admin API and the CLI: create a key with a balance and
limits, top up, adjust, change limits, read an account, its ledger and usage reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mediarelay.domain import ErrorKind, MediarelayError, now_ms
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.keys import ApiKey, KeyRepo
from mediarelay.store.schema import task_charges

MAX_AMOUNT = 10**15  # a sanity bound on a single movement (a billion units of currency)


@dataclass(frozen=True)
class AccountStatus:
    """An account as its owner sees it: balance, spend, limits and how much of them is in use."""

    account: ledger.Account
    active_tasks: int
    spent_today: int

    def to_json(self) -> dict[str, Any]:
        a, lim = self.account, self.account.limits
        return {
            "balance": a.balance,
            "used": a.used,
            "credit_limit": lim.credit_limit,
            "daily_cap": lim.daily_cap,
            "spent_today": self.spent_today,
            "max_concurrent": lim.max_concurrent,
            "active_tasks": self.active_tasks,
            "rpm": lim.rpm,
        }


def day_start(now: int) -> int:
    return now - now % ledger.DAY_MS


def status(db: Database, key_id: str) -> AccountStatus:
    now = now_ms()
    with db.read() as conn:
        found = ledger.get_account(conn, key_id) is not None
    if not found:  # a key made by an older version while this one ran: its (unlimited) account now
        with db.write() as conn:
            ledger.ensure_account(conn, key_id, now)
    with db.read() as conn:
        account = ledger.get_account(conn, key_id)
        assert account is not None
        return AccountStatus(
            account=account,
            active_tasks=ledger.active_count(conn, key_id),
            spent_today=ledger.spent_since(conn, key_id, day_start(now)),
        )


def statuses(db: Database) -> dict[str, AccountStatus]:
    """Every key's status in three queries (the admin key list)."""
    since = day_start(now_ms())
    with db.read() as conn:
        found = {a: ledger.get_account(conn, a) for a in ledger.keys_with_books(conn)}
        active: dict[str, int] = dict(
            conn.execute(
                select(task_charges.c.key_id, func.count())
                .where(task_charges.c.state == ledger.OPEN)
                .group_by(task_charges.c.key_id)
            ).all()
        )
        today: dict[str, int] = dict(
            conn.execute(
                select(task_charges.c.key_id, func.sum(task_charges.c.amount))
                .where(task_charges.c.created_at >= since)
                .group_by(task_charges.c.key_id)
            ).all()
        )
    return {
        k: AccountStatus(account=a, active_tasks=int(active.get(k, 0)), spent_today=int(today.get(k) or 0))
        for k, a in found.items()
        if a is not None
    }


def create_key(
    db: Database,
    name: str,
    *,
    admin: bool = False,
    webhook_url: str | None = None,
    balance: int = 0,
    limits: ledger.Limits | None = None,
) -> tuple[ApiKey, str]:
    """[MR] A key made with a balance and no credit limit is prepaid (credit limit 0); a key made with
    neither has unlimited credit, as every key had before billing."""
    if limits is None:
        limits = ledger.Limits(credit_limit=0 if balance else None)
    return KeyRepo(db).create(name, is_admin=admin, webhook_url=webhook_url, limits=limits, balance=balance)


def credit(
    db: Database,
    key_id: str,
    amount: int,
    *,
    kind: str = ledger.TOPUP,
    note: str | None = None,
    reference: str | None = None,
) -> tuple[ledger.Entry, bool]:
    """A top-up (positive) or an adjustment (either sign; may not take the balance below the credit
    limit). A `reference` (the request's Idempotency-Key) makes it happen once: a repeat returns the
    first entry and False, the same reference with another amount is a conflict."""
    if kind not in (ledger.TOPUP, ledger.ADJUST) or not amount or abs(amount) > MAX_AMOUNT:
        raise MediarelayError(ErrorKind.INVALID_REQUEST, "amount: out of range", param="amount")
    if kind == ledger.TOPUP and amount < 0:
        raise MediarelayError(ErrorKind.INVALID_REQUEST, "amount: a top-up is positive", param="amount")
    try:
        with db.write() as conn:
            if reference is not None and (done := _replayed(conn, key_id, reference, kind, amount)):
                return done, False
            ledger.ensure_account(conn, key_id, now_ms())
            entry = ledger.move(
                conn, key_id, amount, kind, now_ms(), reference=reference, note=note, guard=True
            )
            if entry is None:
                raise MediarelayError(
                    ErrorKind.CONFLICT, "this adjustment would take the balance below the key's credit limit"
                )
            return entry, True
    except IntegrityError:
        if reference is None:
            raise
        with db.read() as conn:  # the same reference raced in from elsewhere: that one counts
            done = _replayed(conn, key_id, reference, kind, amount)
        if done is None:
            raise
        return done, False


def _replayed(conn: Any, key_id: str, reference: str, kind: str, amount: int) -> ledger.Entry | None:
    entry = ledger.by_reference(conn, key_id, reference)
    if entry is not None and (entry.kind != kind or entry.amount != amount):
        raise MediarelayError(
            ErrorKind.CONFLICT,
            "this Idempotency-Key was already used with a different request",
            param="Idempotency-Key",
        )
    return entry


def set_limits(db: Database, key_id: str, **changes: Any) -> AccountStatus:
    with db.write() as conn:
        ledger.set_limits(conn, key_id, now_ms(), **changes)
    return status(db, key_id)


def entries(db: Database, key_id: str, *, limit: int, after: int | None = None) -> list[ledger.Entry]:
    with db.read() as conn:
        return ledger.entries(conn, key_id, limit=limit, before_id=after)


def usage(
    db: Database, *, key_id: str | None, group_by: str, start: int | None = None, end: int | None = None
) -> dict[str, Any]:
    """A usage report: rows per group plus their total (see `store.ledger.usage`)."""
    with db.read() as conn:
        rows = ledger.usage(conn, key_id=key_id, group_by=group_by, start=start, end=end)
    for row in rows:
        if group_by == "day":
            row["group"] = datetime.fromtimestamp(int(row["group"]) * 86_400, UTC).date().isoformat()
    fields = ("tasks", "active", "refunded_tasks", "charged", "refunded", "spend")
    total = {f: sum(int(r[f]) for r in rows) for f in fields}
    return {"object": "usage", "group_by": group_by, "key_id": key_id, "data": rows, "total": total}


def entry_json(entry: ledger.Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "ledger_entry",
        "key_id": entry.key_id,
        "task_id": entry.task_id,
        "public_id": entry.public_id,
        "kind": entry.kind,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "reference": entry.reference,
        "note": entry.note,
        "created_at": entry.created_at,
    }


def parse_amount(text: str) -> int:
    """A decimal currency amount typed by a person ("12.5") as micro-units, exactly (no floats)."""
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None
    micro = value * 1_000_000
    if not value.is_finite() or micro != micro.to_integral_value():
        raise ValueError(f"not an amount with at most 6 decimals: {text!r}")
    if abs(micro) > MAX_AMOUNT:
        raise ValueError(f"more than {MAX_AMOUNT // 1_000_000} units: {text!r}")
    return int(micro)
