"""Dialect A (talking avatar) end to end against a live server: seed fidelity, lifecycle, errors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, wait_until
from mediarelay.dialects.avatar import AvatarEnvelope, AvatarWork
from mediarelay.media import probe

SEED_EXAMPLE = json.loads(
    r"""{
"id": "67930a6f8d5ac20007a77b1c",
"ext": {"sing_title": "1737689681056.mp3", "track_info": "{}", "animate_channel": "dynamic"},
"singer": "DreamFace", "file_type": "VIDEO", "work_name": "1737689681056.mp3",
"animate_id": "264c5fb9449e4c31a7ea0f392696431b", "play_types": ["PT", "", "ANIMATE"],
"vip_enable": false, "create_time": 1737689710890, "music_title": "Talking avatar",
"template_id": "655b213cccd1db0007e1d977", "user_image_url": "",
"work_webp_path": "https://cdn.gptbest.vip/file/cdn/20250124/zQBRDI6pT3Bcxs5F9iShAWf05jio0F.jpg",
"web_work_status": 200,
"work_video_path": "https://cdn.gptbest.vip/file/cdn/20250124/hfulzDLGgiDg3EQsdYZse3em2f3peS.mp4",
"share_magic_text": "13.4K users shared moments",
"example_image_url": ["config/common/main/bd15932c14584ec2bd39f8fb46da47c7.jpg",
 "config/common/main/9ae535433a14496982017711be5a06ca.png",
 "config/common/main/70d3629c39094b33ac0359f017f1a963.jpg",
 "system/file/fdfs/c785a37a9bd64fe5b7bdefa9054cc8b6.png"],
"picture_path_list": [], "primary_play_type": "ANIMATE", "tmp_online_enable": false,
"webp_aspect_ratio": 1,
"animate_params_str": "{\"pt_infos\":[{\"context\":null,\"audio_url\":\"server%2Faudio%2Fmain%2F6d4f9a63efb94760866f600117d147bd.mp3\",\"voice_engine_id\":null,\"audio_id\":null,\"video_url\":\"server%2Fcommon%2Fmain%2Fcb599ba5-61f1-4648-bfbb-1e06299da48d.mp4\",\"video_pattern_url\":null,\"lan\":null,\"character_id\":null,\"pag_img_urls\":null,\"video_img_urls\":null}]}",
"video_aspect_ratio": 1,
"wm_work_video_path": "https://cdn.gptbest.vip/file/cdn/20250124/hfulzDLGgiDg3EQsdYZse3em2f3peS.mp4",
"template_create_time": 1700471100257,
"no_wm_work_video_path": "https://cdn.gptbest.vip/file/cdn/20250124/hfulzDLGgiDg3EQsdYZse3em2f3peS.mp4"
}"""
)

# The seed's field table: name -> JSON type (bool is checked apart from int on purpose).
FIELDS: dict[str, type] = {
    "id": str,
    "ext": dict,
    "singer": str,
    "file_type": str,
    "work_name": str,
    "animate_id": str,
    "play_types": list,
    "vip_enable": bool,
    "create_time": int,
    "music_title": str,
    "template_id": str,
    "user_image_url": str,
    "work_webp_path": str,
    "web_work_status": int,
    "work_video_path": str,
    "share_magic_text": str,
    "example_image_url": list,
    "picture_path_list": list,
    "primary_play_type": str,
    "tmp_online_enable": bool,
    "webp_aspect_ratio": int,
    "animate_params_str": str,
    "video_aspect_ratio": int,
    "wm_work_video_path": str,
    "template_create_time": int,
    "no_wm_work_video_path": str,
}
EXT_FIELDS = {"sing_title": str, "track_info": str, "animate_channel": str}

GOOD = {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/voice.mp3"}


def check_shape(work: dict[str, Any]) -> None:
    """Every documented field present with exactly the documented JSON type."""
    for name, kind in FIELDS.items():
        assert name in work, f"missing {name}"
        assert type(work[name]) is kind, f"{name}: {type(work[name]).__name__} is not {kind.__name__}"
    for name, kind in EXT_FIELDS.items():
        assert type(work["ext"][name]) is kind, name
    assert all(type(x) is str for x in work["play_types"])
    AvatarWork.model_validate(work, strict=True)


def submit(api: httpx.Client, body: dict[str, Any] | None = None, **headers: str) -> str:
    r = api.post(
        "/avatar/generation", json=body or GOOD, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    assert r.status_code == 200, r.text
    env = AvatarEnvelope.model_validate(r.json(), strict=True)
    assert env.code == "success" and env.message == ""
    assert isinstance(env.data, str) and re.fullmatch(r"[0-9a-f]{32}", env.data)
    return env.data


def query(api: httpx.Client, task_id: str) -> dict[str, Any]:
    r = api.get(f"/avatar/task/{task_id}")
    assert r.status_code == 200, r.text
    work: dict[str, Any] = r.json()
    check_shape(work)
    return work


def test_seed_example_parses_with_our_model() -> None:
    work = AvatarWork.model_validate(SEED_EXAMPLE, strict=True)
    assert work.web_work_status == 200 and work.create_time == 1737689710890
    check_shape(SEED_EXAMPLE)


def test_lifecycle_to_success_with_real_media(api: httpx.Client, tmp_path: Path) -> None:
    task_id = submit(api, X_Sandbox_Queue="1.5", X_Sandbox_Duration="2")
    first = query(api, task_id)
    assert first["web_work_status"] == 0
    assert first["animate_id"] == task_id
    assert re.fullmatch(r"[0-9a-f]{24}", first["id"])
    assert first["work_video_path"] == first["work_webp_path"] == first["no_wm_work_video_path"] == ""
    assert abs(first["create_time"] / 1000 - time.time()) < 60  # milliseconds
    assert (
        json.loads(first["animate_params_str"])["pt_infos"][0]["audio_url"]
        == "https%3A%2F%2Fexample.com%2Fvoice.mp3"
    )

    running = wait_until(lambda: query(api, task_id), lambda w: w["web_work_status"] == 1, timeout=20)
    assert running["work_video_path"] == ""
    done = wait_until(lambda: query(api, task_id), lambda w: w["web_work_status"] == 200, timeout=60)
    assert "message" not in done
    video_url = done["work_video_path"]
    assert video_url.startswith(api.base_url.__str__().rstrip("/") + "/files/")
    assert done["wm_work_video_path"] == done["no_wm_work_video_path"] == video_url
    assert done["video_aspect_ratio"] == 1

    video = httpx.get(video_url)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content) > 1000
    (tmp_path / "v.mp4").write_bytes(video.content)
    info = probe(tmp_path / "v.mp4")
    assert info.video_codec == "h264" and info.audio_codec == "aac"  # a talking avatar speaks
    assert (info.width, info.height) == (512, 512)
    assert info.duration is not None and abs(info.duration - 6) < 0.3

    thumb = httpx.get(done["work_webp_path"])
    assert thumb.headers["content-type"] == "image/webp"
    assert thumb.content[:4] == b"RIFF" and thumb.content[8:12] == b"WEBP"

    ranged = httpx.get(video_url, headers={"Range": "bytes=10-109"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert ranged.content == video.content[10:110]
    assert "immutable" in video.headers["cache-control"]


def test_text_voice_sets_duration_and_language(api: httpx.Client) -> None:
    body = {
        "avatar_url": "https://example.com/face.png",
        "create_voice": {"audio_url": "https://example.com/ref.mp3", "language": "cn", "text": "你好" * 30},
        "no_watermark": True,
    }
    task_id = submit(api, body, X_Sandbox_Duration="0.5")
    params = json.loads(query(api, task_id)["animate_params_str"])["pt_infos"][0]
    assert params["lan"] == "zh" and params["context"] == "你好" * 30


def test_forced_failure(api: httpx.Client) -> None:
    task_id = submit(api, X_Sandbox_Fail="no face found in avatar_url", X_Sandbox_Duration="1")
    failed = wait_until(lambda: query(api, task_id), lambda w: w["web_work_status"] < 0, timeout=30)
    assert failed["web_work_status"] == -1
    assert failed["message"] == "no face found in avatar_url"
    assert failed["work_video_path"] == ""


def test_failure_marker_in_body(api: httpx.Client) -> None:
    body = {
        "avatar_url": "https://example.com/face.png?sandbox-fail",
        "audio_url": "https://example.com/a.mp3",
    }
    task_id = submit(api, body, X_Sandbox_Duration="0.5")
    failed = wait_until(lambda: query(api, task_id), lambda w: w["web_work_status"] < 0, timeout=30)
    assert failed["web_work_status"] == -1


def test_cancel(api: httpx.Client) -> None:
    task_id = submit(api, X_Sandbox_Queue="30")
    r = api.post(f"/avatar/task/{task_id}/cancel")
    assert r.status_code == 200
    check_shape(r.json())
    assert r.json()["web_work_status"] == -1 and r.json()["message"] == "canceled by the client"
    time.sleep(0.5)
    assert query(api, task_id)["web_work_status"] == -1
    # Cancelling again is harmless and changes nothing.
    again = api.post(f"/avatar/task/{task_id}/cancel")
    assert again.status_code == 200 and again.json()["web_work_status"] == -1


def test_etag_and_304(api: httpx.Client) -> None:
    task_id = submit(api, X_Sandbox_Queue="30")
    r = api.get(f"/avatar/task/{task_id}")
    etag = r.headers["etag"]
    same = api.get(f"/avatar/task/{task_id}", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    api.post(f"/avatar/task/{task_id}/cancel")
    changed = api.get(f"/avatar/task/{task_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_auth_and_isolation(server: Server, api: httpx.Client, other_key: str) -> None:
    task_id = submit(api, X_Sandbox_Duration="0.5")
    with server.client(None) as anon:
        r = anon.get(f"/avatar/task/{task_id}")
        assert r.status_code == 401 and r.json() == {
            "code": "unauthorized",
            "message": r.json()["message"],
            "data": None,
        }
        assert anon.post("/avatar/generation", json=GOOD).status_code == 401
    with server.client("mr-not-a-key") as bad:
        assert bad.get(f"/avatar/task/{task_id}").status_code == 401
    with server.client(other_key) as other:
        foreign = other.get(f"/avatar/task/{task_id}")
        unknown = other.get(f"/avatar/task/{'0' * 32}")
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.content == unknown.content
        assert other.post(f"/avatar/task/{task_id}/cancel").content == unknown.content
    assert query(api, task_id)["animate_id"] == task_id  # the owner still sees it


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "avatar_url"),
    ({"avatar_url": "https://example.com/a.png"}, "exactly one"),
    ({"avatar_url": "ftp://example.com/a.png", "audio_url": "https://example.com/a.mp3"}, "avatar_url"),
    ({"avatar_url": "not a url", "audio_url": "https://example.com/a.mp3"}, "avatar_url"),
    (
        {"avatar_url": "https://example.com/a.png", "audio_url": "https://x/a.mp3", "use_voice": {}},
        "use_voice",
    ),
    ({"avatar_url": "https://example.com/a.png", "audio_url": 42}, "audio_url"),
    (
        {
            "avatar_url": "https://example.com/a.png",
            "create_voice": {"audio_url": "https://x.com/a.mp3", "language": "fr", "text": "hi"},
        },
        "language",
    ),
    (
        {
            "avatar_url": "https://example.com/a.png",
            "use_voice": {"voice_engine_id": "e", "audio_id": "a", "language": "en", "text": ""},
        },
        "text",
    ),
    (
        {
            "avatar_url": "https://example.com/a.png",
            "audio_url": "https://x.com/a.mp3",
            "no_watermark": "maybe",
        },
        "no_watermark",
    ),
    ([1, 2, 3], ""),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_BODIES)
def test_bad_input_is_rejected_and_changes_nothing(
    server: Server, api: httpx.Client, body: Any, mentions: str
) -> None:
    before = server.task_count()
    r = api.post("/avatar/generation", json=body)
    assert r.status_code == 400, r.text
    env = r.json()
    assert env["code"] == "invalid_request" and env["data"] is None
    assert mentions in env["message"]
    assert server.task_count() == before


def test_non_json_and_oversized_bodies(server: Server, api: httpx.Client) -> None:
    before = server.task_count()
    r = api.post("/avatar/generation", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    big = b'{"avatar_url": "https://example.com/a.png", "pad": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    r = api.post("/avatar/generation", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "invalid_request" and r.json()["data"] is None
    assert server.task_count() == before


def test_curl_style_form_content_type_is_accepted(api: httpx.Client) -> None:
    r = api.post(
        "/avatar/generation",
        content=json.dumps(GOOD).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "X-Sandbox-Duration": "0.2"},
    )
    assert r.status_code == 200 and r.json()["code"] == "success"


def test_voice_list(api: httpx.Client) -> None:
    r = api.get("/avatar/voice", params={"language": "en"})
    env = AvatarEnvelope.model_validate(r.json(), strict=True)
    voices = env.data["audio_list"]
    assert voices and all(v["language"] == "en" for v in voices)
    for v in voices:
        assert set(v) >= {
            "audio_id",
            "audio_url",
            "labels",
            "language",
            "name",
            "vip_enable",
            "voice_engine_id",
            "type",
        }
    bad = api.get("/avatar/voice", params={"language": "fr"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
