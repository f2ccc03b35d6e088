"""The task store on both backends: compare-and-set, events, due scan, fan-out wake-ups, keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from mediarelay.domain import Operation, Status, TaskSpec, now_ms
from mediarelay.store import database
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.tasks import NewAsset, TaskRepo

PG_ADMIN = os.environ.get("MEDIARELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        name = None
    else:
        if not pg_available():
            pytest.skip("no PostgreSQL server reachable at MEDIARELAY_TEST_PG")
        name = f"mr_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    database.upgrade(url)
    store = Database(url)
    yield store
    store.dispose()
    if name:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def spec(public_id: str, children: tuple[TaskSpec, ...] = ()) -> TaskSpec:
    params = {"prompt": "a cat", "fanout": len(children)} if children else {"prompt": "a cat"}
    return TaskSpec(
        dialect="avatar",
        model="m",
        operation=Operation.TEXT_TO_VIDEO,
        params=params,
        request={"prompt": "a cat", "n": [1, 2]},
        public_id=public_id,
        children=children,
    )


def test_create_get_roundtrip(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    task = repo.create(spec("pub-1"), key.id)
    assert task.status is Status.QUEUED and task.version == 1 and task.progress == 0
    assert task.request == {"prompt": "a cat", "n": [1, 2]}
    assert repo.by_public_id("pub-1") == task == repo.get(task.id)
    assert repo.by_public_id("nope") is None
    assert [e["status"] for e in repo.events(task.id)] == ["queued"]


def test_compare_and_set_lets_exactly_one_writer_win(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    task = repo.create(spec("pub-2"), key.id)
    first = repo.update(task, status=Status.RUNNING, progress=10)
    assert first is not None and first.version == 2 and first.status is Status.RUNNING
    # A second writer holding the old version loses and changes nothing.
    assert repo.update(task, status=Status.CANCELED) is None
    assert repo.get(task.id) == first
    assert [e["status"] for e in repo.events(task.id)] == ["queued", "running"]
    # Progress alone bumps the version but writes no event.
    second = repo.update(first, progress=50)
    assert second is not None and second.version == 3
    assert len(repo.events(task.id)) == 2
    with pytest.raises(ValueError, match="not mutable"):
        repo.update(second, public_id="hijack")


def test_assets_are_attached_with_the_final_transition(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    task = repo.create(spec("pub-3"), key.id)
    asset = NewAsset(role="video", key=f"{task.id}/video-0.mp4", mime="video/mp4", bytes=10, sha256="a" * 64)
    done = repo.update(task, new_assets=[asset], status=Status.SUCCEEDED, finished_at=now_ms())
    assert done is not None and [a.key for a in done.assets] == [asset.key]
    assert isinstance(done.assets[0].id, int)
    # A losing writer does not attach its assets.
    assert repo.update(task, new_assets=[asset], status=Status.SUCCEEDED) is None
    assert len(repo.get(task.id).assets) == 1  # type: ignore[union-attr]


def test_due_scan_and_schedule(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    a = repo.create(spec("pub-a"), key.id)
    b = repo.create(spec("pub-b"), key.id)
    now = now_ms()
    assert set(repo.due(now + 1, 10)) == {a.id, b.id}
    assert repo.due(now + 1, 10, exclude=[a.id]) == [b.id]
    repo.schedule(a, now + 60_000)
    assert repo.due(now + 1, 10) == [b.id]
    assert repo.next_due_at(exclude=[b.id]) == now + 60_000
    done = repo.update(repo.get(b.id), status=Status.FAILED)  # type: ignore[arg-type]
    assert done is not None and repo.due(now + 1, 10) == []


def test_fanout_child_change_wakes_parent_in_the_same_transaction(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    parent = repo.create(spec("parent", children=(spec("child-1"), spec("child-2"))), key.id)
    assert parent.next_run_at is None  # a parent runs nothing itself
    kids = repo.children(parent.id)
    assert [k.public_id for k in kids] == ["child-1", "child-2"]
    assert all(k.parent_id == parent.id and k.next_run_at is not None for k in kids)
    repo.update(kids[0], status=Status.RUNNING)
    woken = repo.get(parent.id)
    assert woken is not None and woken.next_run_at is not None and woken.version == 1


def test_seq_is_unique_and_increasing(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    seqs = [repo.create(spec(f"s-{i}"), key.id).seq for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def test_public_ids_are_unique(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    repo.create(spec("dup"), key.id)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        repo.create(spec("dup"), key.id)
    with db.read() as conn:
        assert conn.execute(text("select count(*) from tasks where public_id='dup'")).scalar() == 1


def test_keys_hash_lookup_and_revoke(db: Database) -> None:
    keys = KeyRepo(db)
    key, secret = keys.create("k", is_admin=True)
    assert keys.has_admin()
    assert keys.by_secret(secret) == key
    assert keys.by_secret(secret + "x") is None
    assert keys.revoke(key.prefix) and not keys.revoke(key.prefix)
    found = keys.by_secret(secret)
    assert found is not None and not found.active
    assert not keys.has_admin()


def test_list_pages_with_a_cursor_and_filters(db: Database) -> None:
    keys = KeyRepo(db)
    mine, _ = keys.create("mine")
    theirs, _ = keys.create("theirs")
    repo = TaskRepo(db)
    made = [repo.create(spec(f"l-{i}"), mine.id) for i in range(5)]
    repo.create(spec("other"), theirs.id)
    repo.create(spec("batch", children=(spec("kid"),)), mine.id)
    first = repo.page(key_id=mine.id, limit=2, dialect="avatar")
    assert [t.public_id for t in first] == ["batch", "l-4"]  # newest first; children hidden
    second = repo.page(key_id=mine.id, limit=10, after_seq=first[-1].seq)
    assert [t.public_id for t in second] == ["l-3", "l-2", "l-1", "l-0"]
    oldest = repo.page(key_id=mine.id, limit=2, descending=False)
    assert [t.public_id for t in oldest] == ["l-0", "l-1"]
    repo.update(made[0], status=Status.FAILED)
    assert [t.public_id for t in repo.page(key_id=mine.id, limit=10, statuses=["failed"])] == ["l-0"]
    assert repo.page(key_id=mine.id, limit=10, dialect="pika") == []
    everyone = repo.page(key_id=None, limit=100, top_level=False)
    assert {t.public_id for t in everyone} >= {"other", "kid"}
