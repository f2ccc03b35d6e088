"""Status-query throughput: mediarelay's status endpoints vs nginx serving the very same bytes.

Fills a fresh store with N finished tasks across the dialects, starts `mediarelay serve` (one process)
and nginx (one worker) on 127.0.0.1, and runs wrk against both — same connections, same duration, same
set of 1,000 randomly chosen tasks per dialect, rounds interleaved — then prints requests/s, latency and
the ratio to nginx. Bounded in count and time; loopback only.

    .venv/bin/python bench/status_bench.py --tasks 1000000 --duration 10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_util import BIN, WrkResult, free_port, need_tools, start_nginx, wait_http, wrk
from sqlalchemy import insert

from mediarelay.dialects import avatar, faceswap, native, openai_videos, pika, unified_video
from mediarelay.domain import Status
from mediarelay.store import database
from mediarelay.store.database import Database
from mediarelay.store.keys import KeyRepo
from mediarelay.store.schema import assets, tasks
from mediarelay.store.tasks import new_task_id

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
    "openai_videos": (
        openai_videos,
        {"model": "sora-2", "prompt": "a cat", "seconds": "4", "size": "720x1280"},
    ),
    "native": (
        native,
        {"model": "sandbox-video", "operation": "text_to_video", "prompt": "a cat", "seconds": 4},
    ),
}


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
        "openai_videos": f"/v1/videos/{public_id}",
        "native": f"/v1/tasks/{public_id}",
    }[name]


LUA = """
paths = {%s}
headers = {}
%s
request = function()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""


def mean(results: list[WrkResult], attr: str) -> float:
    return sum(float(getattr(r, attr)) for r in results) / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000, help="finished tasks in the store")
    parser.add_argument("--sample", type=int, default=1000, help="distinct tasks queried per dialect")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per dialect")
    parser.add_argument("--connections", default="64,256", help="wrk connection counts to run")
    parser.add_argument("--server", default="granian", choices=["granian", "uvicorn"])
    parser.add_argument("--dialects", default=",".join(SAMPLES))
    args = parser.parse_args()
    need_tools("wrk", "nginx")

    work = Path(tempfile.mkdtemp(prefix="mr-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    nginx = None
    try:
        data = work / "data"
        started = time.monotonic()
        secret, ids = fill(f"sqlite:///{data / 'mediarelay.db'}", args.tasks)
        print(f"filled {args.tasks} finished tasks in {time.monotonic() - started:.1f}s", flush=True)

        port = free_port()
        env = {**os.environ, "MEDIARELAY_ACCESS_LOG": "false", "MEDIARELAY_SERVER": args.server}
        env.pop("MEDIARELAY_CONFIG", None)
        procs.append(
            subprocess.Popen(
                [str(BIN), "serve", "--port", str(port), "--data-dir", str(data)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / "mediarelay.log").open("w"),
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", timeout=120)

        # The very same bytes, one file per task, for nginx.
        root = work / "static"
        headers = {"Authorization": f"Bearer {secret}"}
        rng = random.Random(7)
        picked: dict[str, list[str]] = {}
        with httpx.Client(base_url=base, headers=headers) as client:
            for name in args.dialects.split(","):
                picked[name] = rng.sample(ids[name], min(args.sample, len(ids[name])))
                for i, public_id in enumerate(picked[name]):
                    r = client.get(status_path(name, public_id))
                    r.raise_for_status()
                    target = root / name / f"{i}.json"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(r.content)
        nginx = start_nginx(work, root=root)
        # The ceiling of any Python app on granian here: a bare app answering one of the same responses.
        bare_port = free_port()
        first = root / next(iter(picked)) / "0.json"
        bare_app = [str(BIN.parent / "python"), str(Path(__file__).with_name("bare_app.py"))]
        bare_cmd = [*bare_app, str(first), str(bare_port), "rsgi"]
        procs.append(subprocess.Popen(bare_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        bare = f"http://127.0.0.1:{bare_port}"
        wait_http(bare + "/", timeout=30)
        ceiling: dict[int, WrkResult] = {}

        print(
            f"\nwrk -t1 -d{args.duration}s, {args.rounds} interleaved rounds, {args.sample} random tasks per"
            f" dialect, {args.tasks} tasks in the store, mediarelay on {args.server}\n"
        )
        print(
            "| endpoint | conns | mediarelay req/s | p50 / p99 ms | nginx req/s | p50 / p99 ms | ratio | p99 ratio |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name in picked:
            mr_paths = ", ".join(f'"{status_path(name, p)}"' for p in picked[name])
            ng_paths = ", ".join(f'"/{name}/{i}.json"' for i in range(len(picked[name])))
            mr_script = work / f"{name}-mr.lua"
            mr_script.write_text(LUA % (mr_paths, f'headers["Authorization"] = "Bearer {secret}"'))
            ng_script = work / f"{name}-nginx.lua"
            ng_script.write_text(LUA % (ng_paths, ""))
            for conns in (int(c) for c in args.connections.split(",")):
                mr: list[WrkResult] = []
                ng: list[WrkResult] = []
                for _ in range(args.rounds):
                    ng.append(wrk(nginx.base, conns, args.duration, ng_script))
                    mr.append(wrk(base, conns, args.duration, mr_script))
                if conns not in ceiling:
                    ceiling[conns] = wrk(bare, conns, args.duration, ng_script)
                bad = sum(r.errors for r in mr + ng)
                m_rps, n_rps = mean(mr, "rps"), mean(ng, "rps")
                m_p99, n_p99 = mean(mr, "p99"), mean(ng, "p99")
                endpoint = status_path(name, "{id}").split("?")[0]
                print(
                    f"| {endpoint} | {conns} | {m_rps:,.0f} | {mean(mr, 'p50'):.2f} / {m_p99:.2f}"
                    f" | {n_rps:,.0f} | {mean(ng, 'p50'):.2f} / {n_p99:.2f} | {m_rps / n_rps:.2f}"
                    f" | {m_p99 / n_p99:.2f} |" + (f" ({bad} errors)" if bad else ""),
                    flush=True,
                )
        print("\nbare granian app (RSGI) answering the same bytes, no work at all: Python's ceiling here")
        for conns, r in ceiling.items():
            print(f"  {conns} conns: {r.rps:,.0f} req/s, p50 {r.p50:.2f} / p99 {r.p99:.2f} ms")
    finally:
        if nginx is not None:
            nginx.stop()
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
