"""Money on the database: accounts, the append-only ledger, task charges, idempotency keys, reports.

Every function takes the caller's connection, so a balance moves in the same transaction as the change
that causes it (a task insert, a status change, a top-up). Balances change by SQL arithmetic with a guard
in the UPDATE's WHERE clause, never by read-modify-write in Python: that stays exact with several
processes (the CLI tops up while the server charges) and several API nodes on PostgreSQL.
Amounts are integers: micro-units of the operator's currency (docs/billing.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mediarelay.store.schema import accounts, billing_prices, idempotency_keys, ledger, task_charges

TOPUP, CHARGE, REFUND, SETTLE, ADJUST = "topup", "charge", "refund", "settle", "adjust"
KINDS = (TOPUP, CHARGE, REFUND, SETTLE, ADJUST)
OPEN, SETTLED, REFUNDED = "open", "settled", "refunded"
DAY_MS = 86_400_000
UNSET: Any = object()  # "leave this limit as it is" in `set_limits`


@dataclass(frozen=True)
class Limits:
    """A key's limits; None = no limit. `credit_limit` None = unlimited credit (postpaid)."""

    credit_limit: int | None = None
    daily_cap: int | None = None
    max_concurrent: int | None = None
    rpm: int | None = None


@dataclass(frozen=True)
class Account:
    key_id: str
    balance: int
    used: int
    limits: Limits
    updated_at: int


@dataclass(frozen=True)
class Entry:
    id: int
    key_id: str
    task_id: str | None
    kind: str
    amount: int
    balance_after: int
    reference: str | None
    note: str | None
    created_at: int
    public_id: str | None = None  # the task's id in its dialect (when read with `entries`)


@dataclass(frozen=True)
class Charge:
    """One task's billing state."""

    task_id: str
    public_id: str
    key_id: str
    model: str
    operation: str
    channel: str | None
    price: dict[str, Any]
    estimate: int
    amount: int
    state: str
    created_at: int
    finished_at: int | None


def _account(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        key_id=m["key_id"],
        balance=int(m["balance"]),
        used=int(m["used"]),
        limits=Limits(
            credit_limit=m["credit_limit"],
            daily_cap=m["daily_cap"],
            max_concurrent=m["max_concurrent"],
            rpm=m["rpm"],
        ),
        updated_at=m["updated_at"],
    )


def _entry(row: Row[Any]) -> Entry:
    m = row._mapping
    values: dict[str, Any] = {f: m.get(f) for f in Entry.__dataclass_fields__}
    return Entry(**values)


def _charge(row: Row[Any]) -> Charge:
    m = row._mapping
    return Charge(**{f: m[f] for f in Charge.__dataclass_fields__})


# -- accounts -----------------------------------------------------------------------------------------


def open_account(conn: Connection, key_id: str, limits: Limits, now: int) -> None:
    conn.execute(
        insert(accounts).values(
            key_id=key_id,
            balance=0,
            used=0,
            credit_limit=limits.credit_limit,
            daily_cap=limits.daily_cap,
            max_concurrent=limits.max_concurrent,
            rpm=limits.rpm,
            updated_at=now,
        )
    )


def ensure_account(conn: Connection, key_id: str, now: int) -> None:
    """An account for a key that has none yet (made by an older version): unlimited credit, no limits."""
    values = {"key_id": key_id, "balance": 0, "used": 0, "updated_at": now}
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(accounts).values(**values).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(accounts).values(**values).on_conflict_do_nothing())
    elif get_account(conn, key_id) is None:
        conn.execute(insert(accounts).values(**values))


# Prebuilt: every submit reads its account (building the statement cost more than running it).
_ACCOUNT = select(accounts).where(accounts.c.key_id == bindparam("key_id"))
_ACCOUNT_LOCKED = _ACCOUNT.with_for_update()


def get_account(conn: Connection, key_id: str, *, lock: bool = False) -> Account | None:
    """The account; `lock` holds its row until the transaction ends (PostgreSQL; SQLite has one writer)."""
    row = conn.execute(_ACCOUNT_LOCKED if lock else _ACCOUNT, {"key_id": key_id}).first()
    return _account(row) if row else None


