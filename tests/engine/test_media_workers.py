"""Results are probed and previewed in a separate worker process, and a crashed worker costs a retry,
not the task or the server."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from conftest import TINY, Server, start_server, wait_until


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a child that exits while this looks, e.g. an encoder, is skipped)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = [int(k) for t in Path(f"/proc/{parent}/task").iterdir() for k in (t / "children").read_text().split()]
        except FileNotFoundError:
            continue
        found.extend(kids)
        todo.extend(kids)
    return found


def media_workers(server: Server) -> list[int]:
    """The server's (or its job worker's) process-pool children: spawned interpreters."""
    workers = []
    for pid in descendants(server.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing" in cmdline and b"spawn_main" in cmdline:
            workers.append(pid)
    return workers


def finish(api: httpx.Client) -> dict[str, object]:
    task = api.post("/v1/tasks", json=TINY).json()
    return wait_until(  # type: ignore[no-any-return]
        lambda: api.get(f"/v1/tasks/{task['id']}").json(),
        lambda t: t["status"] in ("succeeded", "failed"),
        timeout=60,
    )


def test_a_killed_media_worker_is_replaced_and_the_task_retried(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        with server.client(server.new_key()) as api:
            first = finish(api)
            assert first["status"] == "succeeded", first
            workers = media_workers(server)
            assert len(workers) == 1, workers  # media_processes = 1 by default
            os.kill(workers[0], signal.SIGKILL)
            second = finish(api)
            assert second["status"] == "succeeded", second
            replaced = media_workers(server)
            assert len(replaced) == 1 and replaced != workers
        roles = server.rows("select task_id, role from assets")
        upstream = dict(server.rows("select id, upstream from tasks"))
    finally:
        server.stop()
    for task in (first, second):
        assert sorted(r for p, r in roles if p == task["id"]) == ["poster", "spritesheet", "thumbnail", "video"]
    # The second task's first finalize hit the broken pool: recorded as a failed fetch, then retried.
    second_upstream = upstream[second["id"]]
    if isinstance(second_upstream, str):
        second_upstream = json.loads(second_upstream)
    assert second_upstream["fetch_failures"] == 1
    assert "media worker crashed" in second_upstream["fetch_error"]


def test_media_work_in_threads_when_no_processes_are_configured(tmp_path: Path) -> None:
    server = start_server(tmp_path, MEDIARELAY_MEDIA_PROCESSES="0")
    try:
        with server.client(server.new_key()) as api:
            task = finish(api)
            assert task["status"] == "succeeded", task
            assert media_workers(server) == []
        count = server.rows("select count(*) from assets")[0][0]
    finally:
        server.stop()
    assert count == 4
