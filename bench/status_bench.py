"""Status-query throughput: mediarelay's status endpoints vs nginx serving the very same bytes.

Fills a fresh store with N finished tasks across the dialects, starts `mediarelay serve` (one process)
and nginx (one worker) on 127.0.0.1, and runs wrk against both — same connections, same duration, same
set of 1,000 randomly chosen tasks per dialect, rounds interleaved — then prints requests/s, latency and
the ratio to nginx. Bounded in count and time; loopback only.

    .venv/bin/python bench/status_bench.py --tasks 100000 --duration 10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from mediarelay.dialects import avatar, faceswap, pika, unified_video
from mediarelay.domain import Status
from mediarelay.store import database
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import assets, tasks
from mediarelay.store.tasks import new_task_id

BIN = Path(sys.executable).parent / "mediarelay"

SAMPLES: dict[str, tuple[Any, dict[str, Any]]] = {
    "avatar": (
        avatar,
        {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/voice.mp3"},
    ),
    "pika": (
        pika,
        {
            "promptText": "moving",
            "model": "1.5",
            "options": {
                "aspectRatio": 1.7777777777777777,
                "frameRate": 24,
                "camera": {},
                "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
                "extend": False,
            },
            "image": "",
        },
    ),
    "unified_video": (
        unified_video,
        {
            "model": "sora-2",
            "prompt": "make animate",
            "orientation": "portrait",
            "size": "small",
            "duration": 10,
        },
    ),
    "faceswap": (faceswap, {"taskType": 6, "targetUrls": ["https://example.com/p.png"], "scale": 2}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(url: str, n: int) -> tuple[str, dict[str, list[str]]]:
    """N finished tasks (with result rows) spread over the dialects; returns a key and public ids."""
    database.upgrade(url)
    db = Database(url)
    key, secret = KeyRepo(db).create("bench")
    names = list(SAMPLES)
    ids: dict[str, list[str]] = {name: [] for name in names}
    now = int(time.time() * 1000)
    batch_tasks: list[dict[str, Any]] = []
    batch_assets: list[dict[str, Any]] = []

    def flush() -> None:
        with db.write() as conn:
            conn.execute(insert(tasks), batch_tasks)
            conn.execute(insert(assets), batch_assets)
        batch_tasks.clear()
        batch_assets.clear()

    for i in range(n):
        name = names[i % len(names)]
        module, body = SAMPLES[name]
        spec = module.dialect.parse(module.dialect.submit_model.model_validate(body))
        task_id = new_task_id()
        ids[name].append(spec.public_id)
        batch_tasks.append(
            {
                "id": task_id,
                "public_id": spec.public_id,
                "dialect": spec.dialect,
                "key_id": key.id,
                "model": spec.model,
                "operation": spec.operation.value,
                "params": spec.params,
                "request": spec.request,
                "channel": "sandbox",
                "upstream_id": f"sbx-{task_id.lower()}",
                "attempt": 0,
                "status": Status.SUCCEEDED.value,
                "progress": 100,
                "created_at": now - 60_000,
                "started_at": now - 59_000,
                "finished_at": now - 1_000,
                "updated_at": now - 1_000,
                "version": 7,
            }
        )
        video = spec.operation.value.endswith("video") or spec.operation.value == "avatar"
        roles = [
            ("video", "mp4", "video/mp4"),
            ("poster", "jpg", "image/jpeg"),
            ("thumbnail", "webp", "image/webp"),
        ]
        if not video:
            roles = [("image", "png", "image/png"), ("thumbnail", "jpg", "image/jpeg")]
        for role, ext, mime in roles:
            batch_assets.append(
                {
                    "task_id": task_id,
                    "role": role,
                    "idx": 0,
                    "key": f"{task_id}/{role}-0.{ext}",
                    "mime": mime,
                    "bytes": 123456,
                    "sha256": "0" * 64,
                    "width": 720,
                    "height": 1280,
                    "duration": 10.0 if role == "video" else None,
                    "created_at": now,
                }
            )
        if len(batch_tasks) >= 5000:
            flush()
    if batch_tasks:
        flush()
    db.dispose()
    return secret, ids


def status_path(name: str, public_id: str) -> str:
    return {
        "avatar": f"/avatar/task/{public_id}",
        "pika": f"/pika/feed/{public_id}",
        "unified_video": f"/v1/video/query?id={public_id}",
        "faceswap": f"/getTaskInfo?promptId={public_id}",
    }[name]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


LUA = """
paths = {%s}
headers = {}
%s
request = function()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float