def set_limits(
    conn: Connection,
    key_id: str,
    now: int,
    *,
    credit_limit: int | None = UNSET,
    daily_cap: int | None = UNSET,
    max_concurrent: int | None = UNSET,
    rpm: int | None = UNSET,
) -> bool:
    given = {
        "credit_limit": credit_limit,
        "daily_cap": daily_cap,
        "max_concurrent": max_concurrent,
        "rpm": rpm,
    }
    values = {k: v for k, v in given.items() if v is not UNSET}
    ensure_account(conn, key_id, now)
    result = conn.execute(
        update(accounts).where(accounts.c.key_id == key_id).values(**values, updated_at=now)
    )
    return bool(result.rowcount)


# Prebuilt: every charged submit moves money (building the statements cost more than running them).
_MOVE = (
    update(accounts)
    .where(accounts.c.key_id == bindparam("m_key_id"))
    .values(
        balance=accounts.c.balance + bindparam("m_amount"),
        used=accounts.c.used + bindparam("m_used"),
        updated_at=bindparam("m_now"),
    )
    .returning(accounts.c.balance)
)
_MOVE_GUARDED = _MOVE.where(
    or_(
        accounts.c.credit_limit.is_(None),
        accounts.c.balance + bindparam("m_amount") >= -accounts.c.credit_limit,
    )
)
_INSERT_ENTRY = insert(ledger).returning(ledger.c.id)


def move(
    conn: Connection,
    key_id: str,
    amount: int,
    kind: str,
    now: int,
    *,
    used: int = 0,
    task_id: str | None = None,
    reference: str | None = None,
    note: str | None = None,
    guard: bool = False,
) -> Entry | None:
    """Add `amount` (signed) to the balance and `used` to the spend, and append the ledger entry, as one
    step of the caller's transaction. With `guard`, refuse (None, nothing written) when the balance would
    end below the key's credit limit."""
    assert kind in KINDS
    row = conn.execute(
        _MOVE_GUARDED if guard and amount < 0 else _MOVE,
        {"m_key_id": key_id, "m_amount": amount, "m_used": used, "m_now": now},
    ).first()
    if row is None:
        return None
    values = {
        "key_id": key_id,
        "task_id": task_id,
        "kind": kind,
        "amount": amount,
        "balance_after": int(row[0]),
        "reference": reference,
        "note": note,
        "created_at": now,
    }
    entry_id = conn.execute(_INSERT_ENTRY, values).scalar_one()
    return Entry(id=int(entry_id), **values)  # type: ignore[arg-type]


def by_reference(conn: Connection, key_id: str, reference: str) -> Entry | None:
    row = conn.execute(
        select(ledger).where(ledger.c.key_id == key_id, ledger.c.reference == reference)
    ).first()
    return _entry(row) if row else None


def entries(conn: Connection, key_id: str, *, limit: int, before_id: int | None = None) -> list[Entry]:
    """A key's ledger, newest first; `before_id` is the cursor (the last id already seen)."""
    query = (
        select(ledger, task_charges.c.public_id)
        .select_from(ledger.outerjoin(task_charges, task_charges.c.task_id == ledger.c.task_id))
        .where(ledger.c.key_id == key_id)
    )
    if before_id is not None:
        query = query.where(ledger.c.id < before_id)
    rows = conn.execute(query.order_by(ledger.c.id.desc()).limit(limit)).all()
    return [_entry(r) for r in rows]


# -- task charges -------------------------------------------------------------------------------------


def spent_since(conn: Connection, key_id: str, since: int) -> int:
    """Net spend of the key's tasks submitted at or after `since` (refunds and settlements included)."""
    value = conn.execute(
        select(func.coalesce(func.sum(task_charges.c.amount), 0)).where(
            task_charges.c.key_id == key_id, task_charges.c.created_at >= since
        )
    ).scalar()
    return int(value or 0)


def active_count(conn: Connection, key_id: str) -> int:
    value = conn.execute(
        select(func.count())
        .select_from(task_charges)
        .where(task_charges.c.key_id == key_id, task_charges.c.state == OPEN)
    ).scalar()
    return int(value or 0)


_INSERT_CHARGE = insert(task_charges)


