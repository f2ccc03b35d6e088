"""Channels in the database: definitions made through the admin API, and the dispatch claim that keeps a
channel's concurrency limit across every node of a deployment.

The claim is one transaction: count the tasks the channel's upstream is working on, and only if that
is below the limit mark the task as being submitted there (channel, credential, "submit attempted"),
as a compare-and-set on its version. On SQLite the one-writer lock serialises claims; on PostgreSQL a
transaction-scoped advisory lock per channel does, so two nodes cannot both take the last slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, text, update

from mediarelay.domain import Status, Task, now_ms
from mediarelay.secrets import SecretBox
from mediarelay.store.changes import publish
from mediarelay.store.database import Database
from mediarelay.store.schema import BUSY, channels, tasks

BUSY_STATUSES = (Status.QUEUED.value, Status.RUNNING.value)
# As literal SQL: SQLite uses the partial index ix_tasks_channel_busy only when the query repeats its WHERE
# (with bound parameters each claim would count through the whole table).
BUSY_LITERAL = text(BUSY)


@dataclass(frozen=True)
class StoredChannel:
    name: str
    config: dict[str, Any]
    created_at: int
    updated_at: int


# Prebuilt: every dispatch claims (building the statements cost more than running them).
_BUSY_ON = select(func.count()).where(
    tasks.c.channel == bindparam("on_channel"), BUSY_LITERAL, tasks.c.id != bindparam("task_id")
)
_CLAIM = (
    update(tasks)
    .where(and_(tasks.c.id == bindparam("task_id"), tasks.c.version == bindparam("seen_version")))
    .values(
        channel=bindparam("new_channel"),
        upstream=bindparam("new_upstream", type_=tasks.c.upstream.type),
        version=bindparam("new_version"),
        updated_at=bindparam("now"),
    )
)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a channel name."""
    return int.from_bytes(
        hashlib.blake2b(f"mediarelay-channel:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


class ChannelRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- definitions ----------------------------------------------------------------------------------

    def list(self) -> list[StoredChannel]:
        with self.db.read() as conn:
            rows = conn.execute(select(channels).order_by(channels.c.name)).all()
        return [StoredChannel(r.name, dict(r.config), r.created_at, r.updated_at) for r in rows]

    def get(self, name: str) -> StoredChannel | None:
        with self.db.read() as conn:
            r = conn.execute(select(channels).where(channels.c.name == name)).first()
        return StoredChannel(r.name, dict(r.config), r.created_at, r.updated_at) if r else None

    def put(self, name: str, config: dict[str, Any]) -> StoredChannel:
        """Create or replace a definition."""
        now = now_ms()
        with self.db.write() as conn:
            found = conn.execute(select(channels.c.created_at).where(channels.c.name == name)).first()
            if found is None:
                conn.execute(
                    insert(channels).values(name=name, config=config, created_at=now, updated_at=now)
                )
                created = now
            else:
                conn.execute(
                    update(channels).where(channels.c.name == name).values(config=config, updated_at=now)
                )
                created = found[0]
        return StoredChannel(name, config, created, now)

    def seal(self, box: SecretBox) -> int:
        """Encrypt under the master key's first key every stored secret that is not yet: plaintext
        (written by hand or by a build before encryption) and tokens of an older key (rotation).
        Run at every start; idempotent, so nodes starting together do no harm. Raises MasterKeyError
        (naming the channel and label, never the secret) when a token matches none of the keys."""
        changed = 0
        for row in self.list():
            stored: dict[str, str] = dict(row.config.get("secrets") or {})
            fresh = {
                label: value if box.current(value) else box.reseal(value, f"secret {label!r} of {row.name!r}")
                for label, value in stored.items()
            }
            if fresh != stored:
                with self.db.write() as conn:
                    conn.execute(
                        update(channels)
                        .where(channels.c.name == row.name, channels.c.updated_at == row.updated_at)
                        .values(config={**row.config, "secrets": fresh})
                    )
                changed += 1
        return changed

    def remove(self, name: str) -> bool:
        with self.db.write() as conn:
            return bool(conn.execute(delete(channels).where(channels.c.name == name)).rowcount)

    def stamp(self) -> tuple[int, int]:
        """(count, newest change): different whenever any node changed a definition."""
        with self.db.read() as conn:
            count, newest = conn.execute(select(func.count(), func.max(channels.c.updated_at))).one()
        return int(count), int(newest or 0)

    # -- load ------------------------------------------------------------------------------------------

    def busy(self) -> dict[str, int]:
        """Tasks each channel's upstream is working on (queued or running there), deployment-wide."""
        query = (
            select(tasks.c.channel, func.count())
            .where(tasks.c.channel.is_not(None), BUSY_LITERAL)
            .group_by(tasks.c.channel)
        )
        with self.db.read() as conn:
            return {name: int(n) for name, n in conn.execute(query).all()}

    def claim(self, task: Task, channel: str, limit: int, upstream: dict[str, Any]) -> bool | None:
        """`claim_in` in a transaction of its own."""
        with self.db.write() as conn:
            return self.claim_in(conn, task, channel, limit, upstream, now_ms())

    def claim_in(
        self, conn: Connection, task: Task, channel: str, limit: int, upstream: dict[str, Any], now: int
    ) -> bool | None:
        """Mark `task` as being submitted to `channel` if it has a free slot, inside a write transaction
        the caller holds (on SQLite the group commit shares it: the count sees earlier claims of the
        same batch).

        True: claimed (the task's version went up by one, `updated_at` is `now`). False: the channel is
        full. None: the task changed since it was read (someone else acted on it: leave it)."""
        if not self.db.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(channel)})
        busy = conn.execute(_BUSY_ON, {"on_channel": channel, "task_id": task.id}).scalar_one()
        if busy >= limit:
            return False
        done = conn.execute(
            _CLAIM,
            {
                "task_id": task.id,
                "seen_version": task.version,
                "new_channel": channel,
                "new_upstream": upstream,
                "new_version": task.version + 1,
                "now": now,
            },
        )
        if done.rowcount != 1:
            return None
        if not self.db.is_sqlite:
            publish(conn, task.id, task.version + 1)  # a change like any other: API nodes hear it
        return True
