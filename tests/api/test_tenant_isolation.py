"""Tenant isolation: key B, on key A's tasks, gets exactly the answer it gets for a task that does not
exist (status, headers and body, the echoed id aside), on every read, cancel, delete, content, remix and
event endpoint of every dialect; A's tasks are untouched afterwards; sizes match and times are alike.

The "ghost" ids have the shape and length of the real ones (the id's tail digits and hex letters rotated),
so a validation or length difference cannot hide or fake a leak.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import PIKA, Server, wait_until

SUBMITS: dict[str, tuple[str, dict[str, Any]]] = {
    "avatar": (
        "/avatar/generation",
        {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/voice.mp3"},
    ),
    "pika": ("/pika/generate", PIKA),
    "unified_video": (
        "/v1/video/create",
        {
            "model": "sora-2",
            "prompt": "make animate",
            "orientation": "portrait",
            "size": "small",
            "duration": 10,
        },
    ),
    "faceswap": ("/createTask", {"taskType": 6, "targetUrls": ["https://example.com/photo.png"], "scale": 2}),
    "openai_videos": ("/v1/videos", {"prompt": "a lighthouse", "seconds": "4"}),
    "native": (
        "/v1/tasks",
        {
            "model": "sandbox-any",
            "operation": "text_to_image",
            "prompt": "a square",
            "width": 32,
            "height": 32,
        },
    ),
}
HELD = {"X-Sandbox-Queue": "300"}  # stays queued (and unchanged once dispatched) until canceled
QUICK = {"X-Sandbox-Duration": "0.3", "X-Sandbox-Output-Seconds": "1"}
VOLATILE = {"date", "server", "x-request-id"}  # x-request-id: fresh per request, names no task


def public_id(dialect: str, answer: dict[str, Any]) -> str:
    if dialect == "avatar":
        return str(answer["data"])
    if dialect == "faceswap":
        return str(answer["data"]["promptId"])
    return str(answer["id"])


def ghost_of(real: str) -> str:
    """An id of the same shape and length that names no task: the tail's digits and hex letters rotated."""
    head, tail = real[:-8], real[-8:]
    out = []
    for c in tail:
        for alphabet in ("0123456789", "abcdef", "ABCDEF"):
            if c in alphabet:
                c = alphabet[(alphabet.index(c) + 3) % len(alphabet)]
                break
        out.append(c)
    return head + "".join(out)


