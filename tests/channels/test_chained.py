"""Two real mediarelay servers chained: front (relay channels only, no sandbox) → back (sandbox).

The back serves every upstream dialect (avatar, Pika, unified video, OpenAI videos, native), so it is a
valid upstream for all four relay channel types. For each type, every client dialect is submitted to the
front; each task must end as its back task ended, with result files byte-identical to the back's
(SHA-256 of every stored file, derived previews included) and served at the front's own URLs. Operations
a type cannot run fail on the front with `no_channel`. Channels are switched through the admin API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, start_server, wait_until

BACK_SANDBOX = {
    "MEDIARELAY_SANDBOX__QUEUE_SECONDS": "0.2",
    "MEDIARELAY_SANDBOX__RUN_SECONDS": "0.8",
    "MEDIARELAY_SANDBOX__JITTER": "0.1",
}
TYPES = ("gptbest", "unified_video", "openai_videos", "mediarelay")
MODEL_MAPS: dict[str, dict[str, str]] = {
    "gptbest": {},
    "unified_video": {"*": "grok-video-3"},
    "openai_videos": {"*": "sora-2"},
    "mediarelay": {},
}
PIKA_OPTIONS = {"camera": {}, "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""}, "extend": False}

# (dialect, submit path, body, how to read the public id, the operation) — small outputs, all dialects.
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    (
        "avatar",
        "/avatar/generation",
        {"avatar_url": "https://example.com/face.png", "use_voice": {
            "voice_engine_id": "sandbox-en", "audio_id": "sbx-voice-en-0", "language": "en", "text": "Hello there"}},
        "data",
        "avatar",
    ),
    ("pika-image", "/pika/generate", {"promptText": "a red kite", "options": PIKA_OPTIONS}, "id", "text_to_image"),
    (
        "pika-video",
        "/pika/generate",
        {"promptText": "a slow river", "model": "1.5", "options": {**PIKA_OPTIONS, "aspectRatio": 1.0, "frameRate": 8}},
        "id",
        "text_to_video",
    ),
    (
        "unified",
        "/v1/video/create",
        {"model": "grok-video-3", "prompt": "a paper boat", "aspect_ratio": "1:1", "size": "720P"},
        "id",
        "text_to_video",
    ),
    ("openai", "/v1/videos", {"prompt": "a lighthouse", "seconds": "4", "size": "720x1280"}, "id", "text_to_video"),
    ("faceswap", "/createTask", {"taskType": 4, "targetUrls": ["https://example.com/p.png"]}, "promptId", "enhance"),
    (
        "native",
        "/v1/tasks",
        {"model": "tiny", "operation": "text_to_video", "prompt": "a tiny square", "width": 64, "height": 64,
         "seconds": 1, "fps": 8},
        "id",
        "text_to_video",
    ),
]
# Which operations each channel type runs (the rest fail with no_channel on a front that has only it).
RUNS: dict[str, set[str]] = {
    "gptbest": {"avatar", "text_to_video", "text_to_image"},
    "unified_video": {"text_to_video"},
    "openai_videos": {"text_to_video"},
    "mediarelay": {"avatar", "text_to_video", "text_to_image", "enhance"},
}


def public_id(answer: dict[str, Any], field: str) -> str:
    value = answer["data"][field] if field == "promptId" else answer[field]
    return str(value)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, str, str]]:
    tmp = tmp_path_factory.mktemp("chain")
    back = start_server(tmp, data_name="back", **BACK_SANDBOX)
    back_key = back.new_key("front-relay")
    channels = [
        {
            "name": f"to-{kind}",
            "type": kind,
            "base_url": back.base_url,
            "credentials": ["env:BACK_KEY"],
            "model_map": MODEL_MAPS[kind],
            "enabled": kind == "mediarelay",
            "poll_timeout_seconds": 10,
            "options": {"poll_fast_seconds": 0.3},
        }
        for kind in TYPES
    ]
    front = start_server(
        tmp,
        data_name="front",
        MEDIARELAY_SANDBOX__ENABLED="false",
        MEDIARELAY_FETCH__ALLOWED_HOSTS='["127.0.0.1"]',
        MEDIARELAY_CHANNELS=json.dumps(channels),
        BACK_KEY=back_key,
    )
    front_key = front.new_key("client")
    yield front, back, front_key, back_key
    front.stop()
    back.stop()


def use_only(front: Server, kind: str) -> None:
    with front.client(front.admin_key) as admin:
        for other in TYPES:
            action = "enable" if other == kind else "disable"
            r = admin.post(f"/v1/admin/channels/to-{other}/{action}")
            assert r.status_code == 200, r.text
        listed = {c["name"]: c for c in admin.get("/v1/admin/channels").json()["data"]}
    assert [n for n, c in listed.items() if c["enabled"]] == [f"to-{kind}"]
    assert listed[f"to-{kind}"]["credentials"] == [{"ref": "env:BACK_KEY", "set": True}]


def native_view(server: Server, key: str, task_id: str) -> dict[str, Any]:
    with server.client(key) as c:
        r = c.get(f"/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return r.json()


def files_by_role(view: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {(o["role"], o["index"]): o["sha256"] for o in view["outputs"]}


@pytest.mark.parametrize("kind", TYPES)
def test_every_dialect_through_each_channel_type(chain: tuple[Server, Server, str, str], kind: str) -> None:
    front, back, front_key, back_key = chain
    use_only(front, kind)
    submitted: list[tuple[str, str, str]] = []
    with front.client(front_key) as api:
        for name, path, body, field, operation in CASES:
            r = api.post(path, json=body)
            assert r.status_code == 200, (name, r.text)
            submitted.append((name, public_id(r.json(), field), operation))
        finished = {
            name: wait_until(
                lambda p=pid: native_view(front, front_key, p),
                lambda v: v["status"] in ("succeeded", "failed", "canceled"),
                timeout=90,
            )
            for name, pid, _ in submitted
        }
    for name, _pid, operation in submitted:
        view = finished[name]
        if operation not in RUNS[kind]:
            assert view["status"] == "failed" and view["error"]["code"] == "no_channel", (name, view)
            continue
        assert view["status"] == "succeeded", (kind, name, view)
        assert view["channel"] == f"to-{kind}"
        upstream_id, upstream = front.rows(f"select upstream_id, upstream from tasks where id = '{view['id']}'")[0]
        assert json.loads(upstream)["credential"] == "env:BACK_KEY"
        back_view = native_view(back, back_key, upstream_id)
        assert back_view["status"] == "succeeded"
        # Byte-identical: every stored file (result, and the previews derived from it the same way).
        assert files_by_role(view) == files_by_role(back_view), (kind, name)
        main = [o for o in view["outputs"] if o["role"] in ("video", "image")]
        assert main and all(o["url"].startswith(front.base_url + "/files/") for o in main)
        for out in main:
            body = httpx.get(out["url"], timeout=30).content
            assert hashlib.sha256(body).hexdigest() == out["sha256"]
            back_out = next(o for o in back_view["outputs"] if (o["role"], o["index"]) == (out["role"], out["index"]))
            assert (out["width"], out["height"], out["mime"]) == (back_out["width"], back_out["height"], back_out["mime"])
        # The upstream's URL is kept as metadata on the front.
        kept = [o["url"] for o in json.loads(upstream)["outputs"]]
        assert all(u.startswith(back.base_url) or "/v1/videos/" in u for u in kept)


def test_failures_and_cancels_travel_through_the_chain(chain: tuple[Server, Server, str, str]) -> None:
    front, back, front_key, back_key = chain
    use_only(front, "mediarelay")
    with front.client(front_key) as api:
        failing = api.post("/v1/videos", json={"prompt": "please sandbox-fail", "seconds": "4"}).json()["id"]
        slow = api.post("/v1/videos", json={"prompt": "slow one"}, headers={"X-Sandbox-Duration": "60"}).json()["id"]
        wait_until(lambda: native_view(front, front_key, slow), lambda v: v["status"] == "running", timeout=30)
        canceled = api.post(f"/v1/videos/{slow}/cancel")
        assert canceled.status_code == 200 and canceled.json()["error"]["code"] == "canceled"
        failed = wait_until(
            lambda: api.get(f"/v1/videos/{failing}").json(), lambda v: v["status"] == "failed", timeout=60
        )
    assert "forced failure" in failed["error"]["message"]
    slow_upstream = front.rows(f"select upstream_id from tasks where public_id = '{slow}'")[0][0]
    wait_until(
        lambda: native_view(back, back_key, slow_upstream), lambda v: v["status"] == "canceled", timeout=20
    )


def test_admin_api_manages_channels(chain: tuple[Server, Server, str, str], tmp_path: Path) -> None:
    front, back, front_key, _ = chain
    with front.client(front_key) as user:
        assert user.get("/v1/admin/channels").status_code == 403
    with httpx.Client(base_url=front.base_url) as anon:
        assert anon.get("/v1/admin/channels").status_code == 401
    with front.client(front.admin_key) as admin:
        bad = admin.post("/v1/admin/channels", json={"name": "x", "type": "nope", "base_url": back.base_url})
        assert bad.status_code == 400 and "unknown type" in bad.json()["error"]["message"]
        secret = admin.post(
            "/v1/admin/channels",
            json={"name": "x", "type": "mediarelay", "base_url": back.base_url, "credentials": ["sk-123"]},
        )
        assert secret.status_code == 400 and "env:" in secret.json()["error"]["message"]
        assert "sk-123" not in secret.text  # a pasted secret is never echoed
        made = admin.post(
            "/v1/admin/channels",
            json={"name": "extra", "type": "mediarelay", "base_url": back.base_url, "enabled": False,
                  "credentials": ["env:UNSET_KEY"], "max_concurrency": 3},
        )
        assert made.status_code == 201, made.text
        view = made.json()
        assert view["source"] == "admin" and view["config"]["max_concurrency"] == 3
        assert view["credentials"] == [{"ref": "env:UNSET_KEY", "set": False}]
        assert view["health"]["state"] == "closed" and view["in_flight"] == 0
        assert admin.post("/v1/admin/channels", json={"name": "extra", "type": "sandbox"}).status_code == 409
        patched = admin.patch("/v1/admin/channels/extra", json={"priority": 7})
        assert patched.json()["config"]["priority"] == 7 and patched.json()["config"]["max_concurrency"] == 3
        # A file channel can be overridden and the override removed, but the file's channel itself cannot
        # be deleted.
        enabled = admin.post("/v1/admin/channels/to-gptbest/enable").json()
        assert enabled["overrides_file"] is True and enabled["source"] == "admin" and enabled["enabled"] is True
        assert admin.delete("/v1/admin/channels/to-gptbest").status_code == 200
        restored = admin.get("/v1/admin/channels/to-gptbest").json()
        assert restored["source"] == "file" and restored["enabled"] is False  # the file's definition
        assert admin.delete("/v1/admin/channels/to-gptbest").status_code == 409
        assert admin.delete("/v1/admin/channels/extra").json()["deleted"] is True
        assert admin.get("/v1/admin/channels/extra").status_code == 404
        assert admin.get("/v1/admin/channels/nope").json()["error"]["type"] == "not_found_error"
