"""Durability: SIGKILL the server with tasks of every dialect in every stage, restart it, and every task
finishes exactly once, with its files intact, and every key's books balance (prices are configured)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conftest import assert_books_balance, start_server, wait_until
from mediarelay.media import probe

PIKA = {
    "promptText": "a paper boat",
    "options": {
        "aspectRatio": 1.7777777777777777,
        "frameRate": 24,
        "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
        "extend": False,
    },
}


# Per dialect: (submit path, body, id from the submit answer, status URL, finished?, result URL).
Dialect = tuple[
    str,
    dict[str, Any],
    Callable[[Any], str],
    Callable[[str], str],
    Callable[[Any], bool],
    Callable[[Any], str],
]
DIALECTS: dict[str, Dialect] = {
    "avatar": (
        "/avatar/generation",
        {"avatar_url": "https://example.com/f.png", "audio_url": "https://example.com/a.mp3"},
        lambda r: r["data"],
        lambda i: f"/avatar/task/{i}",
        lambda s: s["web_work_status"] == 200,
        lambda s: s["work_video_path"],
    ),
    "pika": (
        "/pika/generate",
        PIKA,
        lambda r: r["id"],
        lambda i: f"/pika/feed/{i}",
        lambda s: s["videos"][0]["status"] == "finished",
        lambda s: s["videos"][0]["resultUrl"],
    ),
    "sora": (
        "/v1/video/create",
        {"model": "sora-2", "prompt": "a lighthouse", "size": "small", "duration": 10},
        lambda r: r["id"],
        lambda i: f"/v1/video/query?id={i}",
        lambda s: s["status"] == "completed",
        lambda s: s["video_url"],
    ),
    "upscale": (
        "/createTask",
        {"taskType": 6, "targetUrls": ["https://example.com/p.png"], "scale": 2},
        lambda r: r["data"]["promptId"],
        lambda i: f"/getTaskInfo?promptId={i}",
        lambda s: s["data"]["state"] == 30,
        lambda s: s["data"]["imageList"][0]["origin"],
    ),
    "faceswap-batch": (
        "/createTask",
        {
            "taskType": 7,
            "faceUrl": "https://example.com/face.png",
            "targetUrls": ["https://example.com/v1.mp4", "https://example.com/v2.mp4"],
        },
        lambda r: r["data"]["promptId"],
        lambda i: f"/getTaskInfo?promptId={i}",
        lambda s: s["data"]["state"] == 30 and len(s["data"]["imageList"]) == 2,
        lambda s: s["data"]["imageList"][1]["origin"],
    ),
}


# Every task costs money, so a lost or doubled step would show in the books (docs/billing.md).
PRICES = [
    {"model": "*", "operation": "upscale", "per_image": 70_000},
    {"model": "*", "operation": "face_swap_video", "per_task": 90_000, "per_second": 1_000},
    {"model": "*", "per_task": 100_000, "per_second": 20_000},
]
# A second key's tasks fail (midway, some after the restart) or are canceled (before and after the kill).
LOSING: list[tuple[str, dict[str, Any], dict[str, str], Callable[[Any], str], Callable[[str], str]]] = [
    *[
        (
            "/v1/video/create",
            {"model": "sora-2", "prompt": "a storm", "size": "small", "duration": 10},
            {"X-Sandbox-Fail": "boom", "X-Sandbox-Duration": str(d), "X-Sandbox-Queue": "0"},
            lambda r: r["id"],
            lambda i: f"/v1/video/query?id={i}",
        )
        for d in (0.4, 1.5, 4.0)
    ],
    *[
        (
            "/pika/generate",
            PIKA,
            {"X-Sandbox-Queue": "120"},
            lambda r: r["id"],
            lambda i: f"/pika/feed/{i}",
        )
        for _ in range(2)
    ],
    (
        "/createTask",
        {
            "taskType": 7,
            "faceUrl": "https://example.com/face.png",
            "targetUrls": ["https://example.com/v1.mp4", "https://example.com/v2.mp4?sandbox-fail"],
        },
        {"X-Sandbox-Duration": "1.5"},
        lambda r: r["data"]["promptId"],
        lambda i: f"/getTaskInfo?promptId={i}",
    ),
]


def test_kill_9_mid_flight_then_restart_finishes_every_task_once(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        MEDIARELAY_SANDBOX__QUEUE_SECONDS="0.2",
        MEDIARELAY_SANDBOX__JITTER="0",
        MEDIARELAY_PRICES=json.dumps(PRICES),
    )
    key = server.cli("keys", "create", "--balance", "100").stdout.strip()  # prepaid
    loser = server.cli("keys", "create", "--balance", "10").stdout.strip()
    losing: list[tuple[str, Callable[[str], str]]] = []
    with server.client(loser) as api:
        for path, body, headers, id_of_, url_of in LOSING:
            r = api.post(path, json=body, headers=headers)
            assert r.status_code == 200, r.text
            losing.append((id_of_(r.json()), url_of))
        assert api.post(f"/pika/feed/{losing[3][0]}/cancel").status_code == 200
    submitted: list[tuple[str, str]] = []
    with server.client(key) as api:
        for i in range(20):
            name = list(DIALECTS)[i % len(DIALECTS)]
            path, body, id_of, _, _, _ = DIALECTS[name]
            # Staggered timings: at the kill some tasks are queued, some running, some finalizing.
            r = api.post(
                path,
                json=body,
                headers={
                    "X-Sandbox-Duration": str(0.3 + (i % 6) * 0.5),
                    "X-Sandbox-Queue": str((i % 4) * 0.4),
                },
            )
            assert r.status_code == 200, r.text
            submitted.append((name, id_of(r.json())))

        def finished() -> int:
            return sum(DIALECTS[n][4](api.get(DIALECTS[n][3](i)).json()) for n, i in submitted)

        wait_until(finished, lambda n: n >= 4, timeout=60, every=0.05)
        key_id = api.get("/v1/account").json()["id"]
    server.kill()
    active = server.rows("select count(*) from tasks where status in ('queued','running','finalizing')")[0][0]
    assert active, "nothing was in flight at the kill"

    server.start()
    with server.client(key) as api:
        for name, task_id in submitted:
            _, _, _, url, done, result = DIALECTS[name]
            state = wait_until(lambda u=url(task_id): api.get(u).json(), done, timeout=120)
            assert httpx.get(result(state)).status_code == 200
    with server.client(loser) as api:
        assert api.post(f"/pika/feed/{losing[4][0]}/cancel").status_code == 200
        for task_id, _ in losing:  # the native view shows any dialect's task in mediarelay's terms
            wait_until(
                lambda i=task_id: api.get(f"/v1/tasks/{i}").json()["status"],
                lambda s: s in ("failed", "canceled"),
                timeout=120,
            )
        loser_id = api.get("/v1/account").json()["id"]
    wait_until(
        lambda: server.rows(
            f"select count(*) from tasks where key_id='{loser_id}' and status not in ('failed','canceled','succeeded')"
        ),
        lambda n: n == [(0,)],
        timeout=60,
    )
    server.stop()
    assert_books_balance(server)
    (refunded,) = server.rows(f"select count(*) from ledger where key_id='{loser_id}' and kind='refund'")[0]
    assert refunded == 6  # three failed, two canceled, one failed batch child; its good child paid

    # Exactly once: one 'succeeded' transition per task (batch children included) and one set of files.
    tasks = server.rows(f"select id, status, parent_id from tasks where key_id='{key_id}'")
    assert {status for _, status, _ in tasks} == {"succeeded"}
    done_events = dict(
        server.rows(
            "select task_id, count(*) from task_events where status='succeeded' "
            f"and task_id in (select id from tasks where key_id='{key_id}') group by task_id"
        )
    )
    assert set(done_events) == {t for t, _, _ in tasks} and set(done_events.values()) == {1}
    per_task = dict(server.rows("select task_id, count(*) from assets group by task_id"))
    parents = {p for _, _, p in tasks if p}
    assert not parents & set(per_task)  # a batch parent owns no files: its children do
    assert set(per_task.values()) <= {2, 4}  # image + thumbnail, or video + poster + thumbnail + spritesheet
    files = server.data_dir / "files"
    for key_, size, sha in server.rows("select key, bytes, sha256 from assets"):
        data = (files / str(key_)).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    for (key_,) in server.rows("select key from assets where role='video'"):
        info = probe(files / str(key_))
        assert info.video_codec == "h264" and info.duration
    # Partial files of the killed run were cleared at restart; finished steps leave none behind. (With
    # the job queue other nodes may share the directory: workers sweep files older than an hour instead.)
    if "MEDIARELAY_DATABASE_URL" not in server.env:
        assert list((files / ".staging").iterdir()) == []