def open_charge(
    conn: Connection,
    *,
    task_id: str,
    public_id: str,
    key_id: str,
    dialect: str,
    model: str,
    operation: str,
    price: dict[str, Any],
    estimate: int,
    now: int,
) -> bool:
    """Record the task's charge and pre-deduct its estimate, guarded by the key's credit limit (False:
    refused, the caller rolls back). A free task gets its row but no ledger entry."""
    conn.execute(
        _INSERT_CHARGE,  # prebuilt: compiled once (every submit runs this)
        {
            "task_id": task_id,
            "public_id": public_id,
            "key_id": key_id,
            "dialect": dialect,
            "model": model,
            "operation": operation,
            "price": price,
            "estimate": estimate,
            "amount": estimate,
            "state": OPEN,
            "created_at": now,
        },
    )
    if not estimate:
        return True
    entry = move(conn, key_id, -estimate, CHARGE, now, used=estimate, task_id=task_id, guard=True)
    return entry is not None


def get_charge(conn: Connection, task_id: str) -> Charge | None:
    row = conn.execute(select(task_charges).where(task_charges.c.task_id == task_id)).first()
    return _charge(row) if row else None


def close_charge(
    conn: Connection, task_id: str, now: int, *, final: int | None, channel: str | None
) -> Charge | None:
    """Close the task's open charge: `final=None` refunds it all (failed, canceled, deleted); otherwise
    it settles at `final`, never above what was pre-deducted (the difference goes back). A charge that
    is not open (already closed, or a task from before billing) is left alone: returns None."""
    found = conn.execute(
        select(task_charges).where(task_charges.c.task_id == task_id, task_charges.c.state == OPEN)
    ).first()
    if found is None:
        return None
    charge = _charge(found)
    amount = 0 if final is None else max(0, min(final, charge.amount))
    state = REFUNDED if final is None else SETTLED
    closed = conn.execute(
        update(task_charges)
        .where(task_charges.c.task_id == task_id, task_charges.c.state == OPEN)
        .values(state=state, amount=amount, channel=channel, finished_at=now)
    )
    if closed.rowcount != 1:  # someone closed it first (a second node): nothing more to do
        return None
    back = charge.amount - amount
    if back:
        move(conn, charge.key_id, back, REFUND if final is None else SETTLE, now, used=-back, task_id=task_id)
    return get_charge(conn, task_id)


# -- idempotency keys ---------------------------------------------------------------------------------


def find_idempotent(conn: Connection, key_id: str, idem_key: str, since: int) -> tuple[str, str] | None:
    """(fingerprint, task id) of an `Idempotency-Key` used at or after `since`; older ones are dropped."""
    conn.execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.key_id == key_id,
            idempotency_keys.c.idem_key == idem_key,
            idempotency_keys.c.created_at < since,
        )
    )
    row = conn.execute(
        select(idempotency_keys.c.fingerprint, idempotency_keys.c.task_id).where(
            idempotency_keys.c.key_id == key_id, idempotency_keys.c.idem_key == idem_key
        )
    ).first()
    return (row[0], row[1]) if row else None


def remember_idempotent(
    conn: Connection, key_id: str, idem_key: str, fingerprint: str, task_id: str, now: int
) -> None:
    conn.execute(
        insert(idempotency_keys).values(
            key_id=key_id, idem_key=idem_key, fingerprint=fingerprint, task_id=task_id, created_at=now
        )
    )


def purge_idempotency(conn: Connection, before: int) -> int:
    result = conn.execute(idempotency_keys.delete().where(idempotency_keys.c.created_at < before))
    return int(result.rowcount or 0)


# -- the price table set through the API -------------------------------------------------------------


def load_prices(conn: Connection) -> tuple[dict[str, Any], int] | None:
    row = conn.execute(select(billing_prices.c.rules, billing_prices.c.updated_at)).first()
    return (row[0], int(row[1])) if row else None


def save_prices(conn: Connection, rules: dict[str, Any] | None, now: int) -> None:
    """Replace the API's price table (None: back to the configuration file's)."""
    conn.execute(billing_prices.delete())
    if rules is not None:
        conn.execute(insert(billing_prices).values(id=1, rules=rules, updated_at=now))


# -- reports ------------------------------------------------------------------------------------------

GROUPS = ("day", "model", "channel", "key")


