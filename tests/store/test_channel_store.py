"""Channels in the database, on SQLite and PostgreSQL: admin definitions, and the dispatch claim that
keeps a channel's concurrency limit for the whole deployment (many threads claiming at once)."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mediarelay.domain import Operation, Status, TaskSpec
from mediarelay.store.channels import ChannelRepo
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import metadata
from mediarelay.store.tasks import TaskRepo


def new_tasks(db: Database, n: int) -> list:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    spec = TaskSpec(dialect="native", model="m", operation=Operation.TEXT_TO_VIDEO, params={}, request={}, public_id="")
    return [repo.create(TaskSpec(**{**spec.__dict__, "public_id": f"p-{i}"}), key.id) for i in range(n)]


def test_migration_matches_the_schema_for_channels(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    mine = [d for d in diffs if "channels" in repr(d) or "ix_tasks_channel_busy" in repr(d)]
    assert mine == []


def test_definitions(db: Database) -> None:
    repo = ChannelRepo(db)
    assert repo.list() == [] and repo.stamp() == (0, 0)
    repo.put("a", {"type": "sandbox", "priority": 3})
    first = repo.stamp()
    repo.put("a", {"type": "sandbox", "priority": 4})
    assert repo.get("a").config == {"type": "sandbox", "priority": 4}
    assert repo.stamp() != first or repo.stamp()[1] >= first[1]
    assert repo.remove("a") and not repo.remove("a") and repo.stamp()[0] == 0


def test_claims_keep_the_limit_under_concurrency(db: Database) -> None:
    tasks = new_tasks(db, 24)
    repo, claims = TaskRepo(db), ChannelRepo(db)
    results: list[bool | None] = []
    lock = threading.Lock()

    def claim(task: object) -> None:
        got = claims.claim(task, "vendor", 5, {"submit": {"channel": "vendor"}})  # type: ignore[arg-type]
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claim, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5 and results.count(False) == 19
    assert claims.busy() == {"vendor": 5}
    claimed = [t for t in (repo.get(x.id) for x in tasks) if t and t.channel == "vendor"]
    assert len(claimed) == 5 and all(t.version == 2 and t.upstream == {"submit": {"channel": "vendor"}} for t in claimed)
    # A finished task frees its slot; a stale version claims nothing.
    done = repo.update(claimed[0], status=Status.FAILED, error_code="x", finished_at=1)
    assert done is not None
    free = next(t for t in tasks if repo.get(t.id).channel is None)  # type: ignore[union-attr]
    stale = next(t for t in tasks if t.id == claimed[1].id)  # as read before its claim
    assert claims.claim(stale, "vendor", 5, {}) is None  # its version moved on
    assert claims.claim(free, "vendor", 5, {}) is True
    assert claims.busy() == {"vendor": 5}
