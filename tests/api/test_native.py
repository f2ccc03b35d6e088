"""The native API: one view of any dialect's task, list with filters and a cursor, cancel, submit."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from conftest import PIKA, Server, wait_until

VIEW_FIELDS = {
    "id": str,
    "object": str,
    "dialect": str,
    "public_id": str,
    "model": str,
    "operation": str,
    "status": str,
    "progress": int,
    "outputs": list,
    "children": list,
    "created_at": int,
    "updated_at": int,
    "version": int,
}


def check_view(view: dict[str, Any]) -> dict[str, Any]:
    for name, kind in VIEW_FIELDS.items():
        assert type(view[name]) is kind, name
    for name in ("error", "parent_id", "channel", "started_at", "finished_at"):
        assert name in view
    assert view["object"] == "task"
    return view


def native(api: httpx.Client, ident: str) -> dict[str, Any]:
    r = api.get(f"/v1/tasks/{ident}")
    assert r.status_code == 200, r.text
    return check_view(r.json())


def test_any_dialect_task_by_task_id_or_public_id_with_checksummed_outputs(api: httpx.Client) -> None:
    pika_id = api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Duration": "0.5"}).json()["id"]
    by_public = native(api, pika_id)
    assert by_public["dialect"] == "pika" and by_public["public_id"] == pika_id
    assert by_public["model"] == "pika-1.5" and by_public["operation"] == "text_to_video"
    done = wait_until(lambda: native(api, by_public["id"]), lambda v: v["status"] == "succeeded", timeout=30)
    assert done["progress"] == 100 and done["error"] is None and done["finished_at"] >= done["created_at"]
    roles = sorted(o["role"] for o in done["outputs"])
    assert {"video", "poster", "thumbnail"} <= set(roles)
    for out in done["outputs"]:
        body = httpx.get(out["url"]).content
        assert len(body) == out["bytes"] and hashlib.sha256(body).hexdigest() == out["sha256"]
        assert out["mime"] in ("video/mp4", "image/jpeg", "image/webp", "image/png")
    video = next(o for o in done["outputs"] if o["role"] == "video")
    assert (video["width"], video["height"]) == (720, 720) and abs(video["duration"] - 5) < 0.3


def test_native_submit_and_bad_input(server: Server, api: httpx.Client) -> None:
    r = api.post(
        "/v1/tasks",
        json={
            "model": "sandbox-any",
            "operation": "text_to_image",
            "prompt": "a red square",
            "width": 64,
            "height": 64,
        },
        headers={"X-Sandbox-Duration": "0.2"},
    )
    assert r.status_code == 200, r.text
    task = check_view(r.json())
    assert task["dialect"] == "native" and task["status"] == "queued"
    done = wait_until(lambda: native(api, task["id"]), lambda v: v["status"] == "succeeded", timeout=30)
    image = next(o for o in done["outputs"] if o["role"] == "image")
    assert (image["width"], image["height"]) == (64, 64) and image["mime"] == "image/png"

    before = server.task_count()
    for body in (
        {},
        {"model": "m", "operation": "text_to_video"},  # no prompt
        {"model": "m", "operation": "dance", "prompt": "x"},
        {"model": "m", "operation": "image_to_video", "prompt": "x"},  # no image
        {"model": "m", "operation": "text_to_video", "prompt": "x", "width": 33},
        {"model": "m", "operation": "text_to_video", "prompt": "x", "surprise": 1},
        {"model": "m", "operation": "upscale", "target_urls": ["file:///etc/passwd"]},
    ):
        bad = api.post("/v1/tasks", json=body)
        assert bad.status_code == 400, (body, bad.text)
        err = bad.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_request" and "param" in err
    assert server.task_count() == before


def test_list_filters_and_cursor(server: Server) -> None:
    key = server.new_key("lister")
    with server.client(key) as api:
        made = []
        for i in range(5):
            body = {"model": "m", "operation": "text_to_image", "prompt": f"p{i}", "width": 32, "height": 32}
            made.append(api.post("/v1/tasks", json=body, headers={"X-Sandbox-Queue": "120"}).json()["id"])
        pika_id = api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Queue": "120"}).json()["id"]
        api.post(f"/v1/tasks/{made[0]}/cancel")

        first = api.get("/v1/tasks", params={"limit": 2}).json()
        assert first["object"] == "list" and first["has_more"] is True
        assert first["data"][0]["public_id"] == pika_id  # newest first, any dialect
        seen = [t["id"] for t in first["data"]]
        cursor = first["last_id"]
        while True:
            page = api.get("/v1/tasks", params={"limit": 2, "after": cursor}).json()
            seen += [t["id"] for t in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["last_id"]
        assert len(seen) == len(set(seen)) == 6 and set(made) <= set(seen)
        asc = api.get("/v1/tasks", params={"order": "asc", "limit": 1}).json()["data"]
        assert asc[0]["id"] == made[0]
        only_native = api.get("/v1/tasks", params={"dialect": "native", "limit": 100}).json()["data"]
        assert {t["id"] for t in only_native} == set(made)
        canceled = api.get("/v1/tasks", params={"status": "canceled"}).json()["data"]
        assert [t["id"] for t in canceled] == [made[0]]
        assert api.get("/v1/tasks", params={"limit": 0}).status_code == 400
        assert api.get("/v1/tasks", params={"after": "nope"}).status_code == 400
        for task_id in made[1:]:
            api.post(f"/v1/tasks/{task_id}/cancel")
        api.post(f"/v1/tasks/{pika_id}/cancel")
    # Another key sees none of them.
    with server.client(server.new_key("stranger")) as other:
        assert other.get("/v1/tasks").json()["data"] == []


def test_native_cancel_isolation_and_304(server: Server, api: httpx.Client, other_key: str) -> None:
    task_id = api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Queue": "60"}).json()["id"]
    # Once dispatched, a task held in the sandbox queue does not change until it is canceled.
    view = wait_until(lambda: native(api, task_id), lambda v: v["channel"] is not None, timeout=30)
    r = api.get(f"/v1/tasks/{view['id']}")
    assert api.get(f"/v1/tasks/{view['id']}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    with server.client(other_key) as other:
        foreign = other.get(f"/v1/tasks/{view['id']}")
        unknown = other.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert foreign.status_code == unknown.status_code == 404 and foreign.content == unknown.content
        assert other.post(f"/v1/tasks/{view['id']}/cancel").content == unknown.content
        assert other.get(f"/v1/tasks/{view['id']}/events").content == unknown.content
    canceled = api.post(f"/v1/tasks/{view['id']}/cancel")
    assert canceled.status_code == 200
    assert check_view(canceled.json())["status"] == "canceled"
    assert canceled.json()["error"] == {"code": "canceled", "message": "canceled by the client"}
    # The pika dialect shows the same cancel.
    assert api.get(f"/pika/feed/{task_id}").json()["videos"][0]["error"] == "canceled"


@pytest.mark.parametrize("auth", [None, "Bearer mr-wrong"])
def test_native_auth(server: Server, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    for method, path in (("GET", "/v1/tasks"), ("GET", "/v1/tasks/x"), ("POST", "/v1/tasks")):
        r = httpx.request(method, server.base_url + path, headers=headers, json={})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
