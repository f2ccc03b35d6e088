"""Structured logs (MEDIARELAY_LOG_FORMAT=json): every line a real server writes is one JSON object, the
request id comes back in `X-Request-ID` and is on the lines made while answering, and the engine's lines
about a task carry its id (docs/operations.md#logs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import TINY, start_server, wait_until


def lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for raw in path.read_text().splitlines():
        if raw.strip():
            found.append(json.loads(raw))  # fails the test on any line that is not JSON
    return found


def test_json_logs_carry_request_and_task_ids(tmp_path: Path) -> None:
    srv = start_server(tmp_path, MEDIARELAY_LOG_FORMAT="json", MEDIARELAY_SANDBOX__RUN_SECONDS="0.5")
    try:
        with srv.client(srv.new_key("logs")) as c:
            r = c.post("/v1/tasks", json=TINY, headers={"X-Request-ID": "req-abc.123", "X-Sandbox-Fail": "boom"})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == "req-abc.123"
            task_id = r.json()["id"]
            wait_until(lambda: c.get(f"/v1/tasks/{task_id}").json()["status"], lambda s: s == "failed")
            # No header, or one that is not a plain short token: a fresh id, never the client's text.
            plain = c.get("/healthz")
            odd = c.get("/healthz", headers={"X-Request-ID": "x" * 200})
            status = c.get(f"/v1/tasks/{task_id}")  # the status fast path answers with an id too
        ids = {plain.headers["x-request-id"], odd.headers["x-request-id"], status.headers["x-request-id"]}
        assert len(ids) == 3 and "x" * 200 not in ids
    finally:
        srv.stop()
    found = lines(srv.log_path)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in found)
    accepted = [line for line in found if line["message"].startswith("task accepted")]
    assert [(a["request_id"], a["task_id"]) for a in accepted] == [("req-abc.123", task_id)]
    failed = [line for line in found if line["message"].startswith("task failed")]
    assert failed and failed[0]["task_id"] == task_id and "boom" in failed[0]["message"]
    # The HTTP server's own lines (startup, access log) are JSON too: they were parsed above.
    assert any(line["logger"].startswith(("_granian", "granian", "uvicorn")) for line in found)
