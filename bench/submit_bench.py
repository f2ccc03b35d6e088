"""Submit throughput: tasks accepted per second by one `mediarelay serve` on the embedded default
(SQLite, local files, sandbox channel), each durable when acknowledged.

wrk POSTs native submits (`POST /v1/tasks`, a small sandbox image task that stays queued at the sandbox
for an hour, so the engine dispatches each once and then leaves the CPU to the API) over 64 connections
for `--duration` seconds. Durability is checked, not assumed: the server is then SIGKILLed and the task
rows counted in the database file; every acknowledged submit must be there. The reference, measured in
the same run with the same wrk settings, is nginx answering the same POST with a fixed 200 (an upper
bound for any HTTP server on this machine, not a like-for-like gateway).

    .venv/bin/python bench/submit_bench.py --duration 10 [--profile stacks.txt]  # profile: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from bench_util import BIN, free_port, need_tools, start_nginx, wait_http, wrk

BODY = {"model": "sandbox-image", "operation": "text_to_image", "prompt": "bench", "width": 32, "height": 32}


def lua(key: str) -> str:
    body = json.dumps(BODY).replace('"', '\\"')
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        'wrk.headers["X-Sandbox-Queue"] = "3600"\n'
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server", default="granian", choices=["granian", "uvicorn"])
    parser.add_argument("--profile", type=Path, help="write py-spy's collapsed stacks of the server here")
    args = parser.parse_args()
    need_tools("wrk", "nginx")
    tmp = Path(tempfile.mkdtemp(prefix="submit-bench-"))
    port = free_port()
    env = {"MEDIARELAY_ACCESS_LOG": "false", "MEDIARELAY_SERVER": args.server}
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--data-dir", str(tmp / "data")],
        stdout=subprocess.PIPE,
        stderr=(tmp / "server.log").open("wb"),
        env={**os.environ, **env},
    )
    nginx = None
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        assert proc.stdout is not None
        key = proc.stdout.readline().decode().strip()
        script = tmp / "submit.lua"
        script.write_text(lua(key))
        spy = None
        if args.profile:  # py-spy samples whichever thread holds the GIL while wrk runs
            spy = subprocess.Popen(
                [str(BIN.parent / "py-spy"), "record", "-p", str(proc.pid), "-d", str(args.duration),
                 "-r", "200", "--format", "raw", "-o", str(args.profile), "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        cpu_before = cpu_seconds(proc.pid)
        ours = wrk(f"http://127.0.0.1:{port}/v1/tasks", args.connections, args.duration, script)
        cpu_used = cpu_seconds(proc.pid) - cpu_before
        if spy is not None:
            spy.wait()
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # durable means: in the file when acknowledged
        proc.wait()
        with sqlite3.connect(f"file:{tmp / 'data' / 'mediarelay.db'}?mode=ro", uri=True) as db:
            stored = int(db.execute("select count(*) from tasks").fetchone()[0])
        nginx = start_nginx(tmp, {"/v1/tasks": b'{"id":"x"}'})
        ref = wrk(f"{nginx.base}/v1/tasks", args.connections, args.duration, script)
    finally:
        if proc.poll() is None:
            proc.kill()
        if nginx is not None:
            nginx.stop()
    acked = ours.requests - ours.errors
    print(f"mediarelay ({args.server}): {ours.rps:,.0f} submits/s, p50 {ours.p50:.2f} ms, p99 {ours.p99:.2f} ms, "
          f"{ours.errors} non-2xx/errors; acknowledged {acked}, stored after SIGKILL {stored}")  # fmt: skip
    # CPU per submit is steadier than submits/s on a machine whose speed varies from run to run.
    print(f"server CPU per acknowledged submit: {cpu_used / max(acked, 1) * 1000:.2f} ms")
    print(f"nginx fixed answer: {ref.rps:,.0f} req/s, p50 {ref.p50:.2f} ms, p99 {ref.p99:.2f} ms")
    print(f"ratio {ours.rps / ref.rps:.3f}; durable: {'yes' if stored >= acked else 'NO'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
