"""Chaos, embedded mode: 5,000 tasks through one `mediarelay serve` that is SIGKILLed at random moments
and started again, while 16 clients keep submitting (retrying with the same Idempotency-Key whenever
the server is down). Most tasks run on the sandbox; one in ten is relayed to an upstream that counts
the tasks it creates (`fakeupstream.py`, the idempotent `mediarelay` dialect), so a duplicated
upstream submission would show.

Then, from the database and the files alone: 0 tasks lost (every acknowledged submit exists and
succeeded), 0 created twice (one task per Idempotency-Key, one `succeeded` transition each, one task
upstream per relayed marker), every ledger balanced, every file complete (size and SHA-256 of every
stored result match its row). The scaled-out counterpart (2 API nodes, 2 workers, PostgreSQL
restarted) is tests/scale/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import SERVER_DB, Server, assert_books_balance, start_server, wait_until
from mediarelay import media
from scale.retrying import post_until_accepted

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fakeupstream import FakeUpstream

TASKS = 5000
RELAYED_EVERY = 10
KILLS = 6


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeUpstream]:
    Image.new("RGB", (32, 32), (30, 90, 200)).save(tmp_path / "r.png")
    asyncio.run(
        media.make_video(tmp_path / "r.mp4", width=64, height=64, seconds=1, fps=8, text="x", audio=False)
    )
    upstream = FakeUpstream(
        png=(tmp_path / "r.png").read_bytes(), mp4=(tmp_path / "r.mp4").read_bytes(), durations=(0.3, 1.0)
    ).start()
    yield upstream
    upstream.stop()


def body(i: int) -> dict[str, object]:
    if i % RELAYED_EVERY == 0:
        return {"model": "mr-x", "operation": "text_to_image", "prompt": f"relayed mk-ok-{i}"}
    if i % 7 == 0:
        return {"model": "sandbox-video", "operation": "text_to_video", "prompt": f"clip {i}",
                "width": 64, "height": 64, "seconds": 1}  # fmt: skip
    return {
        "model": "sandbox-image",
        "operation": "text_to_image",
        "prompt": f"image {i}",
        "width": 32,
        "height": 32,
    }


async def submit_all(server: Server, key: str, stop: threading.Event) -> dict[int, str]:
    """Every task submitted exactly once from the client's point of view: an attempt that failed in
    transit is repeated with the same Idempotency-Key until the server acknowledges it."""
    acked: dict[int, str] = {}
    todo = list(range(TASKS))

    async def submitter(client: httpx.AsyncClient) -> None:
        while todo:
            i = todo.pop()
            idem = f"chaos-{i}-{uuid.uuid4().hex}"
            _, r = await post_until_accepted(
                client, lambda _: "/v1/tasks", body(i), {"Idempotency-Key": idem}, attempts=600, pause=0.1
            )
            acked[i] = r.json()["id"]

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as client:
        await asyncio.gather(*(submitter(client) for _ in range(16)))
    stop.set()
    return acked


@pytest.mark.timeout(1200)
@pytest.mark.skipif(SERVER_DB != "sqlite", reason="the embedded mode; scaled out is test_scale_out.py")
def test_random_sigkills_lose_nothing_and_duplicate_nothing(fake: FakeUpstream, tmp_path: Path) -> None:
    channels = [
        {
            "name": "relay",
            "type": "mediarelay",
            "base_url": fake.base_url,
            "credentials": ["env:FAKE_MR_A"],
            "models": ["mr-*"],
            "max_concurrency": 10_000,  # never full: a full channel would fail over to the sandbox
            "options": {"poll_fast_seconds": 0.3},
        }
    ]
    server = start_server(
        tmp_path,
        MEDIARELAY_SANDBOX__QUEUE_SECONDS="0.1",
        MEDIARELAY_SANDBOX__RUN_SECONDS="0.4",
        MEDIARELAY_FETCH__ALLOWED_HOSTS='["127.0.0.1"]',
        MEDIARELAY_CHANNELS=json.dumps(channels),
        MEDIARELAY_ACCESS_LOG="false",
        MEDIARELAY_WORKERS="64",
        MEDIARELAY_PRICES=json.dumps([{"model": "*", "per_task": 1000}]),
        FAKE_MR_A="tok-mr-a",
    )
    rng = random.Random(20261121)
    kills: list[str] = []
    stop = threading.Event()
    try:
        key = server.cli("keys", "create", "--name", "chaos", "--balance", "100000").stdout.strip()
        assert key.startswith("mr-")

        def chaos() -> None:
            """SIGKILL at random moments while submits and steps are in flight, then start again."""
            while not stop.wait(rng.uniform(4.0, 12.0)) and len(kills) < KILLS:
                server.kill()
                kills.append(f"{time.monotonic():.1f}")
                time.sleep(rng.uniform(0.0, 1.0))
                server.start()

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        acked = asyncio.run(submit_all(server, key, stop))
        chaos_thread.join(60)
        assert len(kills) >= 3, f"only {len(kills)} kills happened during the submits"
        if len(kills) < KILLS:  # the submits finished first: the rest of the kills hit running steps
            for _ in range(KILLS - len(kills)):
                time.sleep(rng.uniform(1.0, 4.0))
                server.kill()
                kills.append("after submits")
                server.start()
        assert len(acked) == TASKS and len(set(acked.values())) == TASKS

        def succeeded() -> int:
            return int(server.rows("select count(*) from tasks where status = 'succeeded'")[0][0])

        wait_until(succeeded, lambda n: n >= TASKS, timeout=600, every=1.0)
    finally:
        stop.set()
        server.stop()

    # 0 lost, 0 duplicated: exactly the acknowledged tasks, each succeeded once.
    ids = set(acked.values())
    rows = dict(server.rows("select id, status from tasks"))
    assert set(rows) == ids and set(rows.values()) == {"succeeded"}
    done = dict(
        server.rows("select task_id, count(*) from task_events where status = 'succeeded' group by task_id")
    )
    assert len(done) == TASKS and set(done.values()) == {1}
    # 0 duplicated upstream submissions: one upstream task per relayed marker.
    relayed = [f"mk-ok-{i}" for i in range(0, TASKS, RELAYED_EVERY)]
    wrong = {m: (fake.created[m], fake.attempts[m]) for m in relayed if fake.created[m] != 1}
    assert wrong == {}, f"{len(wrong)} markers (created, submit attempts): {list(wrong.items())[:20]}"
    # Every ledger balanced.
    assert_books_balance(server, expect_refunds=False)
    # Every file complete: one row per (task, role, index), and the bytes on disk match it.
    assert not server.rows(
        "select task_id, role, idx from assets group by task_id, role, idx having count(*) > 1"
    )
    files = server.data_dir / "files"
    checked = 0
    for key_path, size, sha in server.rows("select key, bytes, sha256 from assets"):
        blob = (files / key_path).read_bytes()
        assert len(blob) == size and hashlib.sha256(blob).hexdigest() == sha, key_path
        checked += 1
    assert checked >= TASKS
    staging = files / ".staging"
    assert not staging.exists() or not any(staging.iterdir())  # no partial file left behind
