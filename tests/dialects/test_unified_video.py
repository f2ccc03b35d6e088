"""Dialect C (unified video: sora-2 / veo / grok) end to end against a live server.

Seed fidelity (the seed's query example and the spec's create example parse with our models), every
lifecycle state of every model family, real media, ids, auth, isolation and bad input.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conftest import Server, wait_until
from mediarelay.dialects.unified_video import (
    CreateResponse,
    ErrorResponse,
    InpaintItem,
    ModerationResult,
    PendingInfo,
    QueryResponse,
    SoraDetail,
    SoraInput,
    VideoDetail,
)
from mediarelay.media import probe

# The seed page's query response example, verbatim.
SEED_QUERY = json.loads(
    r"""{
    "id": "sora-2:task_01k6x15vhrff09dkkqjrzwhm60",
    "detail": {
        "id": "task_01k6x15vhrff09dkkqjrzwhm60",
        "input": {
            "size": "small",
            "model": "sy_ore",
            "images": [
                "https://filesystem.site/cdn/20250612/VfgB5ubjInVt8sG6rzMppxnu7gEfde.png",
                "https://filesystem.site/cdn/20250612/998IGmUiM2koBGZM3UnZeImbPBNIUL.png"
            ],
            "prompt": "make animate",
            "orientation": "portrait"
        },
        "status": "pending",
        "pending_info": {
            "id": "task_01k6x15vhrff09dkkqjrzwhm60",
            "seed": null,
            "type": "video_gen",
            "user": "user-a1sGDUIOXV32hNITe59LEkHa",
            "model": "sy_8",
            "title": "New Video",
            "width": 352,
            "height": 640,
            "prompt": "make animate",
            "sdedit": null,
            "status": "processing",
            "actions": null,
            "guidance": null,
            "n_frames": 450,
            "priority": 2,
            "operation": "simple_compose",
            "preset_id": null,
            "created_at": "2025-10-06T15:10:26.875729Z",
            "n_variants": 1,
            "project_id": null,
            "request_id": null,
            "generations": [],
            "tracking_id": null,
            "progress_pct": 0.9302178175176704,
            "remix_config": null,
            "inpaint_items": [
                {
                    "type": "image",
                    "preset_id": null,
                    "crop_bounds": null,
                    "frame_index": 0,
                    "cameo_file_id": null,
                    "generation_id": null,
                    "upload_media_id": "media_01k6x15tnzezbst05sth2qgd8r",
                    "source_end_frame": 0,
                    "uploaded_file_id": null,
                    "source_start_frame": 0
                },
                {
                    "type": "image",
                    "preset_id": null,
                    "crop_bounds": null,
                    "frame_index": 0,
                    "cameo_file_id": null,
                    "generation_id": null,
                    "upload_media_id": "media_01k6x15tzafwztz74t018v3enw",
                    "source_end_frame": 0,
                    "uploaded_file_id": null,
                    "source_start_frame": 0
                }
            ],
            "interpolation": null,
            "is_storyboard": null,
            "failure_reason": null,
            "organization_id": null,
            "moderation_result": {
                "code": null,
                "type": "passed",
                "task_id": "task_01k6x15vhrff09dkkqjrzwhm60",
                "is_output_rejection": false,
                "results_by_frame_index": {}
            },
            "needs_user_review": false,
            "queue_status_message": null,
            "progress_pos_in_queue": null,
            "num_unsafe_generations": 0,
            "estimated_queue_wait_time": null
        }
    },
    "status": "pending",
    "status_update_time": 1759763621142
}"""
)
# specs/dialects.md §C: the documented create request and its response, verbatim.
SPEC_CREATE_REQUEST = json.loads(
    '{"images":["https://filesystem.site/cdn/20250612/998IGmUiM2koBGZM3UnZeImbPBNIUL.png"],"model":"sora-2-all",'
    '"orientation":"portrait","prompt":"make animate","size":"large","duration":15,"watermark":false}'
)
SPEC_CREATE_RESPONSE = json.loads(
    '{"id":"sora-2:task_01k6x15vhrff09dkkqjrzwhm60","status":"pending","status_update_time":1759763427208}'
)

NULL = type(None)
# JSON types, field by field (bool is checked apart from int on purpose).
TOP: dict[str, Any] = {
    "id": str,
    "status": str,
    "video_url": (str, NULL),
    "enhanced_prompt": str,
    "status_update_time": int,
    "detail": dict,
}
SORA_INPUT = {"size": str, "model": str, "images": list, "prompt": str, "orientation": str}
PENDING_INFO: dict[str, Any] = {
    "id": str,
    "seed": NULL,
    "type": str,
    "user": str,
    "model": str,
    "title": str,
    "width": int,
    "height": int,
    "prompt": str,
    "sdedit": NULL,
    "status": str,
    "actions": NULL,
    "guidance": NULL,
    "n_frames": int,
    "priority": int,
    "operation": str,
    "preset_id": NULL,
    "created_at": str,
    "n_variants": int,
    "project_id": NULL,
    "request_id": NULL,
    "generations": list,
    "tracking_id": NULL,
    "progress_pct": float,
    "remix_config": NULL,
    "inpaint_items": list,
    "interpolation": NULL,
    "is_storyboard": NULL,
    "failure_reason": (str, NULL),
    "organization_id": NULL,
    "moderation_result": dict,
    "needs_user_review": bool,
    "queue_status_message": NULL,
    "progress_pos_in_queue": NULL,
    "num_unsafe_generations": int,
    "estimated_queue_wait_time": NULL,
}
INPAINT_ITEM: dict[str, Any] = {
    "type": str,
    "preset_id": NULL,
    "crop_bounds": NULL,
    "frame_index": int,
    "cameo_file_id": NULL,
    "generation_id": NULL,
    "upload_media_id": str,
    "source_end_frame": int,
    "uploaded_file_id": NULL,
    "source_start_frame": int,
}
MODERATION = {
    "code": NULL,
    "type": str,
    "task_id": str,
    "is_output_rejection": bool,
    "results_by_frame_index": dict,
}
GENERATION = {"id": str, "url": str, "width": int, "height": int, "n_frames": int}
PLAIN_DETAIL: dict[str, Any] = {
    "id": str,
    "input": dict,
    "status": str,
    "progress": int,
    "video_url": (str, NULL),
    "failure_reason": (str, NULL),
}

SORA_ID = re.compile(r"sora-2:task_[0-9a-hjkmnp-tv-z]{26}")
GROK_ID = re.compile(r"grok:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
STATUSES = {"pending", "processing", "completed", "failed"}
IMAGE = "https://example.com/first.png"


def veo_id(model: str) -> re.Pattern[str]:
    return re.compile(re.escape(model) + r":(\d{10})-[A-Za-z0-9]{10}")


def check_types(data: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    for name, kind in spec.items():
        assert name in data, f"{where}: missing {name}"
        kinds = kind if isinstance(kind, tuple) else (kind,)
        assert type(data[name]) in kinds, f"{where}.{name}: {type(data[name]).__name__} is not {kinds}"


def model_fields_present(model: type[Any], data: dict[str, Any], where: str) -> None:
    """Every field our response model documents is in the JSON (the models are the client-side parsers)."""
    missing = set(model.model_fields) - set(data)
    assert not missing, f"{where}: missing {sorted(missing)}"


def check_query(data: dict[str, Any]) -> QueryResponse:
    """A live query response: strict model, every field present, exact JSON types, recursively."""
    parsed = QueryResponse.model_validate(data, strict=True)
    model_fields_present(QueryResponse, data, "query")
    check_types(data, TOP, "query")
    assert data["status"] in STATUSES
    assert data["detail"]["status"] == data["status"]
    assert data["detail"]["id"] == data["id"].split(":", 1)[1]
    detail = data["detail"]
    if data["id"].startswith("sora-2:"):
        assert isinstance(parsed.detail, SoraDetail)
        model_fields_present(SoraDetail, detail, "detail")
        model_fields_present(SoraInput, detail["input"], "detail.input")
        check_types(detail["input"], SORA_INPUT, "detail.input")
        info = detail["pending_info"]
        model_fields_present(PendingInfo, info, "pending_info")
        check_types(info, PENDING_INFO, "pending_info")
        model_fields_present(ModerationResult, info["moderation_result"], "moderation_result")
        check_types(info["moderation_result"], MODERATION, "moderation_result")
        for item in info["inpaint_items"]:
            model_fields_present(InpaintItem, item, "inpaint_item")
            check_types(item, INPAINT_ITEM, "inpaint_item")
        for gen in info["generations"]:
            check_types(gen, GENERATION, "generation")
        assert 0.0 <= info["progress_pct"] <= 1.0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", info["created_at"])
        assert info["id"] == detail["id"] == info["moderation_result"]["task_id"]
        assert len(info["inpaint_items"]) == len(detail["input"]["images"])
        assert info["n_frames"] % 30 == 0
    else:
        assert isinstance(parsed.detail, VideoDetail)
        model_fields_present(VideoDetail, detail, "detail")
        check_types(detail, PLAIN_DETAIL, "detail")
        assert 0 <= detail["progress"] <= 100
        assert detail["video_url"] == data["video_url"]
    return parsed


def submit(api: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    r = api.post("/v1/video/create", json=body, headers=headers)
    assert r.status_code == 200, r.text
    data = r.json()
    CreateResponse.model_validate(data, strict=True)
    assert set(data) == {"id", "status", "status_update_time"}
    assert data["status"] == "pending"
    assert type(data["status_update_time"]) is int
    assert abs(data["status_update_time"] / 1000 - time.time()) < 60  # milliseconds
    task_id: str = data["id"]
    return task_id


def query(api: httpx.Client, task_id: str, *, encoded: bool = False) -> dict[str, Any]:
    # The id travels raw in the query string (":" unescaped), as the provider's cURL example sends it.
    url = f"/v1/video/query?id={quote(task_id, safe='') if encoded else task_id}"
    r = api.get(url)
    if not encoded:
        assert b"id=" + task_id.encode() in r.request.url.raw_path
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    check_query(data)
    assert data["id"] == task_id
    return data


def check_video(url: str, base_url: str, tmp: Path, size: tuple[int, int], seconds: float) -> bytes:
    assert url.startswith(base_url.rstrip("/") + "/files/")
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert len(r.content) > 1000
    path = tmp / f"{abs(hash(url))}.mp4"
    path.write_bytes(r.content)
    info = probe(path)
    assert info.video_codec == "h264"
    assert (info.width, info.height) == size
    assert info.duration is not None and abs(info.duration - seconds) < 0.3
    return r.content


# --------------------------------------------------------------------------------------------- seeds


def test_seed_query_example_parses_with_our_models() -> None:
    parsed = QueryResponse.model_validate(SEED_QUERY, strict=True)
    assert isinstance(parsed.detail, SoraDetail)
    info = parsed.detail.pending_info
    assert info.n_frames == 450 and info.progress_pct == pytest.approx(0.9302178175176704)
    assert len(info.inpaint_items) == 2 and info.moderation_result is not None
    assert parsed.status_update_time == 1759763621142 and parsed.video_url is None
    # The seed's own detail has every key (and type) we emit; only the top-level video_url and
    # enhanced_prompt are missing from its example although its field table requires them.
    detail = SEED_QUERY["detail"]
    check_types(detail["input"], SORA_INPUT, "seed.input")
    check_types(detail["pending_info"], PENDING_INFO, "seed.pending_info")
    check_types(detail["pending_info"]["moderation_result"], MODERATION, "seed.moderation_result")
    for item in detail["pending_info"]["inpaint_items"]:
        check_types(item, INPAINT_ITEM, "seed.inpaint_item")
    assert set(PendingInfo.model_fields) == set(detail["pending_info"])
    assert set(InpaintItem.model_fields) == set(detail["pending_info"]["inpaint_items"][0])
    assert set(ModerationResult.model_fields) == set(detail["pending_info"]["moderation_result"])
    assert set(TOP) - set(SEED_QUERY) == {"video_url", "enhanced_prompt"}


def test_spec_create_example_parses_and_the_documented_request_is_accepted(api: httpx.Client) -> None:
    CreateResponse.model_validate(SPEC_CREATE_RESPONSE, strict=True)
    assert SORA_ID.fullmatch(SPEC_CREATE_RESPONSE["id"])
    # Held in the queue and canceled: we check the normalisation, not a 1080x1920 15 s encode.
    task_id = submit(api, SPEC_CREATE_REQUEST, **{"X-Sandbox-Queue": "30"})
    assert SORA_ID.fullmatch(task_id)
    data = query(api, task_id)
    assert data["status"] == "pending"
    assert data["detail"]["input"] == {
        "size": "large",
        "model": "sora-2-all",
        "images": SPEC_CREATE_REQUEST["images"],
        "prompt": "make animate",
        "orientation": "portrait",
    }
    info = data["detail"]["pending_info"]
    assert (info["width"], info["height"], info["n_frames"]) == (1080, 1920, 450)
    assert info["status"] == "queued" and info["progress_pct"] == 0.0
    assert api.post("/v1/video/cancel", params={"id": task_id}).json()["status"] == "failed"


# --------------------------------------------------------------------------------------------- lifecycle


def test_sora_lifecycle_to_success_with_real_media(server: Server, api: httpx.Client, tmp_path: Path) -> None:
    body = {"model": "sora-2", "prompt": "a red kite", "images": [IMAGE], "orientation": "landscape"}
    task_id = submit(api, body, **{"X-Sandbox-Queue": "1.5", "X-Sandbox-Duration": "2"})
    assert SORA_ID.fullmatch(task_id)

    first = query(api, task_id)
    assert first["status"] == "pending" and first["video_url"] is None and first["enhanced_prompt"] == ""
    info = first["detail"]["pending_info"]
    assert info["status"] == "queued" and info["progress_pct"] == 0.0 and info["generations"] == []
    # small landscape, 10 s at 30 fps
    assert (info["width"], info["height"], info["n_frames"]) == (1280, 720, 300)
    assert info["failure_reason"] is None and info["model"] == "sora-2"
    assert re.fullmatch(r"media_[0-9a-hjkmnp-tv-z]{26}", info["inpaint_items"][0]["upload_media_id"])
    assert re.fullmatch(r"user-[A-Za-z0-9]{24}", info["user"])
    assert abs(first["status_update_time"] / 1000 - time.time()) < 60
    encoded = query(api, task_id, encoded=True)  # percent-encoded id works too
    assert encoded["id"] == task_id and encoded["detail"]["input"] == first["detail"]["input"]

    running = wait_until(lambda: query(api, task_id), lambda d: d["status"] == "processing", timeout=20)
    assert running["detail"]["pending_info"]["status"] == "processing"
    assert running["video_url"] is None
    assert 0.0 <= running["detail"]["pending_info"]["progress_pct"] < 1.0
    assert running["status_update_time"] >= first["status_update_time"]

    done = wait_until(lambda: query(api, task_id), lambda d: d["status"] == "completed", timeout=60)
    info = done["detail"]["pending_info"]
    assert info["status"] == "succeeded" and info["progress_pct"] == 1.0 and info["failure_reason"] is None
    assert done["detail"]["status"] == "completed"
    [gen] = info["generations"]
    assert gen["url"] == done["video_url"]
    assert (gen["width"], gen["height"], gen["n_frames"]) == (1280, 720, 300)
    content = check_video(done["video_url"], server.base_url, tmp_path, (1280, 720), 10)
    assert query(api, task_id, encoded=True) == done

    ranged = httpx.get(done["video_url"], headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == content[100:200]
    # The file route sends an ETag; conditional GETs on files are the files route's business (the
    # status query's own ETag/304 is checked in test_etag_and_304).
    assert httpx.get(done["video_url"]).headers["etag"]


def test_veo_and_grok_lifecycles(server: Server, api: httpx.Client, tmp_path: Path) -> None:
    veo_body = {"model": "veo3-fast", "prompt": "a calm sea", "enhance_prompt": True, "aspect_ratio": "9:16"}
    grok_body = {"model": "grok-video-3", "prompt": "a spinning top", "aspect_ratio": "1:1", "size": "720P"}
    veo = submit(api, veo_body, **{"X-Sandbox-Queue": "1", "X-Sandbox-Duration": "1.5"})
    grok = submit(api, grok_body, **{"X-Sandbox-Queue": "1", "X-Sandbox-Duration": "1.5"})
    found = veo_id("veo3-fast").fullmatch(veo)
    assert found and abs(int(found[1]) - time.time()) < 60  # unix seconds
    assert GROK_ID.fullmatch(grok)

    first = query(api, veo)
    assert first["status"] == "pending" and first["enhanced_prompt"] == "a calm sea"  # [MR] echo
    assert first["detail"]["input"] == {
        "model": "veo3-fast",
        "prompt": "a calm sea",
        "images": [],
        "aspect_ratio": "9:16",
        "enhance_prompt": True,
        "enable_upsample": False,
    }
    assert first["detail"]["progress"] == 0 and first["detail"]["failure_reason"] is None
    g = query(api, grok, encoded=True)
    assert g["status"] == "pending" and g["enhanced_prompt"] == "" and g["detail"]["input"]["size"] == "720P"

    running = wait_until(lambda: query(api, veo), lambda d: d["status"] == "processing", timeout=20)
    assert running["video_url"] is None
    done_veo = wait_until(lambda: query(api, veo), lambda d: d["status"] == "completed", timeout=60)
    done_grok = wait_until(lambda: query(api, grok), lambda d: d["status"] == "completed", timeout=60)
    assert done_veo["detail"]["progress"] == 100 and done_veo["detail"]["video_url"] == done_veo["video_url"]
    check_video(done_veo["video_url"], server.base_url, tmp_path, (720, 1280), 8)
    check_video(done_grok["video_url"], server.base_url, tmp_path, (720, 720), 6)


def test_defaults_and_family_sizes(api: httpx.Client) -> None:
    """Held in the queue, checked, canceled: no encoding needed to see the normalised request."""
    hold = {"X-Sandbox-Queue": "30"}
    sora = query(api, submit(api, {"model": "sora-2", "prompt": "p"}, **hold))
    info = sora["detail"]["pending_info"]
    assert sora["detail"]["input"]["size"] == "small" and sora["detail"]["input"]["orientation"] == "portrait"
    assert (info["width"], info["height"], info["n_frames"]) == (720, 1280, 300)
    assert info["inpaint_items"] == [] and sora["detail"]["input"]["images"] == []

    pro = query(
        api, submit(api, {"model": "sora-2-pro", "prompt": "p", "duration": 25, "size": "large"}, **hold)
    )
    assert pro["detail"]["pending_info"]["n_frames"] == 750
    assert pro["detail"]["pending_info"]["model"] == "sora-2-pro"
    assert SORA_ID.fullmatch(pro["id"])  # every sora model publishes a sora-2: id

    cameo = {
        "model": "sora-2",
        "prompt": "p",
        "character_url": "https://example.com/cameo.mp4",
        "character_timestamps": "1,3",
        "private": True,
        "watermark": True,
    }
    assert query(api, submit(api, cameo, **hold))["status"] == "pending"

    up = query(api, submit(api, {"model": "veo3-pro", "prompt": "p", "enable_upsample": True}, **hold))
    assert up["detail"]["input"]["aspect_ratio"] == "16:9" and up["enhanced_prompt"] == ""
    frames = {"model": "veo3-fast-frames", "prompt": "p", "images": [IMAGE, "https://example.com/last.png"]}
    f = query(api, submit(api, frames, **hold))
    assert veo_id("veo3-fast-frames").fullmatch(f["id"]) and len(f["detail"]["input"]["images"]) == 2
    v2 = query(
        api, submit(api, {"model": "veo2-fast-components", "prompt": "p", "images": [IMAGE] * 3}, **hold)
    )
    assert v2["detail"]["input"]["aspect_ratio"] == "16:9"
    grok = query(api, submit(api, {"model": "grok-video-3", "prompt": "p", "images": [IMAGE]}, **hold))
    assert grok["detail"]["input"]["aspect_ratio"] == "3:2" and grok["detail"]["input"]["size"] == "720P"

    for data in (sora, pro, up, f, v2, grok):
        r = api.post("/v1/video/cancel", params={"id": data["id"]})
        assert r.status_code == 200 and r.json()["status"] == "failed"


def test_forced_failures(api: httpx.Client) -> None:
    sora = submit(
        api,
        {"model": "sora-2", "prompt": "p"},
        **{"X-Sandbox-Fail": "content policy", "X-Sandbox-Duration": "1"},
    )
    veo = submit(api, {"model": "veo3", "prompt": "a sandbox-fail scene"}, **{"X-Sandbox-Duration": "1"})
    failed = wait_until(lambda: query(api, sora), lambda d: d["status"] == "failed", timeout=30)
    info = failed["detail"]["pending_info"]
    assert failed["video_url"] is None and failed["detail"]["status"] == "failed"
    assert (
        info["status"] == "failed"
        and info["failure_reason"] == "content policy"
        and info["generations"] == []
    )
    failed_veo = wait_until(lambda: query(api, veo), lambda d: d["status"] == "failed", timeout=30)
    assert failed_veo["video_url"] is None and failed_veo["detail"]["failure_reason"].startswith("sandbox")


def test_cancel(server: Server, api: httpx.Client, other_key: str) -> None:
    task_id = submit(api, {"model": "grok-video-3", "prompt": "p"}, **{"X-Sandbox-Queue": "30"})
    r = api.post(f"/v1/video/cancel?id={task_id}")  # raw id, like the query
    assert r.status_code == 200, r.text
    canceled = r.json()
    check_query(canceled)
    assert canceled["status"] == "failed" and canceled["detail"]["failure_reason"] == "canceled by the client"
    assert canceled["video_url"] is None
    assert query(api, task_id) == canceled
    again = api.post("/v1/video/cancel", params={"id": task_id})  # percent-encoded; harmless twice
    assert again.status_code == 200 and again.json() == canceled

    sora = submit(api, {"model": "sora-2", "prompt": "p"}, **{"X-Sandbox-Queue": "30"})
    with server.client(other_key) as other:
        foreign = other.post("/v1/video/cancel", params={"id": sora})
        unknown = other.post("/v1/video/cancel", params={"id": "sora-2:task_" + "0" * 26})
        assert foreign.status_code == unknown.status_code == 404 and foreign.content == unknown.content
    assert query(api, sora)["status"] == "pending"  # the stranger's cancel did nothing
    info = api.post("/v1/video/cancel", params={"id": sora}).json()["detail"]["pending_info"]
    assert info["status"] == "failed" and info["failure_reason"] == "canceled by the client"


def test_etag_and_304(api: httpx.Client) -> None:
    task_id = submit(api, {"model": "sora-2", "prompt": "p"}, **{"X-Sandbox-Queue": "30"})

    def revalidate() -> tuple[str, httpx.Response]:
        etag = api.get("/v1/video/query", params={"id": task_id}).headers["etag"]
        return etag, api.get("/v1/video/query", params={"id": task_id}, headers={"If-None-Match": etag})

    # Dispatch may still touch the queued task right after submit; once it is settled, the ETag holds.
    etag, same = wait_until(revalidate, lambda pair: pair[1].status_code == 304, timeout=10, every=0.1)
    assert same.content == b"" and same.headers["etag"] == etag
    api.post("/v1/video/cancel", params={"id": task_id})
    changed = api.get("/v1/video/query", params={"id": task_id}, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


# --------------------------------------------------------------------------------------------- errors


def check_error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    data = r.json()
    ErrorResponse.model_validate(data, strict=True)
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "code"}
    assert data["error"]["code"] == code
    assert all(type(v) is str for v in data["error"].values())
    message: str = data["error"]["message"]
    return message


def test_auth_and_isolation(server: Server, api: httpx.Client, other_key: str) -> None:
    task_id = submit(api, {"model": "sora-2", "prompt": "p"}, **{"X-Sandbox-Queue": "30"})
    with server.client(None) as anon:
        check_error(anon.get(f"/v1/video/query?id={task_id}"), 401, "unauthorized")
        check_error(
            anon.post("/v1/video/create", json={"model": "sora-2", "prompt": "p"}), 401, "unauthorized"
        )
        check_error(anon.post("/v1/video/cancel", params={"id": task_id}), 401, "unauthorized")
    with server.client("mr-not-a-key") as bad:
        r = bad.get(f"/v1/video/query?id={task_id}")
        assert check_error(r, 401, "unauthorized")
        assert json.loads(r.content)["error"]["type"] == "authentication_error"
    with server.client(other_key) as other:
        foreign = other.get(f"/v1/video/query?id={task_id}")
        unknown = other.get("/v1/video/query?id=sora-2:task_" + "0" * 26)
        check_error(foreign, 404, "not_found")
        assert foreign.status_code == unknown.status_code and foreign.content == unknown.content
    # [MR] no id at all is a parameter error, not "not found"
    assert "id" in check_error(api.get("/v1/video/query"), 400, "invalid_request")
    check_error(api.get("/v1/video/query?id="), 400, "invalid_request")
    assert query(api, task_id)["status"] == "pending"  # the owner still sees it
    api.post("/v1/video/cancel", params={"id": task_id})


THREE = [IMAGE, "https://example.com/b.png", "https://example.com/c.png"]
BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "model"),
    ({"model": "sora-2"}, "prompt"),
    ({"model": "dall-e-3", "prompt": "p"}, "supported models: sora-2, sora-2-all"),
    ({"model": 5, "prompt": "p"}, "model"),
    ({"model": "sora-2", "prompt": 123}, "prompt"),
    ({"model": "sora-2", "prompt": "   "}, "prompt"),
    ({"model": "sora-2", "prompt": "p", "images": IMAGE}, "images"),
    ({"model": "sora-2", "prompt": "p", "images": ["ftp://example.com/a.png"]}, "images"),
    ({"model": "sora-2", "prompt": "p", "images": ["not a url"]}, "images"),
    ({"model": "sora-2", "prompt": "p", "orientation": "square"}, "orientation"),
    ({"model": "sora-2", "prompt": "p", "size": "720P"}, "size"),
    ({"model": "sora-2", "prompt": "p", "size": "huge"}, "size"),
    ({"model": "sora-2", "prompt": "p", "duration": 25}, "duration"),
    ({"model": "sora-2-pro", "prompt": "p", "duration": 12}, "duration"),
    ({"model": "sora-2", "prompt": "p", "duration": "ten"}, "duration"),
    ({"model": "sora-2", "prompt": "p", "watermark": "maybe"}, "watermark"),
    ({"model": "sora-2", "prompt": "p", "character_url": "nope"}, "character_url"),
    ({"model": "sora-2", "prompt": "p", "character_timestamps": "1,3"}, "character_url"),
    (
        {
            "model": "sora-2",
            "prompt": "p",
            "character_url": "https://e.com/c.mp4",
            "character_timestamps": "3,1",
        },
        "character_timestamps",
    ),
    ({"model": "sora-2", "prompt": "p", "aspect_ratio": "16:9"}, "aspect_ratio"),
    ({"model": "veo2", "prompt": "p", "aspect_ratio": "16:9"}, "aspect_ratio"),
    ({"model": "veo3", "prompt": "p", "aspect_ratio": "1:1"}, "aspect_ratio"),
    ({"model": "veo3", "prompt": "p", "orientation": "portrait"}, "orientation"),
    ({"model": "veo3", "prompt": "p", "images": THREE[:2]}, "images"),
    ({"model": "veo3-frames", "prompt": "p", "images": THREE}, "images"),
    ({"model": "veo3-frames", "prompt": "p"}, "images"),
    ({"model": "veo3.1-components", "prompt": "p", "images": [*THREE, IMAGE]}, "images"),
    ({"model": "veo3", "prompt": "p", "duration": 10}, "duration"),
    ({"model": "veo3", "prompt": "p", "enhance_prompt": "very"}, "enhance_prompt"),
    ({"model": "grok-video-3", "prompt": "p", "size": "small"}, "size"),
    ({"model": "grok-video-3", "prompt": "p", "aspect_ratio": "9:16"}, "aspect_ratio"),
    ({"model": "grok-video-3", "prompt": "p", "watermark": False}, "watermark"),
    ([1, 2, 3], ""),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_BODIES)
def test_bad_input_is_rejected_and_changes_nothing(
    server: Server, api: httpx.Client, body: Any, mentions: str
) -> None:
    before = server.task_count()
    message = check_error(api.post("/v1/video/create", json=body), 400, "invalid_request")
    assert mentions in message
    assert server.task_count() == before


def test_non_json_and_oversized_bodies(server: Server, api: httpx.Client) -> None:
    before = server.task_count()
    headers = {"content-type": "application/json"}
    check_error(api.post("/v1/video/create", content=b"{not json", headers=headers), 400, "invalid_request")
    check_error(api.post("/v1/video/create", content=b"", headers=headers), 400, "invalid_request")
    big = b'{"model": "sora-2", "prompt": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    check_error(api.post("/v1/video/create", content=big, headers=headers), 413, "too_large")
    assert server.task_count() == before
