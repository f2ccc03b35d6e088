"""Balances, limits, ledgers and spend on the admin pages, through `billing.accounts`: the same operator
actions the admin API (`/v1/admin/keys…`) and the CLI use, so the three never disagree.

Amounts are integer micro-units of the configured currency (docs/billing.md); people type and read them
as decimals ("12.5").
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from mediarelay.billing import accounts
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.schema import task_charges

LIMIT_FIELDS = ("credit_limit", "daily_cap", "max_concurrent", "rpm")
MONEY_LIMITS = ("credit_limit", "daily_cap")
COUNT_MAX = 1_000_000


def fmt_amount(micro: int | None, currency: str = "") -> str:
    """Micro-units for people: two decimals unless the amount needs more ("12.50", "0.000125")."""
    if micro is None:
        return "–"
    value = Decimal(micro) / Decimal(1_000_000)
    text = f"{value:,.2f}" if value == value.quantize(Decimal("0.01")) else f"{value:,.6f}".rstrip("0")
    return f"{text} {currency}".strip()


@dataclass(frozen=True)
class AccountView:
    """A key's money as its pages show it (already formatted)."""

    balance: str
    balance_micro: int
    used: str
    spent_today: str
    active: int
    credit_limit: str
    daily_cap: str
    max_concurrent: str
    rpm: str
    prepaid: bool
    raw: ledger.Limits

    def stats(self) -> list[tuple[str, str]]:
        return [
            ("Balance", self.balance),
            ("Spent today", self.spent_today),
            ("Credit limit", self.credit_limit),
            ("Daily cap", self.daily_cap),
        ]


def view(status: accounts.AccountStatus, currency: str) -> AccountView:
    a, lim = status.account, status.account.limits

    def money(v: int | None, none: str = "none") -> str:
        return none if v is None else fmt_amount(v, currency)

    return AccountView(
        balance=fmt_amount(a.balance, currency),
        balance_micro=a.balance,
        used=fmt_amount(a.used, currency),
        spent_today=fmt_amount(status.spent_today, currency),
        active=status.active_tasks,
        credit_limit=money(lim.credit_limit, "unlimited"),
        daily_cap=money(lim.daily_cap),
        max_concurrent="none" if lim.max_concurrent is None else str(lim.max_concurrent),
        rpm="none" if lim.rpm is None else str(lim.rpm),
        prepaid=lim.credit_limit == 0,
        raw=lim,
    )


def all_accounts(db: Database, currency: str) -> dict[str, AccountView]:
    return {k: view(s, currency) for k, s in accounts.statuses(db).items()}


def account(db: Database, key_id: str, currency: str) -> AccountView:
    return view(accounts.status(db, key_id), currency)


def ledger_entries(db: Database, key_id: str, limit: int = 20) -> list[ledger.Entry]:
    return accounts.entries(db, key_id, limit=limit)


def usage_by_model(db: Database, key_id: str) -> dict[str, Any]:
    return accounts.usage(db, key_id=key_id, group_by="model")


def spend_buckets(db: Database, start: int, bucket_ms: int) -> list[tuple[int, int]]:
    """(bucket index, net amount charged) of tasks submitted since `start` (what `usage` calls spend)."""
    bucket = ((task_charges.c.created_at - start) // bucket_ms).label("b")
    query = (
        select(bucket, func.sum(task_charges.c.amount))
        .where(task_charges.c.created_at >= start)
        .group_by(bucket)
    )
    with db.read() as conn:
        return [(int(b), int(total or 0)) for b, total in conn.execute(query).all()]


# -- forms --------------------------------------------------------------------------------------


def parse_money(text: str, *, allow_zero: bool = True) -> int:
    """A typed decimal amount as micro-units; raises ValueError with a message for people."""
    try:
        value = accounts.parse_amount(text)
    except ValueError:
        raise ValueError("An amount like 12.50 (at most 6 decimals).") from None
    if value < 0 or (value == 0 and not allow_zero) or value > accounts.MAX_AMOUNT:
        raise ValueError("A positive amount." if not allow_zero else "Zero or a positive amount.")
    return value


def parse_limits(form: dict[str, str]) -> tuple[dict[str, int | None], dict[str, str]]:
    """The limit fields that were filled in (empty = no limit); returns (values, errors by field)."""
    values: dict[str, int | None] = {}
    errors: dict[str, str] = {}
    for name in LIMIT_FIELDS:
        text = form.get(name, "").strip()
        if not text:
            values[name] = None
            continue
        try:
            if name in MONEY_LIMITS:
                values[name] = parse_money(text)
            else:
                count = int(text)
                if not 1 <= count <= COUNT_MAX:
                    raise ValueError
                values[name] = count
        except ValueError as exc:
            values[name] = None
            errors[name] = str(exc) if name in MONEY_LIMITS else f"A whole number from 1 to {COUNT_MAX}."
    return values, errors


def parse_new_key(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Balance and limits of the create form. [MR] as in the admin API: with a balance and no credit
    limit the key is prepaid (credit limit 0); with neither it has unlimited credit."""
    errors: dict[str, str] = {}
    balance = 0
    if text := form.get("balance", "").strip():
        try:
            balance = parse_money(text)
        except ValueError as exc:
            errors["balance"] = str(exc)
    limits, limit_errors = parse_limits(form)
    errors.update(limit_errors)
    if limits["credit_limit"] is None and balance:
        limits["credit_limit"] = 0
    return {"balance": balance, "limits": ledger.Limits(**limits)}, errors


def create_key(
    db: Database, name: str, *, admin: bool, webhook_url: str | None, money: dict[str, Any]
) -> Any:
    return accounts.create_key(
        db, name, admin=admin, webhook_url=webhook_url, balance=money["balance"], limits=money["limits"]
    )


def top_up(db: Database, key_id: str, amount: int, note: str | None) -> ledger.Entry:
    entry, _ = accounts.credit(db, key_id, amount, kind=ledger.TOPUP, note=note)
    return entry


def set_limits(db: Database, key_id: str, changes: dict[str, int | None]) -> None:
    accounts.set_limits(db, key_id, **changes)
