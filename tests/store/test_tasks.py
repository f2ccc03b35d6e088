"""The task store on both backends: compare-and-set, events, due scan, fan-out wake-ups, keys."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from sqlalchemy import select, text

from mediarelay.domain import Operation, Status, TaskSpec, now_ms
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import webhook_events
from mediarelay.store.tasks import NewAsset, TaskRepo
from mediarelay.store.webhooks import DELIVERED, FAILED, PENDING, Outcome, WebhookRepo


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


# -- the webhook outbox (written by TaskRepo.update, read by the delivery loop) -----------------------


def hooked(public_id: str, url: str | None = "https://hooks.example.com/x", **kw: object) -> TaskSpec:
    base = spec(public_id, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(base, params={**base.params, "webhook_url": url} if url else base.params)


def outbox(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        rows = conn.execute(select(webhook_events).order_by(webhook_events.c.seq)).all()
    return [dict(r._mapping) for r in rows]


def test_status_changes_write_outbox_rows_in_the_same_transaction(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    task = repo.create(hooked("wh-1"), key.id)
    assert outbox(db) == []  # queued makes no event: the submit answer said it
    running = repo.update(task, status=Status.RUNNING, progress=5)
    assert running is not None
    assert [(e["type"], e["version"], e["state"]) for e in outbox(db)] == [("task.running", 2, "pending")]
    event = outbox(db)[0]
    assert str(event["id"]).startswith("msg_") and event["url"] == "https://hooks.example.com/x"
    assert event["public_id"] == "wh-1" and event["key_id"] == key.id and event["payload"] is None
    # A losing compare-and-set writes no outbox row either.
    assert repo.update(task, status=Status.CANCELED) is None
    assert len(outbox(db)) == 1
    # Progress, and finalizing (still "running" for clients), make no event.
    moved = repo.update(running, progress=50)
    assert moved is not None
    finalizing = repo.update(moved, status=Status.FINALIZING)
    assert finalizing is not None and len(outbox(db)) == 1
    done = repo.update(finalizing, status=Status.SUCCEEDED, finished_at=now_ms())
    assert done is not None
    assert [(e["type"], e["task_status"], e["version"]) for e in outbox(db)] == [
        ("task.running", "running", 2),
        ("task.succeeded", "succeeded", 5),
    ]


def test_outbox_url_comes_from_the_task_or_the_key_default(db: Database) -> None:
    keys, hooks, repo = KeyRepo(db), WebhookRepo(db), TaskRepo(db)
    plain, _ = keys.create("plain")
    with_default, _ = keys.create("default", webhook_url="https://default.example.com/h")
    quiet = repo.create(hooked("q", url=None), plain.id)
    assert repo.update(quiet, status=Status.FAILED) is not None
    assert outbox(db) == []  # no URL anywhere: no event
    fallback = repo.create(hooked("d", url=None), with_default.id)
    direct = repo.create(hooked("t", url="https://task.example.com/h"), with_default.id)
    assert repo.update(fallback, status=Status.FINALIZING) is not None  # queued → finalizing: running
    assert repo.update(direct, status=Status.CANCELED) is not None
    assert [(e["public_id"], e["type"], e["url"]) for e in outbox(db)] == [
        ("d", "task.running", "https://default.example.com/h"),
        ("t", "task.canceled", "https://task.example.com/h"),
    ]
    # Settings: every key has a secret from creation; the default can be changed and the secret rotated.
    url, secret = hooks.key_settings(plain.id)
    assert url is None and secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    url2, secret2 = hooks.set_key_settings(plain.id, url="https://new.example.com", rotate=True)
    assert url2 == "https://new.example.com" and secret2 != secret
    assert hooks.set_key_settings(plain.id, url=None, keep_url=True) == (url2, secret2)
    assert hooks.set_key_settings(plain.id, url=None) == (None, secret2)
    assert hooks.find_key(plain.prefix) == plain.id and hooks.find_key("nope") is None


def test_fanout_children_send_no_events_their_parent_does(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    parent = repo.create(hooked("p", children=(hooked("c1"), hooked("c2"))), key.id)
    for kid in repo.children(parent.id):
        assert repo.update(kid, status=Status.RUNNING) is not None
    assert outbox(db) == []
    assert repo.update(parent, status=Status.RUNNING) is not None
    assert [(e["public_id"], e["type"]) for e in outbox(db)] == [("p", "task.running")]


def test_delivery_claims_in_task_order_and_records_attempts(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo, hooks = TaskRepo(db), WebhookRepo(db)
    task = repo.create(hooked("o-1"), key.id)
    running = repo.update(task, status=Status.RUNNING)
    assert running is not None and repo.update(running, status=Status.FAILED) is not None
    now = now_ms()
    first = hooks.claim_due(now + 1, 10, lease_until=now + 60_000)
    assert [e.type for e in first] == ["task.running"]  # the failed event waits for it
    assert hooks.claim_due(now + 1, 10, lease_until=now + 60_000) == []  # leased: nobody takes it twice
    assert hooks.next_due_at() == now + 60_000
    assert hooks.set_payload(first[0].seq, '{"a":1}') == '{"a":1}'
    assert hooks.set_payload(first[0].seq, '{"b":2}') == '{"a":1}'  # frozen: first writer wins
    retry = Outcome(
        attempt=1, at=now, duration_ms=3, state=PENDING, next_attempt_at=now + 10, http_status=500
    )
    assert hooks.record(first[0], retry)
    assert not hooks.record(first[0], retry)  # an attempt is recorded once
    again = hooks.claim_due(now + 20, 10, lease_until=now + 60_000)
    assert [(e.type, e.attempts) for e in again] == [("task.running", 1)]
    ok = Outcome(attempt=2, at=now + 20, duration_ms=4, state=DELIVERED, http_status=204, response="")
    assert hooks.record(again[0], ok)
    nxt = hooks.claim_due(now + 20, 10, lease_until=now + 60_000)
    assert [e.type for e in nxt] == ["task.failed"]
    gone = Outcome(attempt=1, at=now + 30, duration_ms=1, state=FAILED, error="blocked")
    assert hooks.record(nxt[0], gone)
    assert hooks.next_due_at() is None
    log = hooks.page(key_id=key.id, limit=10)
    assert [(e.type, e.state, [a.http_status for a in e.log]) for e in log] == [
        ("task.failed", "failed", [None]),
        ("task.running", "delivered", [500, 204]),
    ]
    assert log[1].delivered_at == now + 20 and log[0].log[0].error == "blocked"
    assert [e.type for e in hooks.page(key_id=key.id, limit=10, after=log[0].id)] == ["task.running"]
    assert [e.type for e in hooks.page(key_id=None, limit=10, state="failed", task_id="o-1")] == [
        "task.failed"
    ]
    assert hooks.page(key_id="someone-else", limit=10) == []
    assert hooks.redeliver(log[0].id) and not hooks.redeliver(log[0].id)
    assert [e.type for e in hooks.claim_due(now_ms() + 1, 10, lease_until=now + 60_000)] == ["task.failed"]


def test_delete_removes_the_task_its_children_and_their_rows(db: Database) -> None:
    key, _ = KeyRepo(db).create("k")
    repo = TaskRepo(db)
    keep = repo.create(spec("keep"), key.id)
    parent = repo.create(spec("gone", children=(spec("gone-1"), spec("gone-2"))), key.id)
    kids = repo.children(parent.id)
    asset = NewAsset(
        role="video", key=f"{kids[0].id}/video-0.mp4", mime="video/mp4", bytes=10, sha256="a" * 64
    )
    assert repo.update(kids[0], new_assets=[asset], status=Status.SUCCEEDED) is not None
    removed = repo.delete(parent)
    assert {t.public_id for t in removed} == {"gone", "gone-1", "gone-2"}
    assert removed[0].id == parent.id
    for task in removed:
        assert repo.get(task.id) is None and repo.events(task.id) == []
    with db.read() as conn:
        assert conn.execute(text("select count(*) from assets")).scalar() == 0
    assert repo.get(keep.id) == keep and [t.public_id for t in repo.page(key_id=key.id, limit=10)] == ["keep"]
    assert repo.update(kids[1], status=Status.RUNNING) is None  # a step still running loses its write
