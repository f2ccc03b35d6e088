"""Billing as the task store sees it: quote, check limits and pre-deduct at submit, refund or settle when a
task ends, all inside the transaction of the task change (`TaskRepo` calls these hooks). Plus the price
table (configuration file, or the admin API's copy in the database) and the per-key request-rate limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Connection

from mediarelay.billing.prices import PriceRule, PriceTable, final_price, quote
from mediarelay.billing.ratelimit import RateLimiter
from mediarelay.domain import Asset, ErrorKind, MediarelayError, Status, Task, TaskSpec, now_ms
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.tasks import NewAsset

log = logging.getLogger("mediarelay.billing")

CACHE_SECONDS = 5.0  # other nodes see a changed price table or limit within this
CONCURRENCY_RETRY_AFTER = 2  # seconds: a guess, tasks finish at their own pace
PURGE_EVERY = 3600.0


def micro(amount: int) -> str:
    """An amount of micro-units as a decimal currency amount, exactly: 1500000 -> "1.500000"."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def insufficient(needed: int, balance: int, credit_limit: int) -> MediarelayError:
    available = balance + credit_limit
    return MediarelayError(
        ErrorKind.INSUFFICIENT_QUOTA,
        f"insufficient balance: this submission costs {micro(needed)} and {micro(max(0, available))} "
        "is available; top up the key's balance",
    )


def rate_limited(message: str, retry_after: float) -> MediarelayError:
    seconds = max(1, math.ceil(retry_after))
    return MediarelayError(ErrorKind.RATE_LIMITED, message, headers={"Retry-After": str(seconds)})


