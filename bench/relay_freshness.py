"""Relay freshness: how soon after an upstream finishes does a client of mediarelay see the result?

For each channel type: a slow fake upstream (`tests/channels/fakeupstream.py`, tasks take MIN..MAX
seconds, every request answered after LATENCY) on 127.0.0.1, and `mediarelay serve` (one process,
SQLite) relaying to it. N tasks are submitted through the native API; a client long-polls each one
(`GET /v1/tasks/{id}?wait=30`, If-None-Match) and notes when it first sees it succeeded — with the
result file already stored by mediarelay. Freshness = that moment minus the upstream's completion time
(both clocks are this machine's). Also counted: upstream requests per task (submits, polls, downloads).

The reference, on the very same tasks: a poller that checks every unfinished task once per fixed 15 s
round (new-api's loop, with its serial pacing left out: the best case of a fixed round), evaluated
against the tasks' true completion times.

The defaults are the headline setting of docs/benchmarks.md ("Relay freshness"): 1,000 tasks per type
whose upstream run takes 60-120 s (a realistic video-generation load); `--min 20 --max 40` is the
denser variant (the same tasks finishing three times as close together).

    .venv/bin/python bench/relay_freshness.py --tasks 1000 --min 60 --max 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h11
import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "mediarelay"
ROUND = 15.0  # the reference's fixed poll round, seconds
MODEL_MAP = {"unified_video": {"*": "sora-2"}, "openai_videos": {"*": "sora-2"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def start_server(tmp: Path, kind: str, upstream: str) -> tuple[subprocess.Popen[str], str, str]:
    port = free_port()
    channel = {
        "name": kind,
        "type": kind,
        "base_url": upstream,
        "credentials": ["env:BENCH_UPSTREAM_KEY"],
        "model_map": MODEL_MAP.get(kind, {}),
        "max_concurrency": 100_000,
        "deadline_seconds": 900,
    }
    env = {
        **os.environ,
        "MEDIARELAY_SANDBOX__ENABLED": "false",
        "MEDIARELAY_FETCH__ALLOWED_HOSTS": '["127.0.0.1"]',
        "MEDIARELAY_ACCESS_LOG": "false",
        "MEDIARELAY_CHANNELS": json.dumps([channel]),
        "BENCH_UPSTREAM_KEY": "bench-token",
    }
    env.pop("MEDIARELAY_CONFIG", None)
    data = tmp / f"data-{kind}"
    log = (tmp / f"server-{kind}.log").open("w")
    command = [str(BIN)]
    if os.environ.get("BENCH_SERVER_RUNNER"):  # e.g. a profiler wrapper
        command = [sys.executable, os.environ["BENCH_SERVER_RUNNER"]]
    proc = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        cwd=tmp,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert proc.stdout is not None
    proc.stdout.readline()  # the admin key
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    key = subprocess.run(
        [str(BIN), "keys", "create", "--name", "bench", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=True,
    ).stdout.strip()
    return proc, base, key


async def long_poll(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], host: str, key: str, task_id: str, etag: str
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = conn
    client = h11.Connection(h11.CLIENT)
    headers = [("host", host), ("authorization", f"Bearer {key}")]
    if etag:
        headers.append(("if-none-match", etag))
    writer.write(
        client.send(h11.Request(method="GET", target=f"/v1/tasks/{task_id}?wait=30", headers=headers))
    )
    writer.write(client.send(h11.EndOfMessage()))
    await writer.drain()
    status, got, body = 0, {}, bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            client.receive_data(data)
        elif isinstance(event, h11.Response):
            status, got = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body.extend(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, got, bytes(body)


def start_fake(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """The fake upstream in its own process, so that it and this client do not share one interpreter."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "channels" / "fakeupstream.py"),
            "--min",
            str(args.min),
            "--max",
            str(args.max),
            "--queue",
            "1.0",
            "--latency",
            str(args.latency),
            *(["--lognormal", args.lognormal] if args.lognormal else []),
            *(["--no-progress"] if args.no_progress else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


async def run_type(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    fake_proc, fake_url = start_fake(args)
    proc, base, key = start_server(tmp, kind, fake_url)
    host = base.removeprefix("http://")
    port = int(host.rsplit(":", 1)[1])
    seen: dict[str, float] = {}
    ids: dict[str, str] = {}  # marker -> mediarelay task id
    limits = httpx.Limits(max_connections=args.tasks + 50, max_keepalive_connections=args.tasks + 50)
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as client:
        started = time.time()

        async def submit(i: int) -> None:
            marker = f"mk-ok-{i}"
            body = {
                "model": "bench",
                "operation": "text_to_video",
                "prompt": f"clip {marker}",
                "width": 64,
                "height": 64,
                "seconds": 1,
            }
            r = await client.post("/v1/tasks", json=body)
            r.raise_for_status()
            ids[marker] = r.json()["id"]
            watchers.add(asyncio.get_running_loop().create_task(watch(marker, r.json()["id"])))

        async def watch(marker: str, task_id: str) -> None:
            """One kept-alive connection per task, long-polling until it is finished. (A raw h11 client:
            a pooled client with a thousand connections spends its time managing the pool.)"""
            etag = ""
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            while True:
                try:
                    if conn is None:
                        conn = await asyncio.open_connection("127.0.0.1", port)
                    status, headers, body = await long_poll(conn, host, key, task_id, etag)
                except (OSError, h11.ProtocolError, asyncio.IncompleteReadError):
                    conn = None
                    continue
                except Exception as exc:
                    print(f"watcher of {task_id} failed: {exc!r}", file=sys.stderr)
                    raise
                if status == 200:
                    etag = headers.get("etag", "")
                    state = json.loads(body)["status"]
                    if state == "succeeded":
                        seen[marker] = time.time()
                    elif state in ("failed", "canceled"):
                        seen[marker] = float("nan")
                    if state in ("succeeded", "failed", "canceled"):
                        conn[1].close()
                        return

        watchers: set[asyncio.Task[None]] = set()  # referenced: the loop keeps only weak references
        gate = asyncio.Semaphore(16)

        async def gated(i: int) -> None:
            async with gate:
                await submit(i)

        await asyncio.gather(*(gated(i) for i in range(args.tasks)))
        submitted = time.time() - started
        longest = float(args.lognormal.split(",")[2]) if args.lognormal else args.max
        deadline = time.time() + longest + 300
        while len(seen) < args.tasks and time.time() < deadline:
            await asyncio.sleep(0.5)
    proc.terminate()
    proc.wait(30)
    stats = httpx.get(f"{fake_url}/__stats", timeout=30).json()
    fake_proc.terminate()
    fake_proc.wait(10)
    by_marker = stats["tasks"]
    events = stage_times(tmp / f"data-{kind}" / "mediarelay.db")
    fresh, ref_fresh, ref_requests, failed = [], [], [], 0
    # Fixed 1-second polling of the same tasks: the submit, one poll per second until done, the download.
    per_second = [1 + math.ceil(t["duration"]) + 1 for t in by_marker.values()]
    poll_lag, store_lag, client_lag = [], [], []
    for marker, at in seen.items():
        task = by_marker[marker]
        done = task["created"] + task["duration"]
        if math.isnan(at):
            failed += 1
            continue
        fresh.append(at - done)
        finalizing, succeeded = events[ids[marker]]
        poll_lag.append(finalizing - done)
        store_lag.append(succeeded - finalizing)
        client_lag.append(at - succeeded)
        rounds_until = math.ceil((done - started) / ROUND)
        ref_fresh.append(started + rounds_until * ROUND - done)
        ref_requests.append(rounds_until - math.floor((task["created"] - started) / ROUND) + 0.0)
    requests = stats["http_requests"]  # submits, polls (a batch counts once), downloads, cancels
    return {
        "type": kind,
        "tasks": args.tasks,
        "seen": len(fresh),
        "failed": failed,
        "submit_s": submitted,
        "p50": statistics.median(fresh) if fresh else float("nan"),
        "p95": pct(fresh, 0.95) if fresh else float("nan"),
        "max": max(fresh) if fresh else float("nan"),
        "ref_p50": statistics.median(ref_fresh) if ref_fresh else float("nan"),
        "ref_p95": pct(ref_fresh, 0.95) if ref_fresh else float("nan"),
        "requests_per_task": requests / max(1, len(by_marker)),
        "ref_requests_per_task": (statistics.mean(ref_requests) + 1) if ref_requests else float("nan"),
        "batches": stats["batch_requests"],
        "one_second_requests_per_task": statistics.mean(per_second) if per_second else float("nan"),
        "stages": {
            name: (statistics.median(v), pct(v, 0.95))
            for name, v in (("poll", poll_lag), ("store", store_lag), ("client", client_lag))
            if v
        },
    }


def stage_times(db_path: Path) -> dict[str, tuple[float, float]]:
    """task id -> (when it went finalizing, when it succeeded), epoch seconds, from its event rows."""
    out: dict[str, dict[str, float]] = {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        for task_id, status, at in db.execute(
            "select task_id, status, at from task_events where status in ('finalizing', 'succeeded')"
        ):
            out.setdefault(task_id, {})[status] = at / 1000
    return {k: (v.get("finalizing", math.nan), v.get("succeeded", math.nan)) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--types", default="mediarelay,gptbest,unified_video,openai_videos")
    parser.add_argument("--min", type=float, default=60.0, help="shortest upstream task, seconds")
    parser.add_argument("--max", type=float, default=120.0, help="longest upstream task, seconds")
    parser.add_argument("--latency", type=float, default=0.05, help="upstream answer delay, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the data and server logs (printed path)")
    parser.add_argument(
        "--lognormal", default="", help="median,p95,cap seconds: log-normal run times instead of --min..--max"
    )
    parser.add_argument("--no-progress", action="store_true", help="the upstream reports no progress")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    print(f"working in {tmp}", file=sys.stderr)
    try:
        results = [asyncio.run(run_type(k, args, tmp)) for k in args.types.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    spread = f"log-normal {args.lognormal} (median,p95,cap)" if args.lognormal else f"{args.min:g}-{args.max:g}"
    print(
        f"\n{args.tasks} tasks per type, upstream tasks {spread} s,"
        f" {'no progress reported' if args.no_progress else 'with progress'}, "
        f"answers after {args.latency * 1000:.0f} ms; freshness = seen by the client - upstream done\n"
    )
    head = (
        "type",
        "seen",
        "failed",
        "submit s",
        "p50 s",
        "p95 s",
        "max s",
        "ref p50 s",
        "ref p95 s",
        "p95 / ref",
        "upstream req/task",
        "ref req/task",
        "1 s polling req/task",
        "req / 1 s polling",
    )
    print(" | ".join(head))
    for r in results:
        print(
            " | ".join(
                [
                    r["type"],
                    str(r["seen"]),
                    str(r["failed"]),
                    f"{r['submit_s']:.1f}",
                    f"{r['p50']:.2f}",
                    f"{r['p95']:.2f}",
                    f"{r['max']:.2f}",
                    f"{r['ref_p50']:.2f}",
                    f"{r['ref_p95']:.2f}",
                    f"{r['p95'] / r['ref_p95']:.3f}",
                    f"{r['requests_per_task']:.1f}",
                    f"{r['ref_requests_per_task']:.1f}",
                    f"{r['one_second_requests_per_task']:.1f}",
                    f"{r['requests_per_task'] / r['one_second_requests_per_task']:.3f}",
                ]
            )
        )
    print(
        "\nwhere the time goes (p50 / p95 s): upstream done -> mediarelay sees it (poll), -> file stored "
        "and task succeeded (store), -> client's long-poll answered (client)"
    )
    for r in results:
        parts = [f"{name} {p50:.2f} / {p95:.2f}" for name, (p50, p95) in r["stages"].items()]
        print(f"{r['type']}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
