"""Durability: SIGKILL the server with tasks in every stage, restart it, and every task finishes exactly once."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import httpx

from conftest import Server, start_server, wait_until
from mediarelay.media import probe


def rows(server: Server, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{server.data_dir / 'mediarelay.db'}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def test_kill_9_mid_flight_then_restart_finishes_every_task_once(tmp_path: Path) -> None:
    server = start_server(tmp_path, MEDIARELAY_SANDBOX__QUEUE_SECONDS="0.2", MEDIARELAY_SANDBOX__JITTER="0")
    key = server.new_key()
    ids: list[str] = []
    with server.client(key) as api:
        for i in range(24):
            # Staggered run times: at the kill some tasks are queued, some running, some finalizing.
            r = api.post(
                "/avatar/generation",
                json={"avatar_url": f"https://example.com/{i}.png", "audio_url": "https://example.com/a.mp3"},
                headers={
                    "X-Sandbox-Duration": str(0.3 + (i % 6) * 0.5),
                    "X-Sandbox-Queue": str((i % 4) * 0.4),
                },
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["data"])

        def states() -> dict[int, int]:
            found: dict[int, int] = {}
            for task_id in ids:
                status = api.get(f"/avatar/task/{task_id}").json()["web_work_status"]
                found[status] = found.get(status, 0) + 1
            return found

        # Kill once some have finished and others have not.
        wait_until(states, lambda s: s.get(200, 0) >= 3, timeout=60, every=0.05)
        before = states()
    server.kill()
    assert before.get(200, 0) < len(ids), f"everything finished before the kill: {before}"
    in_flight = rows(server, "select count(*) from tasks where status in ('queued','running','finalizing')")[
        0
    ][0]
    assert in_flight, "nothing was in flight at the kill"

    server.start()
    with server.client(key) as api:
        for task_id in ids:
            work = wait_until(
                lambda t=task_id: api.get(f"/avatar/task/{t}").json(),
                lambda w: w["web_work_status"] == 200,
                timeout=120,
            )
            video = httpx.get(work["work_video_path"])
            assert video.status_code == 200
    server.stop()

    # Exactly once: one 'succeeded' transition and one set of files per task, every file intact.
    done = dict(
        rows(server, "select task_id, count(*) from task_events where status='succeeded' group by task_id")
    )
    assert len(done) == len(ids) and set(done.values()) == {1}
    per_task = dict(rows(server, "select task_id, count(*) from assets group by task_id"))
    assert set(per_task.values()) == {3}, per_task  # video + poster + thumbnail, no duplicates
    files = server.data_dir / "files"
    for key_, size, sha in rows(server, "select key, bytes, sha256 from assets"):
        data = (files / str(key_)).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    for (key_,) in rows(server, "select key from assets where role='video'"):
        info = probe(files / str(key_))
        assert info.video_codec == "h264" and info.audio_codec == "aac" and info.duration
    # Partial files of the killed run were cleared at restart; finished steps leave none behind.
    assert list((files / ".staging").iterdir()) == []