def parse_wrk(out: str) -> Result:
    def latency(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors.group(0)}\n{out}")
    return Result(float(rps.group(1)) if rps else 0.0, latency("50"), latency("99"))


def run_wrk(base: str, script: Path, args: argparse.Namespace) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(args.threads),
            "-c",
            str(args.connections),
            "-d",
            f"{args.duration}s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 30,
        check=True,
    ).stdout
    return parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="finished tasks in the store")
    parser.add_argument("--sample", type=int, default=1000, help="distinct tasks queried per dialect")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per dialect")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is needed: apt-get install {tool}")

    work = Path(tempfile.mkdtemp(prefix="mr-bench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the static files
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data = work / "data"
        started = time.monotonic()
        secret, ids = fill(f"sqlite:///{data / 'mediarelay.db'}", args.tasks)
        print(f"filled {args.tasks} finished tasks in {time.monotonic() - started:.1f}s", flush=True)

        port = free_port()
        env = {**os.environ, "MEDIARELAY_ACCESS_LOG": "false", "MEDIARELAY_SANDBOX__ENABLED": "true"}
        procs.append(
            subprocess.Popen(
                [str(BIN), "serve", "--port", str(port), "--data-dir", str(data)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / "mediarelay.log").open("w"),
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")

        # The very same bytes, one file per task, for nginx.
        root = work / "static"
        headers = {"Authorization": f"Bearer {secret}"}
        rng = random.Random(7)
        picked: dict[str, list[str]] = {}
        with httpx.Client(base_url=base, headers=headers) as client:
            for name, public_ids in ids.items():
                picked[name] = rng.sample(public_ids, min(args.sample, len(public_ids)))
                for i, public_id in enumerate(picked[name]):
                    r = client.get(status_path(name, public_id))
                    r.raise_for_status()
                    target = root / name / f"{i}.json"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(r.content)

        nginx_port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log; daemon off;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; default_type application/json; server {{ listen 127.0.0.1:{nginx_port};"
            f" root {root}; location / {{ }} }} }}\n"
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{nginx_port}/")

        print(
            f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} interleaved"
            f" rounds, {args.sample} random tasks per dialect, {args.tasks} tasks in the store\n"
        )
        print("| endpoint | mediarelay req/s | p50 / p99 ms | nginx req/s | p50 / p99 ms | ratio |")
        print("|---|---|---|---|---|---|")
        for name in picked:
            mr_paths = ", ".join(f'"{status_path(name, p)}"' for p in picked[name])
            ng_paths = ", ".join(f'"/{name}/{i}.json"' for i in range(len(picked[name])))
            mr_script = work / f"{name}-mr.lua"
            mr_script.write_text(LUA % (mr_paths, f'headers["Authorization"] = "Bearer {secret}"'))
            ng_script = work / f"{name}-nginx.lua"
            ng_script.write_text(LUA % (ng_paths, ""))
            mr: list[Result] = []
            ng: list[Result] = []
            for _ in range(args.rounds):
                ng.append(run_wrk(f"http://127.0.0.1:{nginx_port}", ng_script, args))
                mr.append(run_wrk(base, mr_script, args))
            m_rps = sum(r.rps for r in mr) / len(mr)
            n_rps = sum(r.rps for r in ng) / len(ng)
            endpoint = status_path(name, "{id}").split("?")[0]
            print(
                f"| {endpoint} | {m_rps:,.0f} | {mr[-1].p50_ms:.2f} / {mr[-1].p99_ms:.2f}"
                f" | {n_rps:,.0f} | {ng[-1].p50_ms:.2f} / {ng[-1].p99_ms:.2f} | {m_rps / n_rps:.2f} |",
                flush=True,
            )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