def endpoints(dialect: str, ident: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request options) of every endpoint that addresses one task of `dialect`."""
    if dialect == "avatar":
        return [("GET", f"/avatar/task/{ident}", {}), ("POST", f"/avatar/task/{ident}/cancel", {})]
    if dialect == "pika":
        return [("GET", f"/pika/feed/{ident}", {}), ("POST", f"/pika/feed/{ident}/cancel", {})]
    if dialect == "unified_video":
        q = {"params": {"id": ident}}
        return [("GET", "/v1/video/query", q), ("POST", "/v1/video/cancel", q)]
    if dialect == "faceswap":
        q = {"params": {"promptId": ident}}
        return [("GET", "/getTaskInfo", q), ("POST", "/cancelTask", q)]
    if dialect == "openai_videos":
        base = f"/v1/videos/{ident}"
        return [
            ("GET", base, {}),
            ("GET", base + "/content", {}),
            ("GET", base + "/content", {"params": {"variant": "thumbnail"}}),
            ("HEAD", base + "/content", {}),
            ("POST", base + "/remix", {"json": {"prompt": "again"}}),
            ("POST", base + "/cancel", {}),
            ("DELETE", base, {}),
        ]
    assert dialect == "native"
    base = f"/v1/tasks/{ident}"
    return [
        ("GET", base, {}),
        ("GET", base + "/events", {}),
        ("POST", base + "/cancel", {}),
        ("GET", "/v1/webhooks/deliveries", {"params": {"task_id": ident}}),
    ]


@dataclass
class Owned:
    dialect: str
    public_id: str
    task_id: str  # the native (ULID) id
    done: bool  # succeeded (its result files exist) or held in the queue


def snapshot(api: httpx.Client, task: Owned) -> dict[str, Any]:
    view: dict[str, Any] = api.get(f"/v1/tasks/{task.task_id}").json()
    return {k: view[k] for k in ("status", "version", "outputs", "channel")}


@pytest.fixture(scope="module")
def tenants(server: Server) -> Iterator[tuple[httpx.Client, httpx.Client, list[Owned]]]:
    a = server.client(server.new_key("tenant-a"))
    b = server.client(server.new_key("tenant-b"))
    owned: list[Owned] = []
    for dialect, (path, body) in SUBMITS.items():
        for done in (False, True):
            headers = {**(QUICK if done else HELD), "X-Webhook-Url": "https://hooks.example.com/a"}
            r = a.post(path, json=body, headers=headers)
            assert r.status_code == 200, (dialect, r.text)
            pid = public_id(dialect, r.json())
            owned.append(Owned(dialect, pid, a.get(f"/v1/tasks/{pid}").json()["id"], done))
    for task in owned:  # succeeded, or dispatched and held (no more changes until canceled)
        wait_until(
            lambda t=task: snapshot(a, t),
            lambda s, t=task: s["status"] == "succeeded" if t.done else s["channel"] is not None,
            timeout=60,
        )
    yield a, b, owned
    for task in owned:
        a.post(f"/v1/tasks/{task.task_id}/cancel")
    a.close()
    b.close()


def answer(client: httpx.Client, method: str, path: str, options: dict[str, Any]) -> httpx.Response:
    return client.request(method, path, **options)


def same(foreign: httpx.Response, ghost: httpx.Response, ids: list[tuple[str, str]]) -> None:
    """Equal status, headers and body once each real id is replaced by its ghost."""
    body = foreign.content
    headers = {k: v for k, v in foreign.headers.items() if k not in VOLATILE}
    for real, fake in ids:
        body = body.replace(real.encode(), fake.encode())
        headers = {k: v.replace(real, fake) for k, v in headers.items()}
    assert foreign.status_code == ghost.status_code, (foreign.status_code, ghost.status_code, foreign.text)
    assert len(foreign.content) == len(ghost.content)
    assert body == ghost.content, (foreign.content, ghost.content)
    assert headers == {k: v for k, v in ghost.headers.items() if k not in VOLATILE}


def test_every_task_endpoint_answers_a_foreign_task_like_a_missing_one(
    tenants: tuple[httpx.Client, httpx.Client, list[Owned]],
) -> None:
    a, b, owned = tenants
    before = {t.task_id: snapshot(a, t) for t in owned}
    checked = 0
    for task in owned:
        # Each dialect by its public id; the native API also by the task id and by every public id.
        names = [(task.dialect, task.public_id), ("native", task.task_id)]
        if task.dialect != "native":
            names.append(("native", task.public_id))
        for dialect, ident in names:
            ghost = ghost_of(ident)
            pairs = [(ident, ghost)]
            for (method, path, options), (_, ghost_path, ghost_options) in zip(
                endpoints(dialect, ident), endpoints(dialect, ghost), strict=True
            ):
                foreign = answer(b, method, path, options)
                missing = answer(b, method, ghost_path, ghost_options)
                assert task.public_id.encode() not in missing.content  # the ghost names no real task
                same(foreign, missing, pairs)
                checked += 1
    assert checked >= 60
    # Nothing B did changed A's tasks; A still sees and downloads them.
    assert {t.task_id: snapshot(a, t) for t in owned} == before
    for task in owned:
        if task.done:
            for output in before[task.task_id]["outputs"]:
                assert httpx.get(output["url"]).status_code == 200
    # A's finished tasks have deliveries (so B's empty answers above hid something real).
    done = next(t for t in owned if t.done)
    assert a.get("/v1/webhooks/deliveries", params={"task_id": done.public_id}).json()["data"]
    # Lists: B sees none of A's tasks or deliveries.
    assert b.get("/v1/tasks", params={"limit": 100}).json()["data"] == []
    assert b.get("/v1/videos", params={"limit": 100}).json()["data"] == []
    assert b.get("/v1/webhooks/deliveries").json()["data"] == []


def test_an_idempotency_key_is_per_tenant(tenants: tuple[httpx.Client, httpx.Client, list[Owned]]) -> None:
    a, b, _ = tenants
    path, body = SUBMITS["pika"]
    headers = {**HELD, "Idempotency-Key": "shared-key-1"}
    first = a.post(path, json=body, headers=headers).json()["id"]
    again = b.post(path, json=body, headers=headers).json()["id"]
    assert again != first
    assert b.get(f"/pika/feed/{first}").status_code == 404
    for client, ident in ((a, first), (b, again)):
        client.post(f"/pika/feed/{ident}/cancel")


def timed(client: httpx.Client, method: str, path: str, options: dict[str, Any]) -> tuple[float, int]:
    start = time.perf_counter()
    r = answer(client, method, path, options)
    return time.perf_counter() - start, len(r.content)


@pytest.mark.parametrize(
    ("dialect", "kind"),
    [("pika", "status"), ("faceswap", "status"), ("openai_videos", "content"), ("native", "cancel")],
)
def test_sizes_equal_and_times_alike(
    tenants: tuple[httpx.Client, httpx.Client, list[Owned]], dialect: str, kind: str
) -> None:
    """A foreign id must not be told apart by size or (grossly) by time. Loose on purpose: the machine
    is small and loaded; a leak by timing would be a database read or a render, milliseconds at least."""
    _, b, owned = tenants
    task = next(t for t in owned if t.dialect == dialect and t.done)
    ident = task.public_id
    index = {"status": 0, "content": 1, "cancel": 2}[kind]
    foreign_call = endpoints(dialect, ident)[index]
    ghost_call = endpoints(dialect, ghost_of(ident))[index]
    foreign, ghost = [], []
    for _ in range(5):  # warm up both paths
        timed(b, *foreign_call)
        timed(b, *ghost_call)
    for _ in range(50):  # interleaved: load bursts hit both alike
        seconds, size_foreign = timed(b, *foreign_call)
        foreign.append(seconds)
        seconds, size_ghost = timed(b, *ghost_call)
        ghost.append(seconds)
        assert size_foreign == size_ghost
    f, g = statistics.median(foreign), statistics.median(ghost)
    assert f <= 3 * g + 0.005 and g <= 3 * f + 0.005, (f, g)
