"""Scaled-out throughput: sandbox tasks finished per second on PostgreSQL with 1 and 2 workers, against
the embedded default (SQLite, in-process driver) on the very same workload in the same run.

Each configuration gets a fresh database: one API node (`serve --no-worker`, or plain `serve` for the
embedded reference) and N `mediarelay worker` processes. N small sandbox tasks (32x32 images, 1 in 10 a
64x64 1 s video; queue 0.1 s, run 0.5 s) are submitted through the native API; throughput is tasks
finished / (last finish - first submit). Also measured: how soon a client long-polling on the API node
(`GET /v1/tasks/{id}?wait=30`) sees a change a worker made — its arrival minus the task's `updated_at`
(both this machine's clock) — which is the cross-node LISTEN/NOTIFY path; measured after the throughput
run, with 100 tasks each watched by its own client, so it measures the path rather than a saturated CPU.

    .venv/bin/python bench/scale_bench.py --tasks 2000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet

BIN = Path(sys.executable).parent / "mediarelay"
PG_ADMIN = os.environ.get("MEDIARELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def body(i: int) -> dict[str, object]:
    if i % 10 == 0:
        return {"model": "sandbox-video", "operation": "text_to_video", "prompt": f"clip {i}",
                "width": 64, "height": 64, "seconds": 1}  # fmt: skip
    return {"model": "sandbox-image", "operation": "text_to_image", "prompt": f"image {i}", "width": 32, "height": 32}


class Deployment:
    def __init__(self, tmp: Path, workers: int | None) -> None:
        self.tmp, self.workers = tmp, workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self.second = ""  # scaled out: a second API node
        self.db_name: str | None = None
        self.env = {
            **os.environ,
            "MEDIARELAY_SANDBOX__QUEUE_SECONDS": "0.1",
            "MEDIARELAY_SANDBOX__RUN_SECONDS": "0.5",
            "MEDIARELAY_SANDBOX__JITTER": "0.3",
            "MEDIARELAY_ACCESS_LOG": "false",
            "MEDIARELAY_WORKERS": "64",
            # Scaled-out nodes must share one master key (docs/security.md).
            "MEDIARELAY_MASTER_KEY": os.environ.get("MEDIARELAY_MASTER_KEY") or Fernet.generate_key().decode(),
        }
        self.env.pop("MEDIARELAY_CONFIG", None)
        self.data = tmp / f"data-{workers}"
        if workers is not None:
            self.db_name = f"mr_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
            self.env["MEDIARELAY_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{self.db_name}"

    def start_api(self, n: int) -> str:
        port = free_port()
        log = (self.tmp / f"api-{self.workers}-{n}.log").open("wb")
        args = ["serve", "--port", str(port), "--data-dir", str(self.data)]
        if self.workers is not None:
            args.append("--no-worker")
        api = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=log, env=self.env)
        self.procs.append(api)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        return base

    def start(self) -> tuple[str, str]:
        base = self.start_api(0)
        api = self.procs[0]
        assert api.stdout is not None
        key = api.stdout.readline().decode().strip()  # the first node creates and prints the admin key
        if self.workers is not None:
            self.second = self.start_api(1)  # an API node that only learns of changes over NOTIFY
        for n in range(self.workers or 0):
            wlog = (self.tmp / f"worker-{self.workers}-{n}.log").open("wb")
            self.procs.append(
                subprocess.Popen([str(BIN), "worker", "--data-dir", str(self.data)], stdout=wlog, stderr=wlog, env=self.env)
            )
        return base, key

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.db_name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


def finished_count(deployment: Deployment) -> int:
    query = "select count(*) from tasks where status in ('succeeded', 'failed', 'canceled')"
    url = deployment.env.get("MEDIARELAY_DATABASE_URL")
    if url:
        with psycopg.connect(url) as conn:
            return int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    with sqlite3.connect(f"file:{deployment.data / 'mediarelay.db'}?mode=ro", uri=True) as db:
        return int(db.execute(query).fetchone()[0])


async def throughput(base: str, key: str, tasks: int, deployment: Deployment) -> dict[str, float]:
    """Submit `tasks` at once (16 clients), then count finished tasks in the database until all are."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        start = time.time()
        todo = list(range(tasks))

        async def submitter() -> None:
            while todo:
                r = await client.post("/v1/tasks", json=body(todo.pop()))
                r.raise_for_status()

        await asyncio.gather(*(submitter() for _ in range(16)))
        submitted = time.time()
    while finished_count(deployment) < tasks:
        await asyncio.sleep(0.2)
    total = time.time() - start
    return {"submit_s": submitted - start, "total_s": total, "per_s": tasks / total}


