"""Read-only queries the admin pages need and the repositories do not offer: filtered task lists with
the owner's key name, per-bucket counts, per-channel and per-key aggregates.

Portable SQL (SQLite and PostgreSQL): time buckets are integer division of epoch milliseconds, and
percentiles are taken in Python from a bounded sample, since SQLite has no percentile function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, literal, or_, select

from mediarelay.domain import Status, Task
from mediarelay.store.database import Database
from mediarelay.store.schema import api_keys, tasks
from mediarelay.store.tasks import ACTIVE_STATUSES

DURATION_SAMPLE = 20_000  # newest finished tasks used for percentiles


@dataclass(frozen=True)
class TaskFilter:
    """The task list's filters; empty values mean "any"."""

    statuses: tuple[str, ...] = ()
    dialect: str | None = None
    model: str | None = None
    channel: str | None = None
    key_id: str | None = None
    created_after: int | None = None
    created_before: int | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.statuses:
            query = query.where(tasks.c.status.in_(list(self.statuses)))
        if self.dialect:
            query = query.where(tasks.c.dialect == self.dialect)
        if self.model:
            query = query.where(tasks.c.model == self.model)
        if self.channel:
            query = query.where(tasks.c.channel == self.channel)
        if self.key_id:
            query = query.where(tasks.c.key_id == self.key_id)
        if self.created_after is not None:
            query = query.where(tasks.c.created_at >= self.created_after)
        if self.created_before is not None:
            query = query.where(tasks.c.created_at < self.created_before)
        return query


@dataclass(frozen=True)
class TaskRow:
    """One line of the task list (no assets: the list never shows files)."""

    id: str
    seq: int
    public_id: str
    dialect: str
    key_id: str
    key_name: str
    model: str
    operation: str
    status: Status
    progress: int
    channel: str | None
    error_code: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    updated_at: int
    is_batch: bool


LIST_COLUMNS = (
    tasks.c.id,
    tasks.c.seq,
    tasks.c.public_id,
    tasks.c.dialect,
    tasks.c.key_id,
    api_keys.c.name.label("key_name"),
    tasks.c.model,
    tasks.c.operation,
    tasks.c.status,
    tasks.c.progress,
    tasks.c.channel,
    tasks.c.error_code,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.updated_at,
    tasks.c.params,
)


class AdminQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- tasks --------------------------------------------------------------------------------

    def task_rows(self, flt: TaskFilter, *, limit: int, before_seq: int | None = None) -> list[TaskRow]:
        """Top-level tasks, newest first; `before_seq` is the cursor (the last `seq` shown)."""
        query: Select[Any] = select(*LIST_COLUMNS).select_from(
            tasks.outerjoin(api_keys, api_keys.c.id == tasks.c.key_id)
        )
        query = flt.apply(query.where(tasks.c.parent_id.is_(None)))
        if before_seq is not None:
            query = query.where(tasks.c.seq < before_seq)
        query = query.order_by(tasks.c.seq.desc()).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [_row(r._mapping) for r in rows]

    def find_task_id(self, ident: str) -> str | None:
        """A task id from its id or any dialect's public id (the search box)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(tasks.c.id).where(or_(tasks.c.id == ident.upper(), tasks.c.public_id == ident))
            ).first()
        return row[0] if row else None

    def distinct(self, column: str) -> list[str]:
        """The values seen in a task column (filter drop-downs)."""
        col = tasks.c[column]
        with self.db.read() as conn:
            rows = conn.execute(select(col).where(col.is_not(None)).distinct().order_by(col).limit(500)).all()
        return [r[0] for r in rows]

    def retries_of(self, task: Task) -> list[tuple[str, str]]:
        """(id, status) of the tasks retried from this one (`params.retry_of`), newest first. Retries
        keep the owner and are newer, so the (key, created) index bounds the scan."""
        query = (
            select(tasks.c.id, tasks.c.status)
            .where(
                tasks.c.key_id == task.key_id,
                tasks.c.created_at >= task.created_at,
                tasks.c.params["retry_of"].as_string() == task.id,
            )
            .order_by(tasks.c.seq.desc())
            .limit(20)
        )
        with self.db.read() as conn:
            return [(r[0], r[1]) for r in conn.execute(query).all()]

    # -- the dashboard ------------------------------------------------------------------------

    def status_buckets(self, start: int, bucket_ms: int) -> list[tuple[int, str, int]]:
        """(bucket index, status, count) of top-level tasks created since `start`."""
        bucket = ((tasks.c.created_at - start) // bucket_ms).label("b")
        query = (
            select(bucket, tasks.c.status, func.count())
            .where(tasks.c.created_at >= start, tasks.c.parent_id.is_(None))
            .group_by(bucket, tasks.c.status)
        )
        with self.db.read() as conn:
            return [(int(r[0]), r[1], int(r[2])) for r in conn.execute(query).all()]

    def channel_buckets(self, start: int, bucket_ms: int) -> list[tuple[int, str, int]]:
        """(bucket index, channel, count) of tasks that ran on a channel (batch children included:
        they are the ones doing the work), by creation time."""
        bucket = ((tasks.c.created_at - start) // bucket_ms).label("b")
        query = (
            select(bucket, tasks.c.channel, func.count())
            .where(tasks.c.created_at >= start, tasks.c.channel.is_not(None))
            .group_by(bucket, tasks.c.channel)
        )
        with self.db.read() as conn:
            return [(int(r[0]), r[1], int(r[2])) for r in conn.execute(query).all()]

    def durations(self, start: int) -> list[tuple[int, int]]:
        """(created_at, end-to-end milliseconds) of succeeded top-level tasks created since `start`,
        newest first, at most DURATION_SAMPLE of them."""
        query = (
            select(tasks.c.created_at, tasks.c.finished_at - tasks.c.created_at)
            .where(
                tasks.c.created_at >= start,
                tasks.c.status == Status.SUCCEEDED.value,
                tasks.c.parent_id.is_(None),
                tasks.c.finished_at.is_not(None),
            )
            .order_by(tasks.c.created_at.desc())
            .limit(DURATION_SAMPLE)
        )
        with self.db.read() as conn:
            return [(int(r[0]), int(r[1])) for r in conn.execute(query).all()]

    def active_counts(self) -> dict[str, int]:
        """Unfinished top-level tasks per status, right now."""
        query = (
            select(tasks.c.status, func.count())
            .where(tasks.c.status.in_(ACTIVE_STATUSES), tasks.c.parent_id.is_(None))
            .group_by(tasks.c.status)
        )
        with self.db.read() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(query).all()}

    def stuck(self, idle_before: int, limit: int = 10) -> list[TaskRow]:
        """Unfinished tasks that have not changed since `idle_before`, oldest change first."""
        query = (
            select(*LIST_COLUMNS)
            .select_from(tasks.outerjoin(api_keys, api_keys.c.id == tasks.c.key_id))
            .where(tasks.c.status.in_(ACTIVE_STATUSES), tasks.c.updated_at < idle_before)
            .order_by(tasks.c.updated_at)
            .limit(limit)
        )
        with self.db.read() as conn:
            return [_row(r._mapping) for r in conn.execute(query).all()]

    # -- channels -----------------------------------------------------------------------------

    def inflight(self) -> dict[str, int]:
        """Unfinished tasks per channel (what counts against each channel's concurrency limit)."""
        query = (
            select(tasks.c.channel, func.count())
            .where(tasks.c.status.in_(ACTIVE_STATUSES), tasks.c.channel.is_not(None))
            .group_by(tasks.c.channel)
        )
        with self.db.read() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(query).all()}

    def channel_outcomes(self, since: int) -> dict[str, dict[str, int]]:
        """Per channel: finished tasks per final status since `since` (by finish time)."""
        query = (
            select(tasks.c.channel, tasks.c.status, func.count())
            .where(tasks.c.finished_at >= since, tasks.c.channel.is_not(None))
            .group_by(tasks.c.channel, tasks.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        with self.db.read() as conn:
            for channel, status, n in conn.execute(query).all():
                out.setdefault(channel, {})[status] = int(n)
        return out

    def last_errors(self, channels: Sequence[str]) -> dict[str, tuple[str | None, str | None, int]]:
        """Per channel: (error code, message, finished_at) of its most recent failed task."""
        out: dict[str, tuple[str | None, str | None, int]] = {}
        with self.db.read() as conn:
            for name in channels:
                row = conn.execute(
                    select(tasks.c.error_code, tasks.c.error_message, tasks.c.finished_at)
                    .where(tasks.c.channel == name, tasks.c.status == Status.FAILED.value)
                    .order_by(tasks.c.finished_at.desc())
                    .limit(1)
                ).first()
                if row is not None:
                    out[name] = (row[0], row[1], int(row[2] or 0))
        return out

    # -- keys ---------------------------------------------------------------------------------

    def key_usage(self, since: int) -> dict[str, dict[str, int]]:
        """Per key: top-level task counts (all time, since `since`, active, succeeded, failed) and the
        last submit time."""
        recent = func.sum(case((tasks.c.created_at >= since, 1), else_=0))
        active = func.sum(case((tasks.c.status.in_(ACTIVE_STATUSES), 1), else_=0))
        ok = func.sum(case((tasks.c.status == Status.SUCCEEDED.value, 1), else_=0))
        bad = func.sum(case((tasks.c.status == Status.FAILED.value, 1), else_=0))
        query = (
            select(tasks.c.key_id, func.count(), recent, active, ok, bad, func.max(tasks.c.created_at))
            .where(tasks.c.parent_id.is_(None))
            .group_by(tasks.c.key_id)
        )
        out = {}
        with self.db.read() as conn:
            for key_id, total, n_recent, n_active, n_ok, n_bad, last in conn.execute(query).all():
                out[key_id] = {
                    "total": int(total),
                    "recent": int(n_recent or 0),
                    "active": int(n_active or 0),
                    "succeeded": int(n_ok or 0),
                    "failed": int(n_bad or 0),
                    "last": int(last or 0),
                }
        return out

    def key_row(self, key_id: str) -> dict[str, Any] | None:
        """A key's row without its hash: the session check and the key page."""
        cols = [c for c in api_keys.c if c.name not in ("key_hash", "webhook_secret")]
        with self.db.read() as conn:
            row = conn.execute(select(*cols).where(api_keys.c.id == key_id)).first()
        return dict(row._mapping) if row else None

    def key_names(self) -> dict[str, str]:
        with self.db.read() as conn:
            rows = conn.execute(select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix)).all()
        return {r[0]: (r[1] or r[2]) for r in rows}

    def key_daily(self, key_id: str, start: int, day_ms: int) -> list[tuple[int, str, int]]:
        """(day index, status, count) of one key's top-level tasks since `start`."""
        bucket = ((tasks.c.created_at - start) // day_ms).label("b")
        query = (
            select(bucket, tasks.c.status, func.count())
            .where(tasks.c.key_id == key_id, tasks.c.created_at >= start, tasks.c.parent_id.is_(None))
            .group_by(bucket, tasks.c.status)
        )
        with self.db.read() as conn:
            return [(int(r[0]), r[1], int(r[2])) for r in conn.execute(query).all()]

    def ping(self) -> bool:
        with self.db.read() as conn:
            return conn.execute(select(literal(1))).scalar() == 1


def _row(m: Any) -> TaskRow:
    return TaskRow(
        id=m["id"],
        seq=m["seq"],
        public_id=m["public_id"],
        dialect=m["dialect"],
        key_id=m["key_id"],
        key_name=m["key_name"] or "",
        model=m["model"],
        operation=m["operation"],
        status=Status(m["status"]),
        progress=m["progress"],
        channel=m["channel"],
        error_code=m["error_code"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        updated_at=m["updated_at"],
        is_batch=bool((m["params"] or {}).get("fanout")),
    )
