"""The webhook outbox, its delivery log, and each key's webhook settings.

An event row is written by `enqueue_status_event` inside `TaskRepo.update`'s transaction, so a status
change and its webhook are committed together or not at all. The delivery loop claims due rows with a
compare-and-set lease (safe with several processes on PostgreSQL; a crashed delivery is retried when the
lease ends: at-least-once), and records every attempt with the event's outcome in one transaction.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Row, and_, exists, func, insert, or_, select, update
from ulid import ULID

from mediarelay.domain import Status, Task, now_ms
from mediarelay.store.database import Database
from mediarelay.store.schema import api_keys, webhook_attempts, webhook_events

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)

# [MR] What a client sees change: finalizing is still "running" in every dialect, and "queued" is what
# the submit answer already said, so neither makes an event of its own.
PUBLISHED: dict[str, str] = {
    Status.QUEUED.value: "queued",
    Status.RUNNING.value: "running",
    Status.FINALIZING.value: "running",
    Status.SUCCEEDED.value: "succeeded",
    Status.FAILED.value: "failed",
    Status.CANCELED.value: "canceled",
}
EVENT_TYPES: dict[str, str] = {
    "running": "task.running",
    "succeeded": "task.succeeded",
    "failed": "task.failed",
    "canceled": "task.canceled",
}


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id() -> str:
    return f"msg_{ULID()}"


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: int
    duration_ms: int
    http_status: int | None
    error: str | None
    response: str | None


@dataclass(frozen=True)
class WebhookEvent:
    seq: int
    id: str
    task_id: str
    public_id: str
    dialect: str
    key_id: str
    type: str
    task_status: str
    version: int
    url: str
    payload: str | None
    state: str
    attempts: int
    next_attempt_at: int | None
    delivered_at: int | None
    created_at: int
    updated_at: int
    log: tuple[Attempt, ...] = field(default=())


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt, as the delivery loop decided it."""

    attempt: int
    at: int
    duration_ms: int
    state: str  # pending (retry at next_attempt_at) | delivered | failed
    next_attempt_at: int | None = None
    http_status: int | None = None
    error: str | None = None
    response: str | None = None


