"""The ledger under random interleavings (hypothesis state machine), on SQLite and PostgreSQL.

The machine drives the store with billing hooks directly: submits (single and fan-out, with and without
Idempotency-Keys, and several at once from threads on one key), starts, completions with random real
output, failures, cancels, races between a completion and a failure, deletes, top-ups and adjustments
(some repeated with the same reference). A plain Python model predicts every outcome (admitted, 402, 429,
conflict, replay) and every balance, and after each step the books must balance:
balance = top-ups - charges + refunds (+ settlements), used + balance = money in, one charge per task,
refunds only for failed/canceled tasks, never below the credit limit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mediarelay.billing import accounts
from mediarelay.billing.prices import PriceRule
from mediarelay.billing.service import Billing
from mediarelay.domain import ErrorKind, MediarelayError, Operation, Status, Task, TaskSpec, now_ms
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.tasks import Idempotency, NewAsset, TaskRepo

VIDEO = PriceRule(model="video-*", per_task=100_000, per_second=37_000)
IMAGE = PriceRule(model="image-*", per_task=10_000, per_image=55_000)
PRICES = [VIDEO, IMAGE]
MODELS = {"video-a": Operation.TEXT_TO_VIDEO, "image-b": Operation.UPSCALE, "free-c": Operation.TEXT_TO_VIDEO}
DEFAULT_SECONDS = 5.0




# -- the model ------------------------------------------------------------------------------------------


def leaf_spec(model: str, seconds: int, images: int) -> TaskSpec:
    op = MODELS[model]
    params: dict[str, Any] = (
        {"seconds": seconds}
        if op is Operation.TEXT_TO_VIDEO
        else {"target_urls": ["https://e.x/i.png"] * images}
    )
    return TaskSpec(
        dialect="native",
        model=model,
        operation=op,
        params=params,
        request={"model": model},
        public_id=uuid.uuid4().hex,
    )


def make_spec(model: str, seconds: int, images: int, fanout: int) -> TaskSpec:
    top = leaf_spec(model, seconds, images)
    if not fanout:
        return top
    kids = tuple(leaf_spec(model, seconds, images) for _ in range(fanout))
    return TaskSpec(
        dialect=top.dialect,
        model=model,
        operation=top.operation,
        params={"fanout": fanout},
        request=top.request,
        public_id=top.public_id,
        children=kids,
    )


def rule_for(model: str) -> PriceRule:
    return {"video-a": VIDEO, "image-b": IMAGE}.get(model, PriceRule())


def expected_estimate(spec: TaskSpec) -> int:
    """Written out independently of mediarelay.billing.prices."""
    r = rule_for(spec.model)
    if spec.operation is Operation.TEXT_TO_VIDEO:
        ms = int(spec.params.get("seconds", DEFAULT_SECONDS) * 1000)
        return r.per_task + math.ceil(r.per_second * ms / 1000)
    return r.per_task + r.per_image * len(spec.params["target_urls"])


def expected_final(spec: TaskSpec, estimate: int, assets: list[NewAsset]) -> int:
    r = rule_for(spec.model)
    ms = sum(round((a.duration or 0) * 1000) for a in assets if a.role == "video")
    images = sum(1 for a in assets if a.role == "image")
    return min(estimate, r.per_task + math.ceil(r.per_second * ms / 1000) + r.per_image * images)


@dataclass
class Leaf:
    spec: TaskSpec
    estimate: int
    amount: int
    state: str = ledger.OPEN


@dataclass
class Top:
    id: str
    leaves: list[str]  # the task ids that carry money (itself, or its children)
    fanout: bool


OUTCOMES = {
    ErrorKind.INSUFFICIENT_QUOTA: "insufficient",
    ErrorKind.RATE_LIMITED: "limited",
    ErrorKind.CONFLICT: "conflict",
}


class LedgerMachine(RuleBasedStateMachine):
    db: Database  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        self.billing = Billing(self.db, PRICES, default_seconds=DEFAULT_SECONDS)
        self.repo = TaskRepo(self.db, hooks=self.billing)
        self.key_id = ""
        self.limits = ledger.Limits()
        self.money_in = 0
        self.leaves: dict[str, Leaf] = {}
        self.tops: dict[str, Top] = {}
        self.idem: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, top task id)
        self.refs: dict[str, int] = {}  # top-up reference -> amount
        self.deleted: set[str] = set()
        self.day = now_ms() // ledger.DAY_MS

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def balance(self) -> int:
        return self.money_in - sum(leaf.amount for leaf in self.leaves.values())

    def open_leaves(self) -> list[str]:
        return [i for i, leaf in self.leaves.items() if leaf.state == ledger.OPEN]

    def live_tops(self) -> list[str]:
        return [t for t in self.tops if t not in self.deleted]

    def admission(self, units: int, total: int) -> str:
        lim = self.limits
        active = len(self.open_leaves())
        if lim.max_concurrent is not None and active + units > lim.max_concurrent:
            return "limited: concurrency"
        spent_today = sum(leaf.amount for leaf in self.leaves.values())  # every task was made today
        if lim.daily_cap is not None and total and spent_today + total > lim.daily_cap:
            return "limited: daily cap"
        if lim.credit_limit is not None and self.balance - total < -lim.credit_limit:
            return "insufficient"
        return "ok"

    def register(self, task: Task, spec: TaskSpec) -> None:
        if spec.children:
            kids = self.repo.children(task.id)
            assert [k.public_id for k in kids] == [c.public_id for c in spec.children]
            pairs = list(zip([k.id for k in kids], spec.children, strict=True))
        else:
            pairs = [(task.id, spec)]
        for task_id, unit in pairs:
            estimate = expected_estimate(unit)
            self.leaves[task_id] = Leaf(spec=unit, estimate=estimate, amount=estimate)
        self.tops[task.id] = Top(id=task.id, leaves=[p[0] for p in pairs], fanout=bool(spec.children))

    def account(self) -> ledger.Account:
        with self.db.read() as conn:
            found = ledger.get_account(conn, self.key_id)
        assert found is not None
        return found

    def finish(self, task_id: str, status: Status, assets: list[NewAsset] | None = None) -> Task | None:
        task = self.repo.get(task_id)
        assert task is not None
        if task.status.terminal:
            return None
        done = self.repo.update(
            task, new_assets=assets or [], status=status, finished_at=now_ms(), next_run_at=None
        )
        assert done is not None
        self.settle_model(task_id, status, assets or [])
        return done

    def settle_model(self, task_id: str, status: Status, assets: list[NewAsset]) -> None:
        leaf = self.leaves.get(task_id)
        if leaf is None or leaf.state != ledger.OPEN:
            return
        if status is Status.SUCCEEDED:
            leaf.amount = expected_final(leaf.spec, leaf.estimate, assets)
            leaf.state = ledger.SETTLED
        else:
            leaf.amount, leaf.state = 0, ledger.REFUNDED

    # -- rules ------------------------------------------------------------------------------------

    @initialize(
        balance=st.sampled_from([0, 150_000, 1_000_000, 4_000_000]),
        credit_limit=st.sampled_from([None, 0, 0, 300_000]),
        daily_cap=st.sampled_from([None, 700_000, 2_500_000]),
        max_concurrent=st.sampled_from([None, 2, 3]),
    )
    def make_key(
        self, balance: int, credit_limit: int | None, daily_cap: int | None, max_concurrent: int | None
    ) -> None:
        self.limits = ledger.Limits(
            credit_limit=credit_limit, daily_cap=daily_cap, max_concurrent=max_concurrent
        )
        key, _ = accounts.create_key(self.db, "prop", balance=balance, limits=self.limits)
        self.key_id, self.money_in = key.id, balance

    @rule(
        model=st.sampled_from(sorted(MODELS)),
        seconds=st.integers(1, 12),
        images=st.integers(1, 3),
        fanout=st.sampled_from([0, 0, 0, 2, 3]),
        idem=st.sampled_from([None, None, None, "a", "b"]),
    )
    def submit(self, model: str, seconds: int, images: int, fanout: int, idem: str | None) -> None:
        spec = make_spec(model, seconds, images, fanout)
        fp = f"{model}/{seconds}/{images}/{fanout}"
        units = spec.children or (spec,)
        if idem is not None and idem in self.idem:
            first_fp, first_id = self.idem[idem]
            expected = "replay" if first_fp == fp and first_id not in self.deleted else "conflict"
        else:
            expected = self.admission(len(units), sum(expected_estimate(u) for u in units))
        event(f"submit: {expected}")
        before = self.account()
        try:
            task, created = self.repo.create_once(
                spec, self.key_id, Idempotency(idem, fp) if idem is not None else None
            )
        except MediarelayError as exc:
            assert OUTCOMES[exc.kind] == expected.split(":")[0], (exc.message, expected)
            if exc.kind is ErrorKind.RATE_LIMITED:
                assert int(exc.headers["Retry-After"]) >= 1
                assert ("daily" in exc.message) == (expected == "limited: daily cap"), exc.message
            assert self.account() == before  # nothing charged
            assert self.repo.by_public_id(spec.public_id) is None  # nothing stored
            return
        if expected == "replay":
            assert not created and task.id == self.idem[idem][1]  # type: ignore[index]
            assert self.account() == before
            return
        assert expected == "ok" and created, expected
        self.register(task, spec)
        if idem is not None:
            self.idem[idem] = (fp, task.id)

    @precondition(lambda self: self.idem)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A client retrying a submit with its Idempotency-Key: the original task, nothing charged."""
        idem = data.draw(st.sampled_from(sorted(self.idem)))
        fp, task_id = self.idem[idem]
        model, seconds, images, fanout = fp.split("/")
        spec = make_spec(model, int(seconds), int(images), int(fanout))
        before = self.account()
        try:
            task, created = self.repo.create_once(spec, self.key_id, Idempotency(idem, fp))
        except MediarelayError as exc:
            assert task_id in self.deleted and exc.kind is ErrorKind.CONFLICT
            event("retry: deleted")
            return
        event("retry: replayed")
        assert not created and task.id == task_id and self.account() == before

    @rule(n=st.integers(2, 4), same_key=st.booleans())
    def concurrent_submits(self, n: int, same_key: bool) -> None:
        """Several submits on one key at the same moment, from threads: distinct requests, or one request
        retried with one Idempotency-Key (exactly one task, charged once)."""
        idem = f"c-{uuid.uuid4().hex}" if same_key else None
        spec0 = leaf_spec("video-a", 3, 1)
        specs = [spec0 if same_key else leaf_spec("video-a", 3, 1) for _ in range(n)]
        barrier = threading.Barrier(n)

        def go(spec: TaskSpec) -> tuple[Task, bool] | MediarelayError:
            barrier.wait()
            try:
                return self.repo.create_once(spec, self.key_id, Idempotency(idem, "same") if idem else None)
            except MediarelayError as exc:
                return exc

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(go, specs))
        made = [r for r in results if isinstance(r, tuple) and r[1]]
        for r in results:
            if isinstance(r, MediarelayError):
                assert r.kind in (ErrorKind.INSUFFICIENT_QUOTA, ErrorKind.RATE_LIMITED), r.message
        if same_key:
            assert len(made) <= 1
            ids = {r[0].id for r in results if isinstance(r, tuple)}
            assert len(ids) <= 1  # every admitted retry got the one task
        if same_key and made:
            # A retry racing its original never gets a limit error: it waits, then gets the task.
            assert all(isinstance(r, tuple) for r in results), results
        for task, _ in made:
            self.register(task, next(s for s in specs if s.public_id == task.public_id))
        # Whatever order the database chose, the limits held (the invariant checks them and the money).

    @precondition(lambda self: self.open_leaves())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        task = self.repo.get(data.draw(st.sampled_from(self.open_leaves())))
        assert task is not None
        if task.status is Status.QUEUED:
            assert self.repo.update(task, status=Status.RUNNING, started_at=now_ms()) is not None

    @precondition(lambda self: self.open_leaves())
    @rule(data=st.data(), seconds=st.floats(0.2, 20), images=st.integers(0, 4))
    def complete(self, data: st.DataObject, seconds: float, images: int) -> None:
        task_id = data.draw(st.sampled_from(self.open_leaves()))
        leaf = self.leaves[task_id]
        assets = [NewAsset(role="poster", key=f"{task_id}/p", mime="image/jpeg", bytes=1, sha256="0" * 64)]
        if leaf.spec.operation is Operation.TEXT_TO_VIDEO:
            assets.append(
                NewAsset(
                    role="video",
                    key=f"{task_id}/v",
                    mime="video/mp4",
                    bytes=1,
                    sha256="0" * 64,
                    duration=seconds,
                )
            )
        else:
            assets += [
                NewAsset(
                    role="image", key=f"{task_id}/{i}", mime="image/png", bytes=1, sha256="0" * 64, index=i
                )
                for i in range(images)
            ]
        self.finish(task_id, Status.SUCCEEDED, assets)

    @precondition(lambda self: self.open_leaves())
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        self.finish(data.draw(st.sampled_from(self.open_leaves())), Status.FAILED)

    @precondition(lambda self: self.live_tops())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        top = self.tops[data.draw(st.sampled_from(self.live_tops()))]
        self.finish(top.id, Status.CANCELED)
        if top.fanout:  # the engine cancels a batch's children with it
            for child in top.leaves:
                self.finish(child, Status.CANCELED)

    @precondition(lambda self: self.open_leaves())
    @rule(data=st.data(), status=st.sampled_from([Status.SUCCEEDED, Status.FAILED, Status.CANCELED]))
    def race(self, data: st.DataObject, status: Status) -> None:
        """Two workers end the same task version at once (a step re-run after a crash, two nodes): one
        wins, its money moves once. (Different outcomes racing: see the test below; hypothesis needs each
        step's outcome to be reproducible.)"""
        task_id = data.draw(st.sampled_from(self.open_leaves()))
        task = self.repo.get(task_id)
        assert task is not None
        video = NewAsset(
            role="video", key=f"{task_id}/v", mime="video/mp4", bytes=1, sha256="0" * 64, duration=1.0
        )
        assets = [video] if status is Status.SUCCEEDED else []
        barrier = threading.Barrier(2)

        def go(_: int) -> Task | None:
            barrier.wait()
            return self.repo.update(task, new_assets=assets, status=status, finished_at=now_ms())

        with ThreadPoolExecutor(2) as pool:
            won = [w for w in pool.map(go, range(2)) if w is not None]
        assert len(won) == 1 and won[0].status is status
        self.settle_model(task_id, status, assets)

    @precondition(lambda self: self.live_tops())
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        top = self.tops[data.draw(st.sampled_from(self.live_tops()))]
        task = self.repo.get(top.id)
        assert task is not None
        self.repo.delete(task)
        self.deleted.add(top.id)
        for leaf_id in top.leaves:
            self.settle_model(leaf_id, Status.CANCELED, [])  # an unfinished task leaves with its refund

    @precondition(lambda self: self.key_id)
    @rule(amount=st.integers(1, 3_000_000), ref=st.sampled_from([None, None, "r1", "r2"]))
    def top_up(self, amount: int, ref: str | None) -> None:
        expected = "ok"
        if ref is not None and ref in self.refs:
            expected = "replay" if self.refs[ref] == amount else "conflict"
        try:
            entry, fresh = accounts.credit(self.db, self.key_id, amount, note="prop", reference=ref)
        except MediarelayError as exc:
            assert expected == "conflict" and exc.kind is ErrorKind.CONFLICT
            return
        assert fresh == (expected == "ok") and entry.amount == amount
        if fresh:
            self.money_in += amount
            if ref is not None:
                self.refs[ref] = amount

    @precondition(lambda self: self.key_id)
    @rule(amount=st.integers(-2_000_000, 1_000_000).filter(bool))
    def adjust(self, amount: int) -> None:
        lim = self.limits.credit_limit
        refused = amount < 0 and lim is not None and self.balance + amount < -lim
        try:
            accounts.credit(self.db, self.key_id, amount, kind=ledger.ADJUST)
        except MediarelayError as exc:
            assert refused and exc.kind is ErrorKind.CONFLICT
            return
        assert not refused
        self.money_in += amount

    # -- the books --------------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        if not self.key_id:
            return
        with self.db.read() as conn:
            assert ledger.check_key(conn, self.key_id) == []
            charges = {task_id: ledger.get_charge(conn, task_id) for task_id in self.leaves}
        account = self.account()
        assert account.balance == self.balance
        assert account.used == sum(leaf.amount for leaf in self.leaves.values())
        assert account.balance + account.used == self.money_in
        if self.limits.credit_limit is not None:
            assert account.balance >= -self.limits.credit_limit
        for task_id, leaf in self.leaves.items():
            charge = charges[task_id]
            assert charge is not None and (charge.state, charge.amount) == (leaf.state, leaf.amount)
        if self.limits.daily_cap is not None and now_ms() // ledger.DAY_MS == self.day:
            assert sum(leaf.amount for leaf in self.leaves.values()) <= self.limits.daily_cap
        if self.limits.max_concurrent is not None:
            assert len(self.open_leaves()) <= self.limits.max_concurrent