class Billing:
    """Implements `store.tasks.TaskHooks`; one per node."""

    def __init__(
        self,
        db: Database,
        prices: Sequence[PriceRule] = (),
        default: PriceRule | None = None,
        *,
        default_seconds: float = 5.0,
        idempotency_hours: float = 24.0,
        currency: str = "",
    ) -> None:
        self.db = db
        self.base = PriceTable(rules=tuple(prices), default=default or PriceTable().default)
        self.default_seconds = default_seconds
        self.idempotency_ms = int(idempotency_hours * 3600 * 1000)
        self.currency = currency
        self.limiter = RateLimiter()
        self._table: tuple[PriceTable, float] | None = None
        self._limits: dict[str, tuple[ledger.Limits, float]] = {}
        self._lock = threading.Lock()
        self._purger: asyncio.Task[None] | None = None

    # -- the price table ----------------------------------------------------------------------

    def table(self, conn: Connection | None = None) -> PriceTable:
        """The table in force: the admin API's (stored) if set, else the configuration file's."""
        with self._lock:
            cached = self._table
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if conn is None:
            with self.db.read() as own:
                stored = ledger.load_prices(own)
        else:
            stored = ledger.load_prices(conn)
        table = self.base
        if stored is not None:
            rules, _ = stored
            table = PriceTable(
                rules=tuple(PriceRule.model_validate(r) for r in rules.get("prices", [])),
                default=PriceRule.model_validate(rules.get("default") or self.base.default.model_dump()),
                source="api",
            )
        with self._lock:
            self._table = (table, time.monotonic() + CACHE_SECONDS)
        return table

    def set_table(self, rules: Sequence[PriceRule] | None, default: PriceRule | None = None) -> PriceTable:
        """Replace the table (stored, so it survives restarts); None goes back to the file's."""
        doc = None
        if rules is not None:
            doc = {
                "prices": [r.model_dump() for r in rules],
                "default": (default or self.base.default).model_dump(),
            }
        with self.db.write() as conn:
            ledger.save_prices(conn, doc, now_ms())
        with self._lock:
            self._table = None
        return self.table()

    # -- TaskHooks: inside the task's transaction ---------------------------------------------

    def created(self, conn: Connection, key_id: str, units: Sequence[tuple[str, TaskSpec]], now: int) -> None:
        """Check the key's limits with its account row locked, then pre-deduct each unit's estimate.
        [MR] A fan-out batch is charged per child: each child is priced, refunded and settled alone."""
        table = self.table(conn)
        quotes = [(task_id, spec, quote(table, spec, self.default_seconds)) for task_id, spec in units]
        total = sum(q.estimate for _, _, q in quotes)
        account = ledger.get_account(conn, key_id, lock=True)
        if account is None:
            ledger.ensure_account(conn, key_id, now)
            account = ledger.get_account(conn, key_id, lock=True)
            assert account is not None
        limits = account.limits
        if limits.max_concurrent is not None:
            active = ledger.active_count(conn, key_id)
            if active + len(units) > limits.max_concurrent:
                raise rate_limited(
                    f"too many active tasks: {active} running, at most {limits.max_concurrent} at once; "
                    "retry when one finishes",
                    CONCURRENCY_RETRY_AFTER,
                )
        if limits.daily_cap is not None and total:
            day_start = now - now % ledger.DAY_MS
            spent = ledger.spent_since(conn, key_id, day_start)
            if spent + total > limits.daily_cap:
                raise rate_limited(
                    f"daily spend cap reached: {micro(spent)} of {micro(limits.daily_cap)} spent today "
                    f"(UTC), this submission costs {micro(total)}",
                    (day_start + ledger.DAY_MS - now) / 1000,
                )
        if limits.credit_limit is not None and account.balance - total < -limits.credit_limit:
            raise insufficient(total, account.balance, limits.credit_limit)
        for task_id, spec, q in quotes:
            charged = ledger.open_charge(
                conn,
                task_id=task_id,
                public_id=spec.public_id,
                key_id=key_id,
                dialect=spec.dialect,
                model=spec.model,
                operation=spec.operation.value,
                price=q.snapshot,
                estimate=q.estimate,
                now=now,
            )
            if not charged:  # another process took the money between the check and the charge
                raise insufficient(total, account.balance, limits.credit_limit or 0)

    def finished(
        self, conn: Connection, task: Task, status: Status, assets: Sequence[Asset | NewAsset], now: int
    ) -> None:
        """Refund a failed or canceled task; settle a succeeded one at the price of its real output."""
        final: int | None = None
        if status is Status.SUCCEEDED:
            charge = ledger.get_charge(conn, task.id)
            if charge is None or charge.state != ledger.OPEN:
                return
            final = final_price(charge.price, charge.estimate, assets)
        ledger.close_charge(conn, task.id, now, final=final, channel=task.channel)

    def deleted(self, conn: Connection, tasks: Sequence[Task], now: int) -> None:
        """A task removed before it finished gets its money back (the API cancels first anyway)."""
        for task in tasks:
            ledger.close_charge(conn, task.id, now, final=None, channel=task.channel)

    # -- the request-rate limit (before anything else of a submit) ----------------------------

    def limits(self, key_id: str) -> ledger.Limits:
        hit = self._limits.get(key_id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        with self.db.read() as conn:
            account = ledger.get_account(conn, key_id)
        limits = account.limits if account else ledger.Limits()
        if len(self._limits) >= 100_000:
            self._limits.clear()
        self._limits[key_id] = (limits, time.monotonic() + CACHE_SECONDS)
        return limits

    def forget(self, key_id: str) -> None:
        """Drop cached limits after a change through this node (others see it within seconds)."""
        self._limits.pop(key_id, None)

    async def admit(self, key_id: str) -> None:
        """Count a submit against the key's requests-per-minute; 429 with Retry-After when over."""
        hit = self._limits.get(key_id)
        if hit is not None and hit[1] > time.monotonic():
            limits = hit[0]  # cached: no thread hop on the submit path
        else:
            limits = await asyncio.to_thread(self.limits, key_id)
        if limits.rpm is None:
            return
        wait = self.limiter.take(key_id, limits.rpm)
        if wait > 0:
            raise rate_limited(f"rate limit reached: at most {limits.rpm} submissions a minute", wait)

    # -- housekeeping -------------------------------------------------------------------------

    def purge(self) -> int:
        with self.db.write() as conn:
            return ledger.purge_idempotency(conn, now_ms() - self.idempotency_ms)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(self.purge)
                except Exception:
                    log.exception("purging old idempotency keys failed")
                await asyncio.sleep(PURGE_EVERY)

        self._purger = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            self._purger = None
