"""Retention on both backends: old finished tasks lose their files, then their rows; nothing else does.

The sweeps run with a fixed `now`; the last test runs the cleanup loop of a real server end to end.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, insert, select

from conftest import start_server, wait_until
from mediarelay.billing.service import Billing
from mediarelay.domain import Operation, Status, Task, TaskSpec, now_ms
from mediarelay.engine.retention import DAY_MS, Retention
from mediarelay.storage.local import LocalStorage
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import (
    assets,
    task_charges,
    task_events,
    tasks,
    webhook_attempts,
    webhook_events,
)
from mediarelay.store.schema import ledger as ledger_table
from mediarelay.store.tasks import NewAsset, TaskRepo

NOW = now_ms()
OLD = NOW - 10 * DAY_MS
RECENT = NOW - 3600_000


def spec(public_id: str, children: tuple[TaskSpec, ...] = ()) -> TaskSpec:
    params = {"prompt": "x", "webhook_url": "https://example.com/hook"}
    if children:
        params["fanout"] = len(children)
    return TaskSpec(
        dialect="native",
        model="sandbox-image",
        operation=Operation.TEXT_TO_IMAGE,
        params=params,
        request={"prompt": "x"},
        public_id=public_id,
        children=children,
    )


class Fixture:
    """A store with billing hooks, local storage in tmp_path, and one key with a top-up in its ledger."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.repo = TaskRepo(db, hooks=Billing(db))
        self.storage = LocalStorage(tmp_path / "files")
        self.key, _ = KeyRepo(db).create("k")
        with db.write() as conn:
            ledger.ensure_account(conn, self.key.id, NOW)
            ledger.move(conn, self.key.id, 1000, "topup", NOW, reference="t-1")
        self.changed: list[Task] = []
        self.removed: list[Task] = []

    def finish(self, task: Task, finished_at: int, status: Status = Status.SUCCEEDED) -> Task:
        """Mark a task finished at `finished_at`, with a stored image file when it succeeded."""
        new: list[NewAsset] = []
        if status is Status.SUCCEEDED and not task.params.get("fanout"):
            src = self.storage.new_staging_path(".png")
            src.write_bytes(b"png")
            key = f"{task.id}/image-0.png"
            size, sha = self.storage.put(key, src)
            new.append(NewAsset(role="image", key=key, mime="image/png", bytes=size, sha256=sha))
        done = self.repo.update(task, new_assets=new, status=status, finished_at=finished_at)
        assert done is not None
        return done

    def make(self, public_id: str, finished_at: int | None, status: Status = Status.SUCCEEDED) -> Task:
        task = self.repo.create(spec(public_id), self.key.id)
        return task if finished_at is None else self.finish(task, finished_at, status)

    def batch(
        self, public_id: str, finished: list[int | None], parent_done: int | None
    ) -> tuple[Task, list[Task]]:
        """A fan-out parent (finished at `parent_done`, None: still running) and children finished at …"""
        parent = self.repo.create(
            spec(public_id, tuple(spec(f"{public_id}-{i}") for i in range(len(finished)))), self.key.id
        )
        kids = [
            kid if at is None else self.finish(kid, at)
            for kid, at in zip(self.repo.children(parent.id), finished, strict=True)
        ]
        if parent_done is not None:
            parent = self.finish(self.repo.get(parent.id), parent_done)  # type: ignore[arg-type]
        return parent, kids

    def retention(self, *, files_days: float | None = None, tasks_days: float | None = None) -> Retention:
        async def changed(task: Task) -> None:
            self.changed.append(task)

        return Retention(
            self.repo,
            self.storage,
            files_days=files_days,
            tasks_days=tasks_days,
            batch=2,  # several batches per pass
            changed=changed,
            removed=self.removed.append,
        )

    def count(self, table: object) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]

    def webhook_rows(self) -> list[tuple[object, ...]]:
        with self.db.read() as conn:
            return [tuple(r) for r in conn.execute(select(webhook_events).order_by(webhook_events.c.seq))]

    def books(self) -> tuple[int, int, list[tuple[object, ...]]]:
        with self.db.read() as conn:
            rows = [tuple(r) for r in conn.execute(select(task_charges).order_by(task_charges.c.task_id))]
        return self.count(ledger_table), self.count(task_charges), rows

    def has_file(self, task: Task) -> bool:
        return (self.storage.root / task.id / "image-0.png").exists()


