"""Memory and start-up: RSS of an idle API node, time to ready, and RSS of one node working through
100,000 in-flight tasks.

- Idle: `mediarelay serve` on a fresh data directory (embedded default); RSS after it answers and has
  sat idle for a few seconds. Time to ready: from spawning the process to the first 200 from
  `/healthz`, on a fresh directory (which includes creating the database) and again on the same one.
  Reference in the same run: a bare `python -c 'import httpx'` process's RSS (the interpreter's floor).
- In flight: N sandbox tasks inserted straight into the store as running at the sandbox for an hour,
  their next polls spread over the first minute; then one `serve` process (it is the worker in the
  embedded mode) polls all of them for `--seconds`; peak RSS and how many polls it made.

    .venv/bin/python bench/memory_bench.py --tasks 100000 --seconds 90
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_util import BIN, free_port, wait_http
from sqlalchemy import insert

from mediarelay.dialects import unified_video
from mediarelay.domain import Status
from mediarelay.store import database
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import tasks
from mediarelay.store.tasks import new_task_id

BODY = {"model": "sora-2", "prompt": "bench", "orientation": "portrait", "size": "small", "duration": 10}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDIARELAY_ACCESS_LOG": "false"}
    env.pop("MEDIARELAY_CONFIG", None)
    return subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def fill_running(url: str, n: int, spread_s: float) -> None:
    database.upgrade(url)
    db = Database(url)
    key, _ = KeyRepo(db).create("bench")
    dialect = unified_video.dialect
    now = int(time.time() * 1000)
    rng = random.Random(1)
    batch: list[dict[str, Any]] = []
    for i in range(n):
        spec = dialect.parse(dialect.submit_model.model_validate(BODY))
        task_id = new_task_id()
        batch.append(
            {
                "id": task_id,
                "public_id": spec.public_id,
                "dialect": spec.dialect,
                "key_id": key.id,
                "model": spec.model,
                "operation": spec.operation.value,
                "params": {**spec.params, "sandbox": {"queue": 0, "duration": 3600}},
                "request": spec.request,
                "channel": "sandbox",
                "upstream_id": f"sbx-{task_id.lower()}",
                "attempt": 0,
                "status": Status.RUNNING.value,
                "progress": 0,
                "created_at": now,
                "started_at": now,
                "updated_at": now,
                "next_run_at": now + int(rng.uniform(0, spread_s) * 1000),
                "version": 3,
            }
        )
        if len(batch) >= 5000 or i == n - 1:
            with db.write() as conn:
                conn.execute(insert(tasks), batch)
            batch.clear()
    db.dispose()


def upstream_polls(metrics_url: str) -> int:
    """Polls the node made so far, from its Prometheus counter."""
    total = 0.0
    for line in httpx.get(metrics_url, timeout=30).text.splitlines():
        if line.startswith("mediarelay_upstream_polls_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=90, help="how long the node works on them")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    floor = subprocess.run(
        [sys.executable, "-c", "import httpx, os; print(open('/proc/self/status').read())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    floor_mb = next(int(line.split()[1]) / 1024 for line in floor.splitlines() if line.startswith("VmRSS:"))
    try:
        # Idle node and time to ready.
        port = free_port()
        started = time.monotonic()
        proc = spawn(tmp / "idle", port, tmp / "idle.log")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        ready_fresh = time.monotonic() - started
        time.sleep(5)
        idle_mb = rss_mb(proc.pid)
        stop(proc)
        started = time.monotonic()
        proc = spawn(tmp / "idle", port, tmp / "idle.log")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        ready_again = time.monotonic() - started
        stop(proc)
        print(f"idle API node RSS {idle_mb:.0f} MB (bare interpreter with httpx: {floor_mb:.0f} MB)")
        print(
            f"time to ready: {ready_fresh:.2f} s on a fresh directory, {ready_again:.2f} s on an existing one"
        )

        # A node with N tasks in flight.
        url = f"sqlite:///{tmp / 'busy' / 'mediarelay.db'}"
        (tmp / "busy").mkdir()
        t0 = time.monotonic()
        fill_running(url, args.tasks, 60.0)
        print(f"inserted {args.tasks} running tasks in {time.monotonic() - t0:.1f} s", flush=True)
        port = free_port()
        proc = spawn(tmp / "busy", port, tmp / "busy.log")
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        peak = 0.0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(1)
        polls = upstream_polls(f"http://127.0.0.1:{port}/metrics")
        stop(proc)
        print(
            f"{args.tasks} in-flight tasks, {args.seconds} s: peak RSS {peak:.0f} MB,"
            f" {polls} polls made ({polls / args.seconds:.0f}/s)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
