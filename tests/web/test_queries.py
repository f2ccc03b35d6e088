"""The admin pages' read-only queries on both backends (SQLite and PostgreSQL): filters, time buckets,
per-channel and per-key aggregates, the retry link, spend."""

from __future__ import annotations

import uuid

from mediarelay.billing import accounts
from mediarelay.domain import Operation, Status, TaskSpec, now_ms
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.tasks import TaskRepo
from mediarelay.web import money
from mediarelay.web.queries import AdminQueries, TaskFilter


def spec(model: str, **params: object) -> TaskSpec:
    return TaskSpec(
        dialect="native",
        model=model,
        operation=Operation.TEXT_TO_VIDEO,
        params={"prompt": "a cat", **params},
        request={"model": model, "operation": "text_to_video", "prompt": "a cat"},
        public_id=f"tsk_{uuid.uuid4().hex}",
    )


def test_queries(db: Database) -> None:
    keys, repo, q = KeyRepo(db), TaskRepo(db), AdminQueries(db)
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    a1 = repo.create(spec("m1"), alice.id)
    a2 = repo.create(spec("m2"), alice.id)
    b1 = repo.create(spec("m1", retry_of=a1.id), bob.id)
    now = now_ms()
    ran = repo.update(a1, status=Status.RUNNING, channel="ch-a", upstream_id="u1", started_at=now)
    assert ran is not None
    assert repo.update(ran, status=Status.FAILED, error_code="boom", finished_at=now + 10) is not None
    ran2 = repo.update(a2, status=Status.RUNNING, channel="ch-b", upstream_id="u2", started_at=now)
    assert ran2 is not None
    assert repo.update(ran2, status=Status.SUCCEEDED, progress=100, finished_at=ran2.created_at + 1500)

    def ids(flt: TaskFilter, **kw: int) -> list[str]:
        return [r.id for r in q.task_rows(flt, limit=10, **kw)]

    assert ids(TaskFilter()) == [b1.id, a2.id, a1.id]  # newest first
    assert ids(TaskFilter(statuses=("failed",))) == [a1.id]
    assert ids(TaskFilter(channel="ch-b")) == [a2.id]
    assert ids(TaskFilter(model="m1")) == [b1.id, a1.id]
    assert ids(TaskFilter(key_id=bob.id)) == [b1.id]
    assert ids(TaskFilter(created_after=now + 60_000)) == []
    assert ids(TaskFilter(), before_seq=a2.seq) == [a1.id]
    assert q.task_rows(TaskFilter(), limit=1)[0].key_name == "bob"
    assert q.find_task_id(a2.public_id) == a2.id and q.find_task_id(a2.id.lower()) == a2.id
    assert q.find_task_id("nope") is None
    assert q.distinct("channel") == ["ch-a", "ch-b"]

    start = now - now % 60_000 - 60_000
    assert sum(n for _, _, n in q.status_buckets(start, 60_000)) == 3
    assert {(s, n) for b, s, n in q.status_buckets(start, 60_000) if b >= 0} >= {("failed", 1), ("succeeded", 1)}
    assert sorted((c, n) for _, c, n in q.channel_buckets(start, 60_000)) == [("ch-a", 1), ("ch-b", 1)]
    assert [d for _, d in q.durations(start)] == [1500]
    assert q.active_counts() == {"queued": 1}
    assert [r.id for r in q.stuck(now_ms() + 1)] == [b1.id]
    assert q.inflight() == {}
    assert q.channel_outcomes(now - 1000) == {"ch-a": {"failed": 1}, "ch-b": {"succeeded": 1}}
    assert q.last_errors(["ch-a", "ch-b"])["ch-a"][0] == "boom" and "ch-b" not in q.last_errors(["ch-b"])
    usage = q.key_usage(now - 60_000)
    assert usage[alice.id]["total"] == 2 and usage[alice.id]["failed"] == 1 and usage[bob.id]["active"] == 1
    retry = repo.create(spec("m1", retry_of=a1.id), alice.id)
    assert q.retries_of(a1) == [(retry.id, "queued")]  # b1 says so too, but retries keep their owner
    assert q.retries_of(a2) == []
    assert q.key_row(alice.id)["name"] == "alice" and "key_hash" not in q.key_row(alice.id)
    assert sum(n for _, _, n in q.key_daily(alice.id, start, 86_400_000)) == 3


def test_money(db: Database) -> None:
    key, _ = accounts.create_key(db, "payer", balance=10_000_000)
    view = money.account(db, key.id, "EUR")
    assert view.balance == "10.00 EUR" and view.prepaid and view.credit_limit == "0.00 EUR"
    money.top_up(db, key.id, 2_500_000, "thanks")
    assert money.account(db, key.id, "").balance == "12.50"
    assert [e.kind for e in money.ledger_entries(db, key.id)] == ["topup", "topup"]
    money.set_limits(db, key.id, {"rpm": 5, "daily_cap": None})
    assert money.all_accounts(db, "")[key.id].rpm == "5"
    assert money.spend_buckets(db, 0, 86_400_000) == []  # nothing charged yet


def test_money_forms() -> None:
    assert money.fmt_amount(12_500_000) == "12.50" and money.fmt_amount(125) == "0.000125"
    assert money.fmt_amount(-1_000_000, "USD") == "-1.00 USD" and money.fmt_amount(None) == "–"
    values, errors = money.parse_new_key({"balance": "5", "rpm": "100"})
    assert not errors and values["balance"] == 5_000_000 and values["limits"].credit_limit == 0
    values, errors = money.parse_new_key({})
    assert not errors and values["limits"].credit_limit is None  # postpaid
    _, errors = money.parse_new_key({"balance": "1.0000001", "credit_limit": "-1", "max_concurrent": "0"})
    assert set(errors) == {"balance", "credit_limit", "max_concurrent"}
