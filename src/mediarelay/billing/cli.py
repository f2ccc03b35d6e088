"""Billing commands: `mediarelay keys topup|adjust|limits|account|ledger` and `mediarelay usage`.

They work on the data directory directly, like `mediarelay keys create`, also while the server runs
(balances move by SQL arithmetic, so nothing is lost between the two processes). Amounts are typed and
printed in currency units with up to 6 decimals ("12.5"); the database and the API keep micro-units.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mediarelay.billing import accounts
from mediarelay.billing.service import micro
from mediarelay.store import ledger

err = Console(stderr=True)


def out() -> Console:
    """Tables on stdout; piped into a file or a script they are not squeezed to 80 columns."""
    return Console(width=None if sys.stdout.isatty() else 200)


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where the database and files live.")]
Ident = Annotated[str, typer.Argument(help="The key's id or printed prefix.")]
NONE = ("none", "null", "unlimited", "")


def open_db(data_dir: Path | None) -> Any:
    from mediarelay.config import Settings
    from mediarelay.store import database
    from mediarelay.store.database import Database

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database.upgrade(settings.db_url)
    return Database(settings.db_url)


def amount(text: str, option: str, *, allow_negative: bool = False) -> int:
    try:
        value = accounts.parse_amount(text)
    except ValueError as exc:
        err.print(f"{option}: {exc}")
        raise typer.Exit(2) from None
    if value < 0 and not allow_negative:
        err.print(f"{option}: must not be negative")
        raise typer.Exit(2)
    return value


def limit(text: str | None, option: str, *, money: bool) -> Any:
    """A limit option: unset (keep), "none" (remove the limit), or a value."""
    if text is None:
        return ledger.UNSET
    if text.strip().lower() in NONE:
        return None
    if money:
        return amount(text, option)
    if not text.strip().isdigit() or int(text) < 1:
        err.print(f"{option}: a whole number of at least 1, or none")
        raise typer.Exit(2)
    return int(text)


def find_key(db: Any, ident: str) -> Any:
    from mediarelay.store.keys import KeyRepo

    key = KeyRepo(db).get(ident)
    if key is None:
        err.print(f"no key {ident!r}")
        raise typer.Exit(1)
    return key


def create_key(
    data_dir: Path | None,
    name: str,
    *,
    admin: bool,
    webhook_url: str | None,
    balance: str | None,
    credit_limit: str | None,
    daily_cap: str | None,
    max_concurrent: str | None,
    rpm: str | None,
) -> str:
    """`mediarelay keys create` with its billing options; returns the secret."""
    opening = amount(balance, "--balance") if balance is not None else 0
    credit = limit(credit_limit, "--credit-limit", money=True)
    if credit is ledger.UNSET:
        credit = 0 if balance is not None else None  # [MR] a balance makes a prepaid key
    limits = ledger.Limits(
        credit_limit=credit,
        daily_cap=_given(limit(daily_cap, "--daily-cap", money=True)),
        max_concurrent=_given(limit(max_concurrent, "--max-concurrent", money=False)),
        rpm=_given(limit(rpm, "--rpm", money=False)),
    )
    _, secret = accounts.create_key(
        open_db(data_dir), name, admin=admin, webhook_url=webhook_url, balance=opening, limits=limits
    )
    return secret


def _given(value: Any) -> Any:
    return None if value is ledger.UNSET else value


def print_account(key: Any, status: accounts.AccountStatus) -> None:
    lim = status.account.limits
    table = Table("key", "balance", "used", "credit limit", "daily cap", "today", "active", "rpm")

    def money(value: int | None) -> str:
        return "unlimited" if value is None else micro(value)

    table.add_row(
        f"{key.prefix}… {key.name}",
        micro(status.account.balance),
        micro(status.account.used),
        money(lim.credit_limit),
        "—" if lim.daily_cap is None else micro(lim.daily_cap),
        micro(status.spent_today),
        f"{status.active_tasks}/{lim.max_concurrent}" if lim.max_concurrent else str(status.active_tasks),
        str(lim.rpm or "—"),
    )
    out().print(table)


def register(app: typer.Typer, keys_app: typer.Typer) -> None:
    """Add the billing commands to the CLI (one line in cli.py)."""

    @keys_app.command("topup")
    def topup(
        ident: Ident,
        value: Annotated[str, typer.Argument(metavar="AMOUNT", help="Currency units, e.g. 10 or 2.5.")],
        note: Annotated[str | None, typer.Option(help="Why: kept in the ledger.")] = None,
        reference: Annotated[
            str | None, typer.Option(help="An idempotency reference: the same one tops up only once.")
        ] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Add credit to a key; prints the new balance."""
        credit = amount(value, "AMOUNT")
        if credit <= 0:
            err.print("AMOUNT: must be positive")
            raise typer.Exit(2)
        db = open_db(data_dir)
        key = find_key(db, ident)
        entry, fresh = accounts.credit(db, key.id, credit, note=note, reference=reference)
        if not fresh:
            err.print(f"already done (reference {reference!r}): nothing added")
        print(f"balance {micro(entry.balance_after)}")

    @keys_app.command("adjust", context_settings={"ignore_unknown_options": True})  # AMOUNT may be -1
    def adjust(
        ident: Ident,
        value: Annotated[str, typer.Argument(metavar="AMOUNT", help="Signed, e.g. -1.5 to take away.")],
        note: Annotated[str | None, typer.Option(help="Why: kept in the ledger.")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Correct a key's balance up or down (not below its credit limit); prints the new balance."""
        from mediarelay.domain import MediarelayError

        change = amount(value, "AMOUNT", allow_negative=True)
        if not change:
            err.print("AMOUNT: must not be 0")
            raise typer.Exit(2)
        db = open_db(data_dir)
        key = find_key(db, ident)
        try:
            entry, _ = accounts.credit(db, key.id, change, kind=ledger.ADJUST, note=note)
        except MediarelayError as exc:
            err.print(exc.message)
            raise typer.Exit(1) from None
        print(f"balance {micro(entry.balance_after)}")

    @keys_app.command("limits")
    def limits(
        ident: Ident,
        credit_limit: Annotated[
            str | None, typer.Option("--credit-limit", help="How far below 0 it may go; none: unlimited.")
        ] = None,
        daily_cap: Annotated[
            str | None, typer.Option("--daily-cap", help="Spend per UTC day; none: no cap.")
        ] = None,
        max_concurrent: Annotated[
            str | None, typer.Option("--max-concurrent", help="Active tasks at once; none: no limit.")
        ] = None,
        rpm: Annotated[str | None, typer.Option("--rpm", help="Submits a minute; none: no limit.")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Show or change a key's limits (the server applies them within seconds)."""
        db = open_db(data_dir)
        key = find_key(db, ident)
        changes = {
            "credit_limit": limit(credit_limit, "--credit-limit", money=True),
            "daily_cap": limit(daily_cap, "--daily-cap", money=True),
            "max_concurrent": limit(max_concurrent, "--max-concurrent", money=False),
            "rpm": limit(rpm, "--rpm", money=False),
        }
        changes = {k: v for k, v in changes.items() if v is not ledger.UNSET}
        status = accounts.set_limits(db, key.id, **changes) if changes else accounts.status(db, key.id)
        print_account(key, status)

    @keys_app.command("account")
    def account(ident: Ident, data_dir: DataDir = None) -> None:
        """A key's balance, spend and limits."""
        db = open_db(data_dir)
        key = find_key(db, ident)
        print_account(key, accounts.status(db, key.id))

    @keys_app.command("ledger")
    def key_ledger(
        ident: Ident,
        limit_: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Newest entries.")] = 20,
        data_dir: DataDir = None,
    ) -> None:
        """A key's latest ledger entries, newest first."""
        db = open_db(data_dir)
        key = find_key(db, ident)
        table = Table("id", "at (ms)", "kind", "amount", "balance after", "task", "note")
        for e in accounts.entries(db, key.id, limit=limit_):
            table.add_row(
                str(e.id),
                str(e.created_at),
                e.kind,
                micro(e.amount),
                micro(e.balance_after),
                e.task_id or "",
                e.note or e.reference or "",
            )
        out().print(table)

    @app.command("usage")
    def usage(
        key: Annotated[str | None, typer.Option("--key", help="One key (id or prefix); default all.")] = None,
        by: Annotated[str, typer.Option("--by", help="day, model, channel or key.")] = "day",
        since: Annotated[str | None, typer.Option("--from", help="A UTC date YYYY-MM-DD, inclusive.")] = None,
        until: Annotated[str | None, typer.Option("--to", help="A UTC date YYYY-MM-DD, inclusive.")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Tasks and spend per day, model, channel or key (net of refunds)."""
        from datetime import UTC, date, datetime

        if by not in ledger.GROUPS:
            err.print(f"--by: one of {', '.join(ledger.GROUPS)}")
            raise typer.Exit(2)

        def bound(text: str | None, option: str, end: bool) -> int | None:
            if text is None:
                return None
            try:
                day = date.fromisoformat(text)
            except ValueError:
                err.print(f"{option}: a date YYYY-MM-DD")
                raise typer.Exit(2) from None
            start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            return start + ledger.DAY_MS if end else start

        db = open_db(data_dir)
        key_id = find_key(db, key).id if key else None
        start, end = bound(since, "--from", False), bound(until, "--to", True)
        report = accounts.usage(db, key_id=key_id, group_by=by, start=start, end=end)
        table = Table(by, "tasks", "refunded tasks", "active", "charged", "refunded", "spend")
        rows = [*report["data"], {"group": "total", **report["total"]}]
        for r in rows:
            table.add_row(
                str(r["group"] or "—"),
                str(r["tasks"]),
                str(r["refunded_tasks"]),
                str(r["active"]),
                micro(r["charged"]),
                micro(r["refunded"]),
                micro(r["spend"]),
            )
        out().print(table)