def usage(
    conn: Connection,
    *,
    key_id: str | None,
    group_by: str,
    start: int | None = None,
    end: int | None = None,
) -> list[dict[str, Any]]:
    """Tasks and money per group, from the task charges (so it always agrees with the ledger):
    `charged` what was pre-deducted, `refunded` what came back (refunds and settlements), `spend` the
    net. Tasks are counted on the day they were submitted; `start`/`end` are epoch ms (end exclusive)."""
    assert group_by in GROUPS
    group: Any = {
        "day": task_charges.c.created_at / literal(DAY_MS),
        "model": task_charges.c.model,
        "channel": func.coalesce(task_charges.c.channel, ""),
        "key": task_charges.c.key_id,
    }[group_by]
    query = select(
        group.label("g"),
        func.count().label("tasks"),
        func.sum(case((task_charges.c.state == OPEN, 1), else_=0)).label("active"),
        func.sum(case((task_charges.c.state == REFUNDED, 1), else_=0)).label("refunded_tasks"),
        func.coalesce(func.sum(task_charges.c.estimate), 0).label("charged"),
        func.coalesce(func.sum(task_charges.c.amount), 0).label("spend"),
    )
    if key_id is not None:
        query = query.where(task_charges.c.key_id == key_id)
    if start is not None:
        query = query.where(task_charges.c.created_at >= start)
    if end is not None:
        query = query.where(task_charges.c.created_at < end)
    rows = conn.execute(query.group_by(group).order_by(group)).all()
    return [
        {
            "group": r.g,
            "tasks": int(r.tasks),
            "active": int(r.active or 0),
            "refunded_tasks": int(r.refunded_tasks or 0),
            "charged": int(r.charged),
            "refunded": int(r.charged) - int(r.spend),
            "spend": int(r.spend),
        }
        for r in rows
    ]


def check_key(conn: Connection, key_id: str) -> list[str]:
    """Every way this key's books could be wrong (empty when they balance); used by the tests and the
    durability checks: balance = sum of the ledger, used = sum of charges' amounts, one charge per task,
    refunds only for refunded charges, settlements only for settled ones."""
    problems: list[str] = []
    account = get_account(conn, key_id)
    if account is None:
        return [f"{key_id}: no account"]
    total = conn.execute(
        select(func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.key_id == key_id)
    ).scalar()
    if int(total or 0) != account.balance:
        problems.append(f"{key_id}: balance {account.balance} != ledger sum {total}")
    spend = spent_since(conn, key_id, 0)
    if spend != account.used:
        problems.append(f"{key_id}: used {account.used} != charges {spend}")
    money_in = conn.execute(
        select(func.coalesce(func.sum(ledger.c.amount), 0)).where(
            ledger.c.key_id == key_id, ledger.c.kind.in_([TOPUP, ADJUST])
        )
    ).scalar()
    if account.balance + account.used != int(money_in or 0):
        problems.append(f"{key_id}: balance + used {account.balance + account.used} != top-ups {money_in}")
    lim = account.limits.credit_limit
    if lim is not None and account.balance < -lim:
        problems.append(f"{key_id}: balance {account.balance} below the credit limit -{lim}")
    charges = {
        c.task_id: c
        for c in (
            _charge(r) for r in conn.execute(select(task_charges).where(task_charges.c.key_id == key_id))
        )
    }
    per_task: dict[str, dict[str, int]] = {}
    for e in (_entry(r) for r in conn.execute(select(ledger).where(ledger.c.key_id == key_id))):
        if e.task_id is None:
            continue
        per_task.setdefault(e.task_id, {})[e.kind] = e.amount
    for task_id, kinds in per_task.items():
        charge = charges.get(task_id)
        if charge is None:
            problems.append(f"{task_id}: ledger entries without a charge")
            continue
        if -kinds.get(CHARGE, 0) != charge.estimate:
            problems.append(f"{task_id}: charged {-kinds.get(CHARGE, 0)} != estimate {charge.estimate}")
        if REFUND in kinds and charge.state != REFUNDED:
            problems.append(f"{task_id}: refunded but {charge.state}")
        if SETTLE in kinds and charge.state != SETTLED:
            problems.append(f"{task_id}: settled but {charge.state}")
        if -sum(kinds.values()) != charge.amount:
            problems.append(f"{task_id}: net {-sum(kinds.values())} != amount {charge.amount}")
    for charge in charges.values():
        if charge.estimate and charge.task_id not in per_task:
            problems.append(f"{charge.task_id}: estimate {charge.estimate} never charged")
        if charge.state == REFUNDED and charge.amount:
            problems.append(f"{charge.task_id}: refunded but still {charge.amount}")
    return problems


def keys_with_books(conn: Connection) -> Sequence[str]:
    return [r[0] for r in conn.execute(select(accounts.c.key_id)).all()]
