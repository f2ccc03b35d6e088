"""Graceful shutdown on SIGTERM, under both HTTP servers: held long-polls are answered at once with the
current state, event streams end (the client reconnects with Last-Event-ID), the process exits cleanly,
and after a restart the task carries on from the database."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import start_server, wait_until

IMAGE = {"model": "sandbox-image", "operation": "text_to_image", "prompt": "x", "width": 32, "height": 32}


@pytest.mark.parametrize("server_kind", ["granian", "uvicorn"])
def test_sigterm_answers_held_requests_and_leaves_tasks_resumable(server_kind: str, tmp_path: Path) -> None:
    srv = start_server(tmp_path, MEDIARELAY_SERVER=server_kind)
    try:
        with srv.client(srv.admin_key) as c:
            assert c.get("/healthz").headers.get("server", "") == (
                "granian" if server_kind == "granian" else "uvicorn"
            )
            r = c.post("/v1/tasks", json=IMAGE, headers={"X-Sandbox-Queue": "3"})
            assert r.status_code == 200, r.text
            task = r.json()
            # Dispatched (queued at the sandbox for 3 s): nothing changes while the requests are held.
            seen = wait_until(
                lambda: c.get(f"/v1/tasks/{task['id']}"), lambda v: v.json()["started_at"], 10, 0.05
            )
            etag = seen.headers["etag"]
        answers: dict[str, tuple[int, float, str]] = {}

        def hold(name: str, path: str) -> None:
            with srv.client(srv.admin_key) as c:
                with c.stream("GET", path, timeout=60, headers={"If-None-Match": etag}) as resp:
                    body = resp.read().decode()
                answers[name] = (resp.status_code, time.monotonic(), body)

        threads = [
            threading.Thread(target=hold, args=("poll", f"/v1/tasks/{task['id']}?wait=30")),
            threading.Thread(target=hold, args=("sse", f"/v1/tasks/{task['id']}/events")),
        ]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both are held now
        assert answers == {}
        assert srv.proc is not None
        signalled = time.monotonic()
        srv.proc.terminate()
        # uvicorn re-raises the signal once it has shut down (systemd counts SIGTERM as a clean stop).
        assert srv.proc.wait(15) in (0, -signal.SIGTERM)
        assert "Traceback" not in srv.log_path.read_text()
        for t in threads:
            t.join(10)
        assert set(answers) == {"poll", "sse"}
        status, at, body = answers["poll"]
        assert status == 304 and at - signalled < 5  # answered at once: "still as you saw it", re-poll
        status, at, body = answers["sse"]
        assert status == 200 and "event: task" in body and at - signalled < 5
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.base_url}/healthz", timeout=2)

        srv.start()  # same data, same port: the task resumes from the database
        with srv.client(srv.admin_key) as c:
            done = wait_until(
                lambda: c.get(f"/v1/tasks/{task['id']}").json(), lambda t: t["status"] == "succeeded"
            )
            assert done["outputs"]
    finally:
        srv.stop()