def _event(row: Row[Any], log: Sequence[Attempt] = ()) -> WebhookEvent:
    m = row._mapping
    return WebhookEvent(
        seq=m["seq"],
        id=m["id"],
        task_id=m["task_id"],
        public_id=m["public_id"],
        dialect=m["dialect"],
        key_id=m["key_id"],
        type=m["type"],
        task_status=m["task_status"],
        version=m["version"],
        url=m["url"],
        payload=m["payload"],
        state=m["state"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        delivered_at=m["delivered_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        log=tuple(log),
    )


def enqueue_status_event(conn: Connection, task: Task, new_status: str, version: int, now: int) -> bool:
    """Add the outbox row for a status change, in the caller's transaction (called by `TaskRepo.update`);
    True if one was added.

    Only top-level tasks send webhooks: a fan-out child's changes reach the client through its parent's
    view, and the parent's own status changes are events. The URL is the submission's, else the key's
    default, fixed when the event is created.
    """
    if task.parent_id is not None:
        return False
    published = PUBLISHED.get(new_status)
    kind = EVENT_TYPES.get(published or "")
    if kind is None or published == PUBLISHED.get(task.status.value):
        return False
    url = (
        task.params.get("webhook_url")
        or conn.execute(select(api_keys.c.webhook_url).where(api_keys.c.id == task.key_id)).scalar()
    )
    if not url:
        return False
    conn.execute(
        insert(webhook_events).values(
            id=new_event_id(),
            task_id=task.id,
            public_id=task.public_id,
            dialect=task.dialect,
            key_id=task.key_id,
            type=kind,
            task_status=new_status,
            version=version,
            url=url,
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    return True


def _deliverable() -> Any:
    """Pending rows with no earlier pending row of the same task: one task's events go out in order."""
    earlier = webhook_events.alias("earlier")
    return and_(
        webhook_events.c.state == PENDING,
        ~exists().where(
            earlier.c.task_id == webhook_events.c.task_id,
            earlier.c.state == PENDING,
            earlier.c.seq < webhook_events.c.seq,
        ),
    )


class WebhookQueue(Protocol):
    """Scaled-out mode's job queue (`engine/jobs.py`): told in the writing transaction when a task's
    webhook event becomes due, so a worker's delivery job exists exactly when the row does."""

    def webhook_due(self, conn: Connection, task_id: str, at: int) -> None: ...


class WebhookRepo:
    def __init__(self, db: Database, queue: WebhookQueue | None = None) -> None:
        self.db = db
        self.queue = queue

    # -- each key's settings --------------------------------------------------------------------

    def find_key(self, ident: str) -> str | None:
        """A key's id from its id or printed prefix (the CLI's way of naming keys)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(or_(api_keys.c.id == ident, api_keys.c.prefix == ident))
            ).first()
        return row[0] if row else None

    def key_settings(self, key_id: str) -> tuple[str | None, str]:
        """(default URL, signing secret) of a key; a key without a secret (made by an older version
        while this one ran) gets one now."""
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys.c.webhook_url, api_keys.c.webhook_secret).where(api_keys.c.id == key_id)
            ).first()
        if row is None:
            raise KeyError(key_id)
        if row[1]:
            return row[0], row[1]
        with self.db.write() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.webhook_secret.is_(None))
                .values(webhook_secret=new_secret())
            )
        return self.key_settings(key_id)

    def set_key_settings(
        self, key_id: str, *, url: str | None, keep_url: bool = False, rotate: bool = False
    ) -> tuple[str | None, str]:
        """Set (or clear, with None) a key's default URL and optionally rotate its secret."""
        values: dict[str, Any] = {}
        if not keep_url:
            values["webhook_url"] = url
        if rotate:
            values["webhook_secret"] = new_secret()
        if values:
            with self.db.write() as conn:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
        return self.key_settings(key_id)

    # -- the outbox -----------------------------------------------------------------------------

    def for_task_version(self, task_id: str, version: int) -> WebhookEvent | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(webhook_events).where(
                    webhook_events.c.task_id == task_id, webhook_events.c.version == version
                )
            ).first()
        return _event(row) if row else None

    def set_payload(self, seq: int, payload: str) -> str:
        """Freeze an event's body (first writer wins); returns the body that is stored."""
        with self.db.write() as conn:
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.seq == seq, webhook_events.c.payload.is_(None))
                .values(payload=payload)
            )
            stored = conn.execute(
                select(webhook_events.c.payload).where(webhook_events.c.seq == seq)
            ).scalar()
        return str(stored)

    def claim_due(
        self, now: int, limit: int, lease_until: int, *, task_id: str | None = None
    ) -> list[WebhookEvent]:
        """Take up to `limit` due events (of one task, if given) by moving their next attempt to
        `lease_until` (a CAS per row: another process that scanned the same rows takes none of them twice)."""
        query = (
            select(webhook_events)
            .where(_deliverable(), webhook_events.c.next_attempt_at <= now)
            .order_by(webhook_events.c.next_attempt_at)
            .limit(limit)
        )
        if task_id is not None:
            query = query.where(webhook_events.c.task_id == task_id)
        claimed = []
        with self.db.write() as conn:
            for row in conn.execute(query).all():
                event = _event(row)
                result = conn.execute(
                    update(webhook_events)
                    .where(
                        webhook_events.c.seq == event.seq,
                        webhook_events.c.state == PENDING,
                        webhook_events.c.next_attempt_at == event.next_attempt_at,
                    )
                    .values(next_attempt_at=lease_until)
                )
                if result.rowcount == 1:
                    claimed.append(event)
        return claimed

    def next_due_at(self, task_id: str | None = None) -> int | None:
        """When the next deliverable event (of one task, if given) is due; None if there is none."""
        query = select(func.min(webhook_events.c.next_attempt_at)).where(_deliverable())
        if task_id is not None:
            query = query.where(webhook_events.c.task_id == task_id)
        with self.db.read() as conn:
            value = conn.execute(query).scalar()
        return int(value) if value is not None else None

    def record(self, event: WebhookEvent, outcome: Outcome) -> bool:
        """Log one attempt and apply its outcome; False if this attempt was already recorded."""
        with self.db.write() as conn:
            result = conn.execute(
                update(webhook_events)
                .where(webhook_events.c.seq == event.seq, webhook_events.c.attempts == outcome.attempt - 1)
                .values(
                    attempts=outcome.attempt,
                    state=outcome.state,
                    next_attempt_at=outcome.next_attempt_at if outcome.state == PENDING else None,
                    delivered_at=outcome.at if outcome.state == DELIVERED else event.delivered_at,
                    updated_at=now_ms(),
                )
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                insert(webhook_attempts).values(
                    event_seq=event.seq,
                    attempt=outcome.attempt,
                    at=outcome.at,
                    duration_ms=outcome.duration_ms,
                    http_status=outcome.http_status,
                    error=outcome.error,
                    response=outcome.response,
                )
            )
        return True

    def redeliver(self, event_id: str) -> bool:
        """Queue one more attempt of a finished event (the receiver lost it, or was fixed)."""
        now = now_ms()
        with self.db.write() as conn:
            task_id = conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id == event_id, webhook_events.c.state != PENDING)
                .values(state=PENDING, next_attempt_at=now, updated_at=now)
                .returning(webhook_events.c.task_id)
            ).scalar()
            if task_id is not None and self.queue is not None:
                self.queue.webhook_due(conn, task_id, now)
        return task_id is not None

    # -- the delivery log -----------------------------------------------------------------------

    def _with_log(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[WebhookEvent]:
        seqs = [r._mapping["seq"] for r in rows]
        logs: dict[int, list[Attempt]] = {}
        if seqs:
            for a in conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.event_seq.in_(seqs))
                .order_by(webhook_attempts.c.event_seq, webhook_attempts.c.attempt, webhook_attempts.c.id)
            ).all():
                m = a._mapping
                logs.setdefault(m["event_seq"], []).append(
                    Attempt(
                        attempt=m["attempt"],
                        at=m["at"],
                        duration_ms=m["duration_ms"],
                        http_status=m["http_status"],
                        error=m["error"],
                        response=m["response"],
                    )
                )
        return [_event(r, logs.get(r._mapping["seq"], ())) for r in rows]

    def get(self, event_id: str) -> WebhookEvent | None:
        with self.db.read() as conn:
            row = conn.execute(select(webhook_events).where(webhook_events.c.id == event_id)).first()
            return self._with_log(conn, [row])[0] if row else None

    def page(
        self,
        *,
        key_id: str | None,
        limit: int,
        after: str | None = None,
        task_id: str | None = None,
        state: str | None = None,
    ) -> list[WebhookEvent]:
        """Events newest first, with their attempts; `after` is the id of the last event seen.
        `key_id=None` lists every key's (operators); `task_id` matches the task id or its public id."""
        query = select(webhook_events)
        if key_id is not None:
            query = query.where(webhook_events.c.key_id == key_id)
        if task_id is not None:
            query = query.where(
                or_(webhook_events.c.task_id == task_id, webhook_events.c.public_id == task_id)
            )
        if state is not None:
            query = query.where(webhook_events.c.state == state)
        with self.db.read() as conn:
            if after is not None:
                cursor = conn.execute(
                    select(webhook_events.c.seq).where(webhook_events.c.id == after)
                ).scalar()
                if cursor is None:
                    return []
                query = query.where(webhook_events.c.seq < cursor)
            rows = conn.execute(query.order_by(webhook_events.c.seq.desc()).limit(limit)).all()
            return self._with_log(conn, rows)
