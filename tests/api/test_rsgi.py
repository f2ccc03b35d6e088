"""granian's native interface in front of the ASGI app (api/rsgi.py), through a real `mediarelay serve`.

Every other test goes through it too (granian is the default server); these pin what the adapter itself
decides: how request bodies reach the app (one message when small and sized, streamed otherwise), the
status fast path's HEAD, 304 and request ids without ASGI, and a client that leaves a stream early.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from conftest import Server, wait_until

IMAGE = {"model": "sandbox-image", "operation": "text_to_image", "prompt": "rsgi", "width": 32, "height": 32}


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it with chunked transfer encoding."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_chunked_bodies_are_streamed_to_the_app_and_still_limited(server: Server, api: httpx.Client) -> None:
    tasks = server.task_count()
    headers = {"content-type": "application/json", "X-Sandbox-Duration": "0.2"}
    body = json.dumps({**IMAGE, "width": 48, "height": 40}).encode()
    made = api.post("/v1/tasks", content=chunked(body, 7), headers=headers)
    assert made.status_code == 200, made.text
    assert "content-length" not in made.request.headers  # chunked: the streamed way into the app
    assert server.task_count() == tasks + 1
    done = wait_until(lambda: api.get(f"/v1/tasks/{made.json()['id']}").json(), lambda v: v["outputs"], timeout=30)
    image = next(o for o in done["outputs"] if o["role"] == "image")
    assert (image["width"], image["height"]) == (48, 40)  # the whole body arrived, in 7-byte chunks

    # Over the body limit (10 MiB by default) with no Content-Length to refuse it early: counted as it comes.
    huge = b'{"prompt": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    refused = api.post("/v1/tasks", content=chunked(huge), headers=headers)
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["message"]
    assert server.task_count() == tasks + 1


def test_status_fast_path_head_304_and_request_ids(server: Server, api: httpx.Client) -> None:
    task_id = api.post("/v1/tasks", json=IMAGE, headers={"X-Sandbox-Duration": "0.1"}).json()["id"]
    wait_until(lambda: api.get(f"/v1/tasks/{task_id}").json(), lambda v: v["status"] == "succeeded", timeout=30)
    got = api.get(f"/v1/tasks/{task_id}", headers={"X-Request-ID": "client-7.a"})
    assert got.status_code == 200
    assert got.headers["x-request-id"] == "client-7.a"  # a plain id comes back as sent
    etag = got.headers["etag"]

    head = api.head(f"/v1/tasks/{task_id}")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(got.content)
    assert head.headers["etag"] == etag

    same = api.get(f"/v1/tasks/{task_id}", headers={"If-None-Match": etag, "X-Request-ID": "bad id <>"})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    assert same.headers["x-request-id"] not in ("", "bad id <>")  # not echoed: a fresh one instead

    unknown = api.get("/v1/tasks/no-such-task")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"]
    assert unknown.headers["x-request-id"]
    anonymous = httpx.get(f"{server.base_url}/v1/tasks/{task_id}")
    assert anonymous.status_code == 401, anonymous.text


def test_a_client_leaving_a_stream_early_leaves_the_server_serving(server: Server, api: httpx.Client) -> None:
    task_id = api.post("/v1/tasks", json=IMAGE, headers={"X-Sandbox-Queue": "120"}).json()["id"]
    for _ in range(5):
        with api.stream("GET", f"/v1/tasks/{task_id}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            first = next(stream.iter_lines())
            assert first  # the current state is sent at once; then the client hangs up mid-stream
    assert api.get(f"/v1/tasks/{task_id}").status_code == 200
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_a_finished_tasks_stream_ends_on_its_own(server: Server, api: httpx.Client) -> None:
    """A streamed answer ends when the app is done with it (once it waited for the garbage collector)."""
    task_id = api.post("/v1/tasks", json=IMAGE, headers={"X-Sandbox-Duration": "0.1"}).json()["id"]
    wait_until(lambda: api.get(f"/v1/tasks/{task_id}").json(), lambda v: v["status"] == "succeeded", timeout=30)
    for _ in range(3):
        with api.stream("GET", f"/v1/tasks/{task_id}/events", timeout=10) as stream:
            lines = list(stream.iter_lines())  # a ReadTimeout here: the body never ended
        assert any(line.startswith("data:") and '"succeeded"' in line for line in lines)
