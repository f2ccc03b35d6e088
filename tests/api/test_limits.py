"""Input limits of the native API, each refused with a clear 4xx in the native envelope and changing
nothing: no task row, no charge. (Every dialect's own limits are in tests/dialects/*: oversized bodies
are 413 there too; download size and time limits in tests/test_fetcher.py; upstream timeouts in
tests/channels/test_faults.py.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import Server
from mediarelay.dialects.common import MAX_PROMPT

IMAGE = {"model": "sandbox-image", "operation": "text_to_image", "width": 32, "height": 32}
URL = "https://example.com/p.png"

CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "prompt too long": ({**IMAGE, "prompt": "x" * (MAX_PROMPT + 1)}, 400, "prompt"),
    "too many images": (
        {"model": "sandbox-video", "operation": "image_to_video", "prompt": "x", "images": [URL] * 9},
        400,
        "images",
    ),
    "too many targets": (
        {
            "model": "sandbox-image",
            "operation": "face_swap_image",
            "face_url": URL,
            "target_urls": [URL] * 11,
        },
        400,
        "target_urls",
    ),
    "image too large": ({**IMAGE, "prompt": "x", "width": 8192, "height": 8192}, 400, "width"),
    "video too long": (
        {"model": "sandbox-video", "operation": "text_to_video", "prompt": "x", "seconds": 600},
        400,
        "seconds",
    ),
    "not a URL": (
        {
            "model": "sandbox-video",
            "operation": "image_to_video",
            "prompt": "x",
            "images": ["file:///etc/passwd"],
        },
        400,
        "images",
    ),
}


def charges(server: Server) -> int:
    return int(server.rows("select count(*) from task_charges")[0][0])


@pytest.mark.parametrize("case", list(CASES))
def test_limits_refuse_with_a_clear_error_and_change_nothing(
    server: Server, api: httpx.Client, case: str
) -> None:
    body, status, param = CASES[case]
    tasks, charged = server.task_count(), charges(server)
    r = api.post("/v1/tasks", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and param in (error.get("param") or "") + error["message"], error
    assert server.task_count() == tasks and charges(server) == charged


def test_a_body_over_the_limit_is_413_before_it_is_read(server: Server, api: httpx.Client) -> None:
    tasks = server.task_count()
    r = api.post(
        "/v1/tasks",
        content=b'{"prompt": "' + b"x" * (11 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["message"]
    assert server.task_count() == tasks


def test_nul_characters_are_refused_everywhere_and_change_nothing(server: Server, api: httpx.Client) -> None:
    """PostgreSQL cannot store NUL in text or JSONB: found by the fuzzer as a 500 on PostgreSQL only.
    Every backend now refuses it with a 400 in the caller's envelope, whichever way it came in."""
    admin = server.client(server.admin_key)
    table = admin.get("/v1/admin/prices").json()
    tasks, charged = server.task_count(), charges(server)
    attempts = {
        "native JSON": api.post("/v1/tasks", json={**IMAGE, "prompt": "a\x00b"}),
        "a JSON key": api.post("/v1/tasks", json={**IMAGE, "prompt": "x", "metadata": {"k\x00": "v"}}),
        "OpenAI multipart": api.post("/v1/videos", data={"model": "sora-2", "prompt": "a\x00b"}),
        "query": api.get("/v1/tasks", params={"model": "a\x00"}),
        "admin JSON": admin.put("/v1/admin/prices", json={"prices": [{"operation": ";\x00", "per_task": 1}]}),
    }
    for how, r in attempts.items():
        assert r.status_code == 400, (how, r.text)
        assert "NUL" in r.json()["error"]["message"], (how, r.text)
    assert admin.get("/v1/admin/prices").json() == table
    assert server.task_count() == tasks and charges(server) == charged