async def wakeups(base: str, key: str, n: int = 100) -> list[float]:
    """On a quiet deployment: n tasks, each long-polled by its own client on the API node; for every
    change a waiting client sees, its arrival minus the task's `updated_at` (seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    lags: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=n + 10)) as client:

        async def one(i: int) -> None:
            r = await client.post("/v1/tasks", json={**body(1), "prompt": f"wake {i}"},
                                  headers={"X-Sandbox-Queue": str(0.5 + i % 10 * 0.2), "X-Sandbox-Duration": "1"})  # fmt: skip
            task_id = r.json()["id"]
            seen = await client.get(f"/v1/tasks/{task_id}")  # what this client has seen
            etag = seen.headers["etag"]
            if seen.json()["status"] in ("succeeded", "failed", "canceled"):
                return
            while True:
                r = await client.get(f"/v1/tasks/{task_id}?wait=30", headers={"If-None-Match": etag})
                now = time.time()
                if r.status_code == 304:
                    continue
                view = r.json()
                lags.append(now - view["updated_at"] / 1000)
                etag = r.headers["etag"]
                if view["status"] in ("succeeded", "failed", "canceled"):
                    return

        await asyncio.gather(*(one(i) for i in range(n)))
    return lags


async def cross_node(base_a: str, base_b: str, key: str, n: int = 100) -> list[float]:
    """Cross-node events alone: a client long-polls a queued task on node B while another client
    cancels it through node A, one task at a time; seconds from sending the cancel to A until B's
    answer arrives (one clock; an upper bound: it includes A handling the cancel). What is measured is commit -> pg_notify -> B's listener -> B's re-render
    -> the waiting client; the worker plays no part (the task is still queued)."""
    headers = {"Authorization": f"Bearer {key}"}
    lags: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base_a, headers=headers, timeout=60) as a,
        httpx.AsyncClient(base_url=base_b, headers=headers, timeout=60) as b,
    ):
        for i in range(n):
            r = await a.post("/v1/tasks", json={**body(1), "prompt": f"cross {i}"}, headers={"X-Sandbox-Queue": "600"})
            task_id = r.json()["id"]
            while True:  # until the worker has dispatched it: the only change left is the cancel
                seen = await b.get(f"/v1/tasks/{task_id}")
                assert seen.status_code == 200, seen.text
                if seen.json()["started_at"]:
                    break
                await asyncio.sleep(0.05)
            waiting = asyncio.create_task(b.get(f"/v1/tasks/{task_id}?wait=30", headers={"If-None-Match": seen.headers["etag"]}))
            await asyncio.sleep(0.05)  # B's long-poll is parked
            sent = time.time()
            r = await a.post(f"/v1/tasks/{task_id}/cancel")
            assert r.status_code < 300, r.text
            answer = await waiting
            while answer.status_code == 304 or answer.json()["status"] != "canceled":  # another change first
                etag = answer.headers["etag"]
                answer = await b.get(f"/v1/tasks/{task_id}?wait=30", headers={"If-None-Match": etag})
            arrived = time.time()
            lags.append(arrived - sent)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--cross", type=int, default=100, help="tasks of the cross-node (cancel) measure")
    parser.add_argument("--setups", default="embedded,1,2", help="which of embedded,1,2 to run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    rows = []
    chosen = [None if s == "embedded" else int(s) for s in args.setups.split(",")]
    for workers in chosen:
        deployment = Deployment(tmp, workers)
        try:
            base, key = deployment.start()
            result = asyncio.run(throughput(base, key, args.tasks, deployment))
            lags = asyncio.run(wakeups(base, key))
            result.update(lag_p50_ms=pct(lags, 0.5) * 1000, lag_p95_ms=pct(lags, 0.95) * 1000, lag_n=len(lags))
            if workers is not None:
                cross = asyncio.run(cross_node(base, deployment.second, key, args.cross))
                result.update(cross_p50_ms=pct(cross, 0.5) * 1000, cross_p95_ms=pct(cross, 0.95) * 1000,
                              cross_max_ms=max(cross) * 1000)  # fmt: skip
        finally:
            deployment.stop()
        label = "embedded (SQLite, in-process)" if workers is None else f"PostgreSQL, {workers} worker(s)"
        rows.append((label, result))
        print(label, result, flush=True)
    reference = rows[0][1]["per_s"]
    print()
    print(
        "setup | tasks/s | ratio to first | submit s | all done s | change seen on API node p50 / p95 ms"
        " | cross-node cancel seen p50 / p95 / max ms"
    )
    for label, r in rows:
        cross = f"{r['cross_p50_ms']:.0f} / {r['cross_p95_ms']:.0f} / {r['cross_max_ms']:.0f}" if "cross_p50_ms" in r else "-"
        print(
            f"{label} | {r['per_s']:.1f} | {r['per_s'] / reference:.2f} | {r['submit_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['lag_p50_ms']:.0f} / {r['lag_p95_ms']:.0f} | {cross}"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