def test_ledger_stays_exact_under_random_interleavings(db: Database) -> None:
    LedgerMachine.db = db
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=int(os.environ.get("MEDIARELAY_BILLING_EXAMPLES", "25")),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )


def end_at_once(repo: TaskRepo, task: Task, video: NewAsset) -> Task:
    """A success and a cancel of the same version from two threads at the same moment: the winner."""
    barrier = threading.Barrier(2)

    def go(status: Status) -> Task | None:
        barrier.wait()
        assets = [video] if status is Status.SUCCEEDED else []
        return repo.update(task, new_assets=assets, status=status, finished_at=now_ms())

    with ThreadPoolExecutor(2) as pool:
        won = [w for w in pool.map(go, [Status.SUCCEEDED, Status.CANCELED]) if w is not None]
    assert len(won) == 1
    return won[0]


def test_a_completion_racing_a_cancel_moves_money_once(db: Database) -> None:
    """Whichever wins, the task is charged once and either settled or refunded, never both."""
    repo = TaskRepo(db, hooks=Billing(db, PRICES, default_seconds=DEFAULT_SECONDS))
    key, _ = accounts.create_key(db, "race", balance=10_000_000)
    spec = leaf_spec("video-a", 4, 1)
    video = NewAsset(role="video", key="v", mime="video/mp4", bytes=1, sha256="0" * 64, duration=2.0)
    for _ in range(12):
        task = repo.create(dataclasses.replace(spec, public_id=uuid.uuid4().hex), key.id)
        won = end_at_once(repo, task, video)
        with db.read() as conn:
            charge = ledger.get_charge(conn, task.id)
            assert ledger.check_key(conn, key.id) == []
        assert charge is not None
        if won.status is Status.SUCCEEDED:
            final = expected_final(spec, expected_estimate(spec), [video])
            assert (charge.state, charge.amount) == (ledger.SETTLED, final)
        else:
            assert (charge.state, charge.amount) == (ledger.REFUNDED, 0)
