"""Scaled out: two API nodes (`serve --no-worker`) and two workers (`mediarelay worker`) on one private
PostgreSQL, 2,000 sandbox tasks submitted through both nodes while a worker and an API node are killed
with SIGKILL and PostgreSQL is restarted, each at a random moment (seeded: MEDIARELAY_CHAOS_SEED). Every
task finishes exactly once, every client sees its result through the node it used, no job is left behind and every key's books balance."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import (
    FAST_SANDBOX,
    Server,
    Worker,
    assert_books_balance,
    free_port,
    wait_until,
)
from scale.pgcluster import Cluster, private_cluster
from scale.retrying import post_until_accepted

TASKS = 2000
SEED = int(os.environ.get("MEDIARELAY_CHAOS_SEED", "20261121"))
PRICES = [{"model": "*", "per_task": 1000}]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = private_cluster()
    try:
        yield found
    finally:
        found.stop()


def node_env(cluster: Cluster) -> dict[str, str]:
    env = {
        **os.environ,
        **FAST_SANDBOX,
        "MEDIARELAY_DATABASE_URL": cluster.url,
        "MEDIARELAY_SANDBOX__QUEUE_SECONDS": "0.2",
        "MEDIARELAY_SANDBOX__RUN_SECONDS": "0.8",
        "MEDIARELAY_SANDBOX__JITTER": "0.5",
        "MEDIARELAY_PRICES": json.dumps(PRICES),
        "MEDIARELAY_ACCESS_LOG": "false",
        "MEDIARELAY_WORKERS": "48",
    }
    env.pop("MEDIARELAY_CONFIG", None)
    return env


def body(i: int) -> dict[str, object]:
    if i % 10 == 0:  # some real videos, most small images: 2 cores have to encode all of it
        return {"model": "sandbox-video", "operation": "text_to_video", "prompt": f"clip {i}",
                "width": 64, "height": 64, "seconds": 1}  # fmt: skip
    return {"model": "sandbox-image", "operation": "text_to_image", "prompt": f"image {i}",
            "width": 32, "height": 32}  # fmt: skip


async def submit_all(nodes: list[Server], key: str) -> list[tuple[str, int]]:
    """Submit through both nodes; a node that is down or answers 5xx is retried (the same
    Idempotency-Key, so an attempt that did reach the database is not made twice)."""
    made: list[tuple[str, int]] = []
    queue = list(range(TASKS))

    async def submitter(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            idem = f"scale-{i}-{uuid.uuid4().hex}"
            attempt, r = await post_until_accepted(
                client,
                lambda a, i=i: f"{nodes[(i + a) % len(nodes)].base_url}/v1/tasks",
                body(i),
                {"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
                attempts=200,
                pause=0.2,
            )
            made.append((r.json()["id"], (i + attempt) % len(nodes)))

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(submitter(client) for _ in range(16)))
    return made


@pytest.mark.timeout(1200)
def test_two_api_nodes_two_workers_survive_kills_and_a_database_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = node_env(cluster)
    data = tmp_path / "data"  # one files directory on this machine, shared as a network mount would be
    data.mkdir()
    api1 = Server(data_dir=data, port=free_port(), env=env, args=("--no-worker",)).start()
    api2 = Server(data_dir=data, port=free_port(), env=env, args=("--no-worker",), admin_key="-").start()
    workers = [Worker(data, env, f"worker-{n}").start() for n in (1, 2)]
    nodes = [api1, api2]
    try:
        key = api1.cli("keys", "create", "--name", "load", "--balance", "10000").stdout.strip()
        assert key.startswith("mr-")

        def succeeded() -> int:
            return int(api1.rows("select count(*) from tasks where status = 'succeeded'")[0][0])

        chaos_log: list[str] = []

        # Random moments (by progress, so that each lands while work is in flight): seeded for replay.
        at = sorted(random.Random(SEED).sample(range(TASKS // 20, TASKS * 7 // 10), 3))

        def chaos() -> None:
            wait_until(succeeded, lambda n: n >= at[0], timeout=600, every=0.1)
            workers[0].kill()
            chaos_log.append(f"worker-1 killed at {succeeded()}")
            wait_until(succeeded, lambda n: n >= at[1], timeout=600, every=0.1)
            api2.kill()
            chaos_log.append(f"api-2 killed at {succeeded()}")
            time.sleep(1)
            api2.start()
            wait_until(succeeded, lambda n: n >= at[2], timeout=600, every=0.1)
            cluster.restart()
            chaos_log.append(f"PostgreSQL restarted at {succeeded()}")

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        made = asyncio.run(submit_all(nodes, key))
        chaos_thread.join(900)
        assert len(chaos_log) == 3, (at, chaos_log)
        assert len(made) == TASKS and len({task_id for task_id, _ in made}) == TASKS

        wait_until(succeeded, lambda n: n >= TASKS, timeout=900, every=0.5)

        # Every client sees its result through the node it submitted to; some files are downloaded.
        sample = set(random.Random(7).sample(range(TASKS), 60))
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            for n, (task_id, node) in enumerate(made):
                view = client.get(f"{nodes[node].base_url}/v1/tasks/{task_id}").json()
                assert view["status"] == "succeeded" and view["outputs"], view
                if n in sample:
                    out = view["outputs"][0]
                    blob = client.get(out["url"]).content
                    assert hashlib.sha256(blob).hexdigest() == out["sha256"]
    finally:
        for w in workers:
            w.stop()
        for api in nodes:
            api.stop()

    # Exactly once: one 'succeeded' transition per task, one set of files, nothing failed or pending.
    ids = {task_id for task_id, _ in made}
    assert dict(api1.rows("select status, count(*) from tasks group by status")) == {"succeeded": TASKS}
    done = dict(
        api1.rows("select task_id, count(*) from task_events where status='succeeded' group by task_id")
    )
    assert set(done) == ids and set(done.values()) == {1}
    assert not api1.rows(
        "select task_id, role, idx from assets group by task_id, role, idx having count(*) > 1"
    )
    assert not api1.rows("select id from procrastinate_jobs where status in ('todo', 'doing')")
    assert_books_balance(api1, expect_refunds=False)
