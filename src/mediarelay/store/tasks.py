"""Task persistence. Every state change is a compare-and-set on `version`, in one transaction with
its event row, so a process dying between two lines never loses or repeats a step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, Row, Update, and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from ulid import ULID

from mediarelay.domain import Asset, ErrorKind, MediarelayError, Operation, Status, Task, TaskSpec, now_ms
from mediarelay.store import ledger
from mediarelay.store.changes import DELETED, publish
from mediarelay.store.database import Database
from mediarelay.store.schema import ACTIVE, assets, metadata, task_charges, task_events, tasks
from mediarelay.store.webhooks import enqueue_status_event

ACTIVE_STATUSES = (Status.QUEUED.value, Status.RUNNING.value, Status.FINALIZING.value)
# The same condition as literal SQL: SQLite uses the partial index ix_tasks_due only for a query whose WHERE
# repeats the index's own (bound parameters do not match it: the scan would read the whole table).
ACTIVE_LITERAL = text(ACTIVE)

# Columns the engine may change through `update`; identity and request columns never change.
MUTABLE = frozenset(
    {
        "channel",
        "upstream_id",
        "attempt",
        "next_run_at",
        "status",
        "progress",
        "error_code",
        "error_message",
        "upstream",
        "started_at",
        "finished_at",
    }
)


@dataclass(frozen=True)
class NewAsset:
    """A stored file ready to be attached to a task when it succeeds."""

    role: str
    key: str
    mime: str
    bytes: int
    sha256: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    index: int = 0


@dataclass(frozen=True)
class Idempotency:
    """A submit's `Idempotency-Key`: the same key and request `fingerprint` within `ttl_ms` = one task."""

    key: str
    fingerprint: str
    ttl_ms: int = 24 * 3600 * 1000


class TaskHooks(Protocol):
    """Side effects written in the transaction of a task change (billing, see mediarelay.billing).

    Raising from `created` rolls the whole submit back: nothing is stored."""

    def created(self, conn: Connection, key_id: str, units: Sequence[tuple[str, TaskSpec]], now: int) -> None:
        """Before the rows of a submit are inserted; `units` are the (task id, spec) that do work (the
        task itself, or a fan-out's children)."""

    def finished(
        self, conn: Connection, task: Task, status: Status, assets: Sequence[Asset | NewAsset], now: int
    ) -> None:
        """A task just became terminal; `task` is the row as it was before, `assets` all of its files."""

    def deleted(self, conn: Connection, tasks: Sequence[Task], now: int) -> None:
        """Tasks are about to be removed."""


class StepQueue(Protocol):
    """Where a due step is announced besides the `next_run_at` column: the scaled-out mode's job queue
    (`engine/jobs.py`), written in the transaction of the change that makes the step due."""

    def due(self, conn: Connection, task_id: str, at: int) -> None: ...

    def webhook_due(self, conn: Connection, task_id: str, at: int) -> None:
        """A webhook event of the task is due for delivery at `at` (ms)."""


_INSERT_TASK = insert(tasks)
_INSERT_EVENT = insert(task_events)
_UPDATES: dict[frozenset[str], Update] = {}


def _update_of(columns: frozenset[str]) -> Update:
    """The compare-and-set update of these columns, built once per set of columns: every poll writes one,
    and building the statement cost more than running it."""
    statement = _UPDATES.get(columns)
    if statement is None:
        statement = (
            update(tasks)
            .where(and_(tasks.c.id == bindparam("cas_id"), tasks.c.version == bindparam("cas_version")))
            .values({c: bindparam(f"set_{c}", type_=tasks.c[c].type) for c in columns})
        )
        _UPDATES[columns] = statement
    return statement


_SCHEDULE = _update_of(frozenset({"next_run_at"}))


def new_task_id() -> str:
    return str(ULID())


