"""Helpers for the admin UI tests: a gateway with a second sandbox channel to disable, and a logged-in
HTTP client that knows its CSRF token."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from conftest import Server, start_server

# A second channel that takes the models `b-*` before the built-in sandbox (higher priority).
CHANNEL_B = {
    "name": "sandbox-b",
    "type": "sandbox",
    "models": ["b-*"],
    "priority": 10,
    "options": {"queue_seconds": 0.3, "run_seconds": 1.5, "jitter": 0.2},
}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')

TEXT_TO_VIDEO = {"model": "sora-2", "operation": "text_to_video", "prompt": "a lighthouse at dusk",
                 "width": 320, "height": 240, "seconds": 2, "fps": 12}


def web_server(tmp: Path, **env: str) -> Server:
    return start_server(tmp, MEDIARELAY_CHANNELS=json.dumps([CHANNEL_B]), **env)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


class Admin:
    """An HTTP client logged in to the admin pages (cookies kept by httpx), with its CSRF token."""

    def __init__(self, server: Server, key: str) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=30)
        page = self.http.get("/admin/login")
        assert page.status_code == 200, page.text
        done = self.http.post("/admin/login", data={"csrf": csrf_of(page.text), "key": key, "next": "/admin"})
        assert done.status_code == 303, done.text
        assert "mr_admin" in self.http.cookies, done.headers
        self.csrf = csrf_of(self.http.get("/admin").text)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def close(self) -> None:
        self.http.close()


def submit(server: Server, key: str, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """A native submit through the API; returns the task view."""
    with server.client(key) as c:
        r = c.post("/v1/tasks", json=body or TEXT_TO_VIDEO, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())


def task(server: Server, key: str, task_id: str) -> dict[str, Any]:
    with server.client(key) as c:
        return dict(c.get(f"/v1/tasks/{task_id}").json())