def test_files_of_old_finished_tasks_go_and_the_rest_stays(db: Database, tmp_path: Path) -> None:
    f = Fixture(db, tmp_path)
    old = [f.make(f"old-{i}", OLD) for i in range(3)]  # two batches of two
    recent = f.make("recent", RECENT)
    active = f.make("active", None)
    old_failed = f.make("old-failed", OLD, Status.FAILED)
    parent, kids = f.batch("batch", [OLD, OLD], parent_done=OLD)
    running_parent, running_kids = f.batch("running", [OLD, None], parent_done=None)
    books = f.books()
    events = f.count(task_events)
    untouched = [f.repo.get(t.id) for t in (recent, active, old_failed, running_parent, *running_kids)]

    assert asyncio.run(f.retention(files_days=7).run_once(NOW)) == (5, 0)

    for task in [*old, *kids]:
        now = f.repo.get(task.id)
        assert now is not None and now.assets == () and now.version == task.version + 1
        assert not f.has_file(task) and not (f.storage.root / task.id).exists()
    # A finished batch's view embeds its children's files: it changed too (once per sweep batch).
    assert f.repo.get(parent.id).version > parent.version  # type: ignore[union-attr]
    assert {t.id for t in f.changed} == {t.id for t in [*old, *kids, parent]}
    assert all(t.assets == () for t in f.changed)
    # Recent and active tasks, a failed one, and the children of a batch still running keep everything.
    assert [
        f.repo.get(t.id) for t in (recent, active, old_failed, running_parent, *running_kids)
    ] == untouched
    assert f.has_file(recent) and f.has_file(running_kids[0])
    assert f.books() == books and f.count(task_events) == events and f.count(tasks) == 12

    # Idempotent: a second pass (or a second worker) finds nothing more to do.
    f.changed.clear()
    assert asyncio.run(f.retention(files_days=7).run_once(NOW)) == (0, 0)
    assert f.changed == [] and f.repo.get(old[0].id).version == old[0].version + 1  # type: ignore[union-attr]


def test_old_finished_tasks_go_with_every_row_of_theirs(db: Database, tmp_path: Path) -> None:
    f = Fixture(db, tmp_path)
    old = [f.make(f"old-{i}", OLD, status) for i, status in enumerate(list(Status)[3:])]
    parent, kids = f.batch("batch", [OLD, OLD], parent_done=OLD)
    recent = f.make("recent", RECENT)
    active = f.make("active", None)
    # A finished batch that still has a running child (a failed batch being cancelled) waits for it.
    failing, failing_kids = f.batch("failing", [OLD, None], parent_done=OLD)
    with db.write() as conn:
        seq = conn.execute(select(webhook_events.c.seq).where(webhook_events.c.task_id == old[0].id)).scalar()
        assert seq is not None
        conn.execute(insert(webhook_attempts).values(event_seq=seq, attempt=1, at=OLD, duration_ms=5))
    kept = [recent, active, failing, *failing_kids]
    kept_webhooks = [r for r in f.webhook_rows() if r[0] in {t.id for t in kept}]
    books = f.books()
    untouched = [f.repo.get(t.id) for t in kept]

    retention = f.retention(tasks_days=7)
    assert asyncio.run(retention.run_once(NOW)) == (0, 6)  # 3 old tasks, a batch of 3; files went with them

    gone = [*old, parent, *kids]
    assert {t.id for t in f.removed} == {t.id for t in gone}
    ids = [t.id for t in gone]
    with db.read() as conn:
        for table, column in (
            (tasks, tasks.c.id),
            (task_events, task_events.c.task_id),
            (assets, assets.c.task_id),
            (webhook_events, webhook_events.c.task_id),
        ):
            assert conn.execute(select(func.count()).select_from(table).where(column.in_(ids))).scalar() == 0
    assert f.count(webhook_attempts) == 0
    assert not any((f.storage.root / task_id).exists() for task_id in ids)
    assert [f.repo.get(t.id) for t in kept] == untouched
    assert f.has_file(recent) and f.has_file(failing_kids[0])
    assert [r for r in f.webhook_rows() if r[0] in {t.id for t in kept}] == kept_webhooks
    assert f.books() == books  # the ledger and every task's charge stay

    f.removed.clear()
    assert asyncio.run(retention.run_once(NOW)) == (0, 0)
    assert f.removed == [] and f.count(tasks) == len(kept)


def test_a_server_forgets_result_files_on_schedule(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        MEDIARELAY_RETENTION__FILES_DAYS="0.00001",  # under a second
        MEDIARELAY_RETENTION__INTERVAL_SECONDS="1",
    )
    try:
        with server.client(server.new_key()) as api:
            body = {
                "model": "sandbox-image",
                "operation": "text_to_image",
                "prompt": "x",
                "width": 32,
                "height": 32,
            }
            created = api.post("/v1/tasks", json=body)
            assert created.status_code in (200, 201, 202), created.text
            task_id = created.json()["id"]
            done = wait_until(
                lambda: api.get(f"/v1/tasks/{task_id}").json(),
                lambda t: t["status"] == "succeeded" and t["outputs"],
                timeout=20,
            )
            url = done["outputs"][0]["url"]
            assert httpx.get(url).status_code == 200
            wait_until(
                lambda: api.get(f"/v1/tasks/{task_id}").json(), lambda t: t["outputs"] == [], timeout=15
            )
            assert httpx.get(url).status_code == 404
            assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "succeeded"
        assert not (server.data_dir / "files" / task_id).exists()
        assert server.rows("select count(*) from assets") == [(0,)]
    finally:
        server.stop()