def _task(row: Row[Any], task_assets: Sequence[Asset] = ()) -> Task:
    m = row._mapping
    return Task(
        id=m["id"],
        seq=m["seq"],
        public_id=m["public_id"],
        dialect=m["dialect"],
        key_id=m["key_id"],
        parent_id=m["parent_id"],
        model=m["model"],
        operation=Operation(m["operation"]),
        params=m["params"],
        request=m["request"],
        channel=m["channel"],
        upstream_id=m["upstream_id"],
        attempt=m["attempt"],
        next_run_at=m["next_run_at"],
        status=Status(m["status"]),
        progress=m["progress"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        upstream=m["upstream"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        updated_at=m["updated_at"],
        version=m["version"],
        assets=tuple(task_assets),
    )


def _asset(row: Row[Any]) -> Asset:
    m = row._mapping
    return Asset(
        id=m["id"],
        role=m["role"],
        key=m["key"],
        mime=m["mime"],
        bytes=m["bytes"],
        sha256=m["sha256"],
        width=m["width"],
        height=m["height"],
        duration=m["duration"],
        index=m["idx"],
    )


class TaskRepo:
    def __init__(self, db: Database, hooks: TaskHooks | None = None, queue: StepQueue | None = None) -> None:
        self.db = db
        self.hooks = hooks
        self.queue = queue
        self.announce = not db.is_sqlite  # other nodes learn of changes over LISTEN/NOTIFY

    def _due(self, conn: Connection, task_id: str, at: int | None) -> None:
        if self.queue is not None and at is not None:
            self.queue.due(conn, task_id, at)

    # -- creation -----------------------------------------------------------------------------

    def create(self, spec: TaskSpec, key_id: str, *, idempotency: Idempotency | None = None) -> Task:
        """Insert a task (and its children, for fan-out submissions) in one transaction."""
        return self.create_once(spec, key_id, idempotency)[0]

    def create_once(
        self, spec: TaskSpec, key_id: str, idempotency: Idempotency | None = None
    ) -> tuple[Task, bool]:
        """Like `create`; with an `Idempotency-Key` already used for the same request, the original task
        instead (and False: nothing new was stored or charged). The key is stored with the insert."""
        try:
            return self._create(spec, key_id, idempotency)
        except IntegrityError:
            # Two submits with one key raced (PostgreSQL): the loser finds the winner's task.
            found = self.replay(key_id, idempotency) if idempotency else None
            if found is None:
                raise
            return found, False

    def replay(self, key_id: str, idempotency: Idempotency) -> Task | None:
        """The task an `Idempotency-Key` already made, or None; a different request under the same key
        is a conflict."""
        with self.db.write() as conn:
            return self._replay(conn, key_id, idempotency, now_ms())

    def _replay(self, conn: Connection, key_id: str, idem: Idempotency, now: int) -> Task | None:
        found = ledger.find_idempotent(conn, key_id, idem.key, now - idem.ttl_ms)
        if found is None:
            return None
        fingerprint, task_id = found
        if fingerprint != idem.fingerprint:
            raise MediarelayError(
                ErrorKind.CONFLICT,
                "this Idempotency-Key was already used with a different request",
                param="Idempotency-Key",
            )
        task = self._load(conn, [task_id])
        if not task:
            raise MediarelayError(
                ErrorKind.CONFLICT,
                "this Idempotency-Key was used for a task that has since been deleted",
                param="Idempotency-Key",
            )
        return task[0]

    def _create(self, spec: TaskSpec, key_id: str, idem: Idempotency | None) -> tuple[Task, bool]:
        now = now_ms()
        parent_id = new_task_id()
        with self.db.write() as conn:
            if idem is not None:
                if (original := self._replay(conn, key_id, idem, now)) is not None:
                    return original, False
                # Claimed first: a concurrent twin waits on this row, then finds the task (no charge).
                ledger.remember_idempotent(conn, key_id, idem.key, idem.fingerprint, parent_id, now)
            children = [(new_task_id(), child) for child in spec.children]
            if self.hooks is not None:
                self.hooks.created(conn, key_id, children or [(parent_id, spec)], now)
            self._insert(conn, parent_id, spec, key_id, None, now, runnable=not spec.children)
            for child_id, child in children:
                self._insert(conn, child_id, child, key_id, parent_id, now, runnable=True)
            return self._load(conn, [parent_id])[0], True

    def create_in(
        self, conn: Connection, spec: TaskSpec, key_id: str, idem: Idempotency | None, now: int
    ) -> tuple[Task, bool] | MediarelayError:
        """A single-task submit inside a write transaction the caller holds (the group commit shares it
        with other writes: one lock and one commit for many submits on SQLite). A submit refused by its
        own checks (limits, funds, an idempotency conflict) is returned, not raised: its checks all run
        before it writes anything, so the shared transaction stays good for the others."""
        assert not spec.children, "fan-out submits go through create_once"
        task_id = new_task_id()
        try:
            if idem is not None and (original := self._replay(conn, key_id, idem, now)) is not None:
                return original, False
            if self.hooks is not None:  # checks first (they may refuse), then the writes
                self.hooks.created(conn, key_id, [(task_id, spec)], now)
        except MediarelayError as exc:
            # A refused charge leaves its charge row (a lone submit rolls back): remove it.
            conn.execute(delete(task_charges).where(task_charges.c.task_id == task_id))
            return exc
        if idem is not None:
            ledger.remember_idempotent(conn, key_id, idem.key, idem.fingerprint, task_id, now)
        # The new row is known from its own values: no read-back (one statement fewer per submit).
        return self._insert(conn, task_id, spec, key_id, None, now, runnable=True), True

    def _insert(
        self,
        conn: Connection,
        task_id: str,
        spec: TaskSpec,
        key_id: str,
        parent_id: str | None,
        now: int,
        *,
        runnable: bool,
    ) -> Task:
        """Insert the task row and its first event; returns the stored task (seq from the insert)."""
        # Prebuilt statements with parameter dicts: compiled once, not rebuilt per submit (hot path).
        values: dict[str, Any] = {
            "id": task_id,
            "public_id": spec.public_id,
            "dialect": spec.dialect,
            "key_id": key_id,
            "parent_id": parent_id,
            "model": spec.model,
            "operation": spec.operation.value,
            "params": spec.params,
            "request": spec.request,
            "attempt": 0,
            # A fan-out parent does no work of its own: it is woken when a child changes.
            "next_run_at": now if runnable else None,
            "status": Status.QUEUED.value,
            "progress": 0,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        inserted = conn.execute(_INSERT_TASK, values).inserted_primary_key
        assert inserted is not None
        seq = inserted[0]
        conn.execute(
            _INSERT_EVENT,
            {"task_id": task_id, "version": 1, "status": Status.QUEUED.value, "progress": 0, "at": now},
        )
        if runnable:
            self._due(conn, task_id, now)
        return Task(
            id=task_id,
            seq=int(seq),
            public_id=spec.public_id,
            dialect=spec.dialect,
            key_id=key_id,
            parent_id=parent_id,
            model=spec.model,
            operation=spec.operation,
            params=spec.params,
            request=spec.request,
            next_run_at=values["next_run_at"],
            status=Status.QUEUED,
            progress=0,
            created_at=now,
            updated_at=now,
            version=1,
        )

    # -- reads --------------------------------------------------------------------------------

    def _load(self, conn: Connection, ids: Sequence[str]) -> list[Task]:
        if not ids:
            return []
        rows = conn.execute(select(tasks).where(tasks.c.id.in_(ids))).all()
        by_task: dict[str, list[Asset]] = {}
        for a in conn.execute(select(assets).where(assets.c.task_id.in_(ids)).order_by(assets.c.id)).all():
            by_task.setdefault(a._mapping["task_id"], []).append(_asset(a))
        found = {r._mapping["id"]: _task(r, by_task.get(r._mapping["id"], ())) for r in rows}
        return [found[i] for i in ids if i in found]

    def get(self, task_id: str) -> Task | None:
        with self.db.read() as conn:
            found = self._load(conn, [task_id])
        return found[0] if found else None

    def by_public_id(self, public_id: str) -> Task | None:
        with self.db.read() as conn:
            row = conn.execute(select(tasks.c.id).where(tasks.c.public_id == public_id)).first()
            if row is None:
                return None
            found = self._load(conn, [row[0]])
        return found[0] if found else None

    def children(self, parent_id: str) -> list[Task]:
        with self.db.read() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(tasks.c.id).where(tasks.c.parent_id == parent_id).order_by(tasks.c.seq)
                ).all()
            ]
            return self._load(conn, ids)

    def page(
        self,
        *,
        key_id: str | None,
        limit: int,
        after_seq: int | None = None,
        descending: bool = True,
        dialect: str | None = None,
        statuses: Sequence[str] = (),
        model: str | None = None,
        operation: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        top_level: bool = True,
    ) -> list[Task]:
        """A page of tasks, newest first by default; `after_seq` is the cursor (the last `seq` seen).

        `key_id=None` lists every key's tasks (operators). Fetch `limit + 1` to learn `has_more`.
        """
        query = select(tasks.c.id)
        if key_id is not None:
            query = query.where(tasks.c.key_id == key_id)
        if dialect is not None:
            query = query.where(tasks.c.dialect == dialect)
        if statuses:
            query = query.where(tasks.c.status.in_(list(statuses)))
        if model is not None:
            query = query.where(tasks.c.model == model)
        if operation is not None:
            query = query.where(tasks.c.operation == operation)
        if created_after is not None:
            query = query.where(tasks.c.created_at >= created_after)
        if created_before is not None:
            query = query.where(tasks.c.created_at < created_before)
        if top_level:
            query = query.where(tasks.c.parent_id.is_(None))
        if after_seq is not None:
            query = query.where(tasks.c.seq < after_seq if descending else tasks.c.seq > after_seq)
        query = query.order_by(tasks.c.seq.desc() if descending else tasks.c.seq.asc()).limit(limit)
        with self.db.read() as conn:
            ids = [r[0] for r in conn.execute(query).all()]
            return self._load(conn, ids)

    def due(self, now: int, limit: int, exclude: Iterable[str] = ()) -> list[str]:
        """Ids of unfinished tasks whose next step is due, oldest first."""
        skip = list(exclude)
        query = (
            select(tasks.c.id)
            .where(ACTIVE_LITERAL, tasks.c.next_run_at <= now)
            .order_by(tasks.c.next_run_at)
            .limit(limit + len(skip))
        )
        with self.db.read() as conn:
            ids = [r[0] for r in conn.execute(query).all()]
        excluded = set(skip)
        return [i for i in ids if i not in excluded][:limit]

    def next_due_at(self, exclude: Iterable[str] = ()) -> int | None:
        query = select(func.min(tasks.c.next_run_at)).where(ACTIVE_LITERAL)
        if skip := list(exclude):
            query = query.where(tasks.c.id.not_in(skip))
        with self.db.read() as conn:
            value = conn.execute(query).scalar()
        return int(value) if value is not None else None

    def due_tasks(self, now: int, limit: int, exclude: Iterable[str] = ()) -> tuple[list[Task], int | None]:
        """The embedded driver's scan in one read: up to `limit` due unfinished tasks not in `exclude`,
        loaded, oldest first; and when the next of the others comes due (None: nothing is scheduled)."""
        skip = set(exclude)
        query = (
            select(tasks.c.id, tasks.c.next_run_at)
            .where(ACTIVE_LITERAL, tasks.c.next_run_at.is_not(None))
            .order_by(tasks.c.next_run_at)
            .limit(limit + len(skip) + 1)
        )
        with self.db.read() as conn:
            rows = [(r[0], int(r[1])) for r in conn.execute(query).all() if r[0] not in skip]
            ids = [task_id for task_id, at in rows[:limit] if at <= now]
            later = rows[len(ids)][1] if len(rows) > len(ids) else None
            return self._load(conn, ids), later

    def events(self, task_id: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(task_events).where(task_events.c.task_id == task_id).order_by(task_events.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    # -- writes -------------------------------------------------------------------------------

    def update(
        self,
        task: Task,
        *,
        new_assets: Sequence[NewAsset] = (),
        event_detail: str | None = None,
        **changes: Any,
    ) -> Task | None:
        """Compare-and-set on `task.version`. Returns the new task, or None if someone changed it first.

        A status change writes an event row (and a webhook outbox row when the task has a callback URL);
        a child's change wakes its parent, in the same transaction.
        """
        with self.db.write() as conn:
            return self.update_in(conn, task, new_assets=new_assets, event_detail=event_detail, **changes)

    def update_in(
        self,
        conn: Connection,
        task: Task,
        *,
        new_assets: Sequence[NewAsset] = (),
        event_detail: str | None = None,
        **changes: Any,
    ) -> Task | None:
        """`update` inside a write transaction the caller holds (a group commit's)."""
        bad = set(changes) - MUTABLE
        if bad:
            raise ValueError(f"not mutable: {sorted(bad)}")
        now = now_ms()
        values = {k: (v.value if isinstance(v, Status) else v) for k, v in changes.items()}
        values.update(version=task.version + 1, updated_at=now)
        params = {f"set_{k}": v for k, v in values.items()}
        result = conn.execute(
            _update_of(frozenset(values)), {**params, "cas_id": task.id, "cas_version": task.version}
        )
        if result.rowcount != 1:
            return None
        status = values.get("status", task.status.value)
        if status != task.status.value:
            conn.execute(
                _INSERT_EVENT,
                {
                    "task_id": task.id,
                    "version": task.version + 1,
                    "status": status,
                    "progress": values.get("progress", task.progress),
                    "detail": event_detail,
                    "at": now,
                },
            )
            # The webhook outbox row commits (or not) with the change it reports.
            if enqueue_status_event(conn, task, status, task.version + 1, now) and self.queue:
                self.queue.webhook_due(conn, task.id, now)
            if self.hooks is not None and Status(status).terminal:
                # Money moves with the change that causes it: refund, or settle on success.
                before = replace(task, channel=values.get("channel", task.channel))
                self.hooks.finished(conn, before, Status(status), [*task.assets, *new_assets], now)
        for a in new_assets:
            conn.execute(
                insert(assets).values(
                    task_id=task.id,
                    role=a.role,
                    idx=a.index,
                    key=a.key,
                    mime=a.mime,
                    bytes=a.bytes,
                    sha256=a.sha256,
                    width=a.width,
                    height=a.height,
                    duration=a.duration,
                    created_at=now,
                )
            )
        if task.parent_id is not None:
            woken = conn.execute(
                update(tasks)
                .where(tasks.c.id == task.parent_id, tasks.c.status.in_(ACTIVE_STATUSES))
                .values(next_run_at=now)
            )
            if woken.rowcount:
                self._due(conn, task.parent_id, now)
        if values.get("next_run_at") is not None and not Status(status).terminal:
            self._due(conn, task.id, int(values["next_run_at"]))
        if self.announce:
            publish(conn, task.id, task.version + 1)
        if new_assets:
            return self._load(conn, [task.id])[0]  # the assets' ids come from the database
        # Nothing else in this transaction changes the row: the new task is the old one plus `changes`
        # (one read less on every progress write).
        fields: dict[str, Any] = {k: Status(v) if k == "status" else v for k, v in changes.items()}
        return replace(task, **fields, version=task.version + 1, updated_at=now)

    def schedule(self, task: Task, next_run_at: int) -> None:
        """Move a task's next step without a state change (no version bump: nothing visible changed)."""
        with self.db.write() as conn:
            self.schedule_in(conn, task, next_run_at)

    def schedule_in(self, conn: Connection, task: Task, next_run_at: int) -> None:
        """`schedule` inside a write transaction the caller holds."""
        moved = conn.execute(
            _SCHEDULE, {"cas_id": task.id, "cas_version": task.version, "set_next_run_at": next_run_at}
        )
        if moved.rowcount:
            self._due(conn, task.id, next_run_at)

    def delete(self, task: Task) -> list[Task]:
        """Remove a task and its children with every row that refers to them (assets, events, and any
        table with a foreign key to tasks.id), in one transaction. Returns the removed tasks.

        The caller stops the task first (a step still running then loses its compare-and-set)."""
        with self.db.write() as conn:
            ids = [task.id] + [
                r[0] for r in conn.execute(select(tasks.c.id).where(tasks.c.parent_id == task.id)).all()
            ]
            removed = self._load(conn, ids)
            if self.hooks is not None:
                self.hooks.deleted(conn, removed, now_ms())
            conn.execute(delete(task_events).where(task_events.c.task_id.in_(ids)))
            for table in reversed(metadata.sorted_tables):
                for fk in table.foreign_keys:
                    if fk.column is tasks.c.id:
                        conn.execute(delete(table).where(fk.parent.in_(ids)))
            conn.execute(delete(tasks).where(tasks.c.id.in_(ids)))
            if self.announce:
                for gone in removed:
                    publish(conn, gone.id, DELETED)
        return removed
