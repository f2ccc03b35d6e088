"""Group commit of the steps' writes: concurrent writes share transactions on SQLite, each caller gets
its own result only after the commit, and a failing write fails alone (on both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

from mediarelay.domain import Operation, Status, TaskSpec
from mediarelay.store.database import Database
from mediarelay.store.groupcommit import GroupCommit
from mediarelay.store.keys import KeyRepo
from mediarelay.store.tasks import TaskRepo


def spec(public_id: str) -> TaskSpec:
    return TaskSpec(
        dialect="native",
        model="m",
        operation=Operation.TEXT_TO_IMAGE,
        params={},
        request={},
        public_id=public_id,
    )


def counting(db: Database) -> list[int]:
    """Count the write transactions `db` opens (instance-level wrap of `Database.write`)."""
    opened: list[int] = []
    original = db.write

    @contextmanager
    def write() -> Iterator[Connection]:
        opened.append(1)
        with original() as conn:
            yield conn

    db.write = write  # type: ignore[method-assign]
    return opened


def test_concurrent_writes_share_transactions_and_each_gets_its_result(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    created = [repo.create(spec(f"p{i}"), key.id) for i in range(200)]
    opened = counting(db)
    commits = GroupCommit(db)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(commits.run(lambda conn, t=t: repo.update_in(conn, t, progress=50)) for t in created)
        )

    results = asyncio.run(main())
    assert [getattr(r, "id", None) for r in results] == [t.id for t in created]
    assert all(repo.get(t.id).progress == 50 and repo.get(t.id).version == 2 for t in created)  # type: ignore[union-attr]
    if db.is_sqlite:
        assert 1 <= len(opened) <= 2, len(opened)  # all queued before the drain loop ran: one batch
    else:
        assert len(opened) == 200  # PostgreSQL: a transaction each, from the pool


def test_a_failing_write_fails_alone(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    tasks = [repo.create(spec(f"p{i}"), key.id) for i in range(20)]
    commits = GroupCommit(db)

    def write(conn: Connection, i: int) -> object:
        if i == 7:
            repo.update_in(conn, tasks[i], progress=10)  # rolled back with the failure
            raise ValueError("boom")
        return repo.update_in(conn, tasks[i], status=Status.RUNNING)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(commits.run(lambda conn, i=i: write(conn, i)) for i in range(20)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert isinstance(results[7], ValueError)
    for i, task in enumerate(tasks):
        stored = repo.get(task.id)
        assert stored is not None
        if i == 7:
            assert (stored.status, stored.progress, stored.version) == (Status.QUEUED, 0, 1)
        else:
            assert stored.status is Status.RUNNING and stored.version == 2


def test_a_single_write_commits_at_once(db: Database) -> None:
    opened = counting(db)
    commits = GroupCommit(db)
    assert asyncio.run(commits.run(lambda conn: conn.execute(text("select 42")).scalar())) == 42
    assert len(opened) == 1
