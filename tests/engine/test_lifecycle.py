"""Lifecycle rules on a live server: channel deadlines, configured failure rates, poll cadence."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import start_server, wait_until
from mediarelay.channels.base import PollResult
from mediarelay.domain import Operation, Status, Task
from mediarelay.engine.cadence import MAX_DELAY, MIN_DELAY, next_poll_delay

BODY = {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/a.mp3"}


def test_deadline_fails_a_stuck_task_and_failure_rate_applies(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, MEDIARELAY_SANDBOX__DEADLINE_SECONDS="2", MEDIARELAY_SANDBOX__FAILURE_RATE="1"
    )
    try:
        key = server.new_key()
        with server.client(key) as api:
            stuck = api.post("/avatar/generation", json=BODY, headers={"X-Sandbox-Queue": "600"}).json()[
                "data"
            ]
            flaky = api.post("/avatar/generation", json=BODY, headers={"X-Sandbox-Duration": "0.5"}).json()[
                "data"
            ]
            for task_id in (stuck, flaky):
                wait_until(
                    lambda t=task_id: api.get(f"/avatar/task/{t}").json(),
                    lambda w: w["web_work_status"] == -1,
                    timeout=30,
                )
            assert "deadline" in api.get(f"/avatar/task/{stuck}").json()["message"]
            assert "simulated" in api.get(f"/avatar/task/{flaky}").json()["message"]
    finally:
        server.stop()
    codes = dict(server.rows("select public_id, error_code from tasks"))
    assert codes == {stuck: "timeout", flaky: "generation_failed"}


def make_task(progress: int, started_ms: int) -> Task:
    return Task(
        id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        seq=1,
        public_id="p",
        dialect="avatar",
        key_id="k",
        model="m",
        operation=Operation.TEXT_TO_VIDEO,
        params={},
        request={},
        status=Status.RUNNING,
        progress=progress,
        version=1,
        created_at=started_ms,
        updated_at=started_ms,
        started_at=started_ms,
    )


def test_poll_cadence_follows_progress_and_retry_after() -> None:
    rng = random.Random(1)
    start = 1_000_000
    # 10 % done after 60 s: ~540 s remain, so poll again in half of that, capped.
    slow = next_poll_delay(
        make_task(10, start), PollResult(status=Status.RUNNING, progress=10), start + 60_000, rng=rng
    )
    assert slow == MAX_DELAY * (slow / MAX_DELAY) and 0.9 * MAX_DELAY <= slow <= 1.1 * MAX_DELAY
    # 90 % done after 60 s: ~6.7 s remain -> about 3.3 s.
    fast = next_poll_delay(
        make_task(90, start), PollResult(status=Status.RUNNING, progress=90), start + 60_000, rng=rng
    )
    assert 3.0 < fast < 3.7
    # The upstream's Retry-After wins.
    told = next_poll_delay(
        make_task(50, start), PollResult(status=Status.RUNNING, retry_after=7), start + 1000, rng=rng
    )
    assert 6.3 <= told <= 7.7
    # No progress information: starts near a second, grows slowly, never below the floor.
    early = next_poll_delay(make_task(0, start), PollResult(status=None), start + 100, rng=rng)
    assert MIN_DELAY * 0.9 <= early < 1.5
