"""Dialect E (OpenAI Videos API) against a real `mediarelay serve`, driven by the OFFICIAL `openai` SDK.

The SDK scenario (`openai_scenario.py`) runs twice at once: in this process with the installed, newest
openai, and in a subprocess with openai 2.2.0 (the first release with `client.videos`, cached under
`.venv/openai-2.2.0`); both reports get the same assertions. Raw-HTTP tests then pin what the SDK does not
see: every field's exact JSON type, the lifecycle renderings, ETag/304, the poll header, Range, 413,
auth and foreign ids, list paging, delete (rows and files gone), and that bad input creates nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import orjson
import pytest
from PIL import Image, ImageChops, ImageStat

from conftest import Server, wait_until
from mediarelay import media
from mediarelay.dialects.openai_videos import OpenAIError, Video, VideoDeleted, VideoList
from mediarelay.media import probe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import openai_scenario  # noqa: E402

OLD_SDK = "2.2.0"
OLD_SDK_DIR = HERE.parents[1] / ".venv" / f"openai-{OLD_SDK}"

# OpenAI's API reference example of a created video (platform.openai.com/docs/api-reference/videos),
# verbatim: it omits keys and has one more ("quality"), which the tolerant model must take.
DOC_VIDEO = (
    '{"id": "video_123", "object": "video", "model": "sora-2", "status": "queued", "progress": 0, '
    '"created_at": 1712697600, "size": "1024x1792", "seconds": "8", "quality": "standard"}'
)
DOC_DELETED = '{"id": "video_123", "object": "video.deleted", "deleted": true}'
DOC_ERROR = (
    '{"error": {"message": "Invalid \'seconds\': must be one of 4, 8, 12.", "type": "invalid_request_error", '
    '"param": "seconds", "code": null}}'
)

NONE = type(None)
VIDEO_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "object": (str,),
    "model": (str,),
    "status": (str,),
    "progress": (int,),
    "created_at": (int,),
    "completed_at": (int, NONE),
    "expires_at": (int, NONE),
    "prompt": (str,),
    "remixed_from_video_id": (str, NONE),
    "seconds": (str,),
    "size": (str,),
    "error": (dict, NONE),
}
LIST_FIELDS: dict[str, tuple[type, ...]] = {
    "object": (str,),
    "data": (list,),
    "first_id": (str, NONE),
    "last_id": (str, NONE),
    "has_more": (bool,),
}
ERROR_FIELDS: dict[str, tuple[type, ...]] = {
    "message": (str,),
    "type": (str,),
    "param": (str, NONE),
    "code": (str,),
}
VIDEO_ID = re.compile(r"^video_[0-9a-f]{32}$")
UNKNOWN = "video_" + "0" * 32
PNG = openai_scenario.tiny_png()


# -- helpers ------------------------------------------------------------------------------------------


def exact_types(data: dict[str, Any], fields: dict[str, tuple[type, ...]], where: str) -> None:
    """Every documented key present with exactly one of its JSON types (bool is not int)."""
    missing = set(fields) - set(data)
    assert not missing, f"{where}: missing {missing}"
    for name, kinds in fields.items():
        assert type(data[name]) in kinds, f"{where}.{name}: {type(data[name]).__name__}"


def check_video(data: Any, *, status: str | None = None) -> dict[str, Any]:
    """A live Video object: strict model parse, every key with its exact type, consistent values."""
    assert isinstance(data, dict)
    Video.model_validate(data, strict=True)
    exact_types(data, VIDEO_FIELDS, "video")
    assert VIDEO_ID.match(data["id"]), data["id"]
    assert data["object"] == "video"
    assert data["status"] in {"queued", "in_progress", "completed", "failed"}
    if status is not None:
        assert data["status"] == status, data
    assert data["model"] in {"sora-2", "sora-2-pro"}
    assert data["seconds"] in {"4", "8", "12"}
    assert data["size"] in {"720x1280", "1280x720", "1024x1792", "1792x1024"}
    assert 0 <= data["progress"] <= 100
    # Epoch SECONDS: close to now (a milliseconds value would be ~1000x larger).
    assert abs(data["created_at"] - time.time()) < 600, data["created_at"]
    assert int(data["id"][6:14], 16) in range(data["created_at"] - 2, data["created_at"] + 1)
    assert data["expires_at"] is None
    if data["status"] == "completed":
        assert data["progress"] == 100 and data["error"] is None
        assert data["completed_at"] is not None and data["completed_at"] >= data["created_at"]
    elif data["status"] == "failed":
        assert data["completed_at"] is not None
        assert isinstance(data["error"], dict)
        assert all(type(data["error"][k]) is str and data["error"][k] for k in ("code", "message"))
    else:
        assert data["completed_at"] is None and data["error"] is None
    return data


def check_error(resp: httpx.Response, status: int, kind: str, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    data = resp.json()
    OpenAIError.model_validate(data, strict=True)
    assert set(data) == {"error"}
    exact_types(data["error"], ERROR_FIELDS, "error")
    assert data["error"]["code"] == kind, data
    if param is not None:
        assert data["error"]["param"] == param, data
    body: dict[str, Any] = data["error"]
    return body


def check_sdk_error(err: dict[str, Any], cls: str, status: int, param: str | None = None) -> None:
    assert err["class"] == cls and err["status"] == status, err
    OpenAIError.model_validate({"error": err["body"]}, strict=True)
    exact_types(err["body"], ERROR_FIELDS, "sdk error")
    if param is not None:
        assert err["body"]["param"] == param, err


def files_under(server: Server) -> set[str]:
    root = server.data_dir / "files"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".staging" not in p.parts}


def task_row(server: Server, public_id: str) -> dict[str, Any]:
    rows = server.rows(f"select id, operation, params from tasks where public_id = '{public_id}'")
    assert rows, public_id
    task_id, operation, params = rows[0]
    return {"id": task_id, "operation": operation, "params": json.loads(params)}


def tiles(sheet: Image.Image, columns: int, rows: int) -> list[Image.Image]:
    w, h = sheet.size[0] // columns, sheet.size[1] // rows
    return [
        sheet.crop((c * w, r * h, (c + 1) * w, (r + 1) * h)).convert("L")
        for r in range(rows)
        for c in range(columns)
    ]


def check_spritesheet(path: Path, video_w: int, video_h: int) -> None:
    """The engine's sheet: 4 x 4 tiles 240 px wide with the video's aspect, all different frames."""
    with Image.open(path) as img:
        assert img.format == "JPEG"
        sheet = img.copy()
    tile_h = round(240 * video_h / video_w)
    assert sheet.size == (4 * 240, 4 * tile_h)
    parts = tiles(sheet, 4, 4)
    for i in range(len(parts) - 1):  # consecutive frames differ (the bars move)
        diff = ImageStat.Stat(ImageChops.difference(parts[i], parts[i + 1])).mean[0]
        assert diff > 0.5, (i, diff)


@pytest.fixture
def client(server: Server, user_key: str) -> Iterator[httpx.Client]:
    with server.client(user_key) as c:
        yield c


def submit(client: httpx.Client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/videos", json={"prompt": "a lighthouse at dusk", **body}, headers=headers)
    assert resp.status_code == 200, resp.text
    return check_video(resp.json())


def get(client: httpx.Client, video_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/videos/{video_id}")
    assert resp.status_code == 200, resp.text
    return check_video(resp.json())


def finished(client: httpx.Client, video_id: str) -> dict[str, Any]:
    data: dict[str, Any] = wait_until(
        lambda: get(client, video_id), lambda v: v["status"] in ("completed", "failed"), timeout=60
    )
    return data


# -- the documented examples ----------------------------------------------------------------------------


def test_documented_examples_parse() -> None:
    video = Video.model_validate_json(DOC_VIDEO)
    assert video.status == "queued" and video.prompt is None and video.error is None
    assert VideoDeleted.model_validate_json(DOC_DELETED).deleted is True
    assert OpenAIError.model_validate_json(DOC_ERROR).error.param == "seconds"
    page = VideoList.model_validate({"object": "list", "data": [orjson.loads(DOC_VIDEO)], "has_more": False})
    assert page.data[0].id == "video_123" and page.first_id is None


# -- the official SDK, newest and 2.2.0 ------------------------------------------------------------------


def old_sdk() -> Path | None:
    """openai 2.2.0 installed once into a cache dir (atomically, so parallel runs never see half of it)."""
    if (OLD_SDK_DIR / f"openai-{OLD_SDK}.dist-info").is_dir():
        return OLD_SDK_DIR
    staging = OLD_SDK_DIR.with_name(f"{OLD_SDK_DIR.name}.part{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"]
    done = subprocess.run(
        [*pip, str(staging), f"openai=={OLD_SDK}", "httpx<0.29"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    try:
        staging.rename(OLD_SDK_DIR)
    except OSError:  # another run got there first
        shutil.rmtree(staging, ignore_errors=True)
    return OLD_SDK_DIR


@pytest.fixture(scope="module")
def reports(
    server: Server, other_key: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any] | str]:
    """Both SDK versions' reports (each on its own key, so their lists do not mix); a str = skip reason."""
    out = tmp_path_factory.mktemp("openai-sdk")
    old_dir = old_sdk()
    proc: subprocess.Popen[str] | None = None
    if old_dir is not None:
        env = {**os.environ, "PYTHONPATH": str(old_dir), "PYTHONWARNINGS": "ignore"}
        args = [sys.executable, str(HERE / "openai_scenario.py"), server.base_url]
        proc = subprocess.Popen(
            [*args, server.new_key("sdk-old"), other_key, str(out / "old")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.x marks the Sora API deprecated
        new = openai_scenario.run(server.base_url, server.new_key("sdk-new"), other_key, out / "new")
    found: dict[str, dict[str, Any] | str] = {"newest": new}
    if proc is None:
        found["2.2.0"] = f"could not install openai {OLD_SDK}"
    else:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-3000:]
        found["2.2.0"] = json.loads(stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("sdk", ["newest", "2.2.0"])
def test_official_sdk(reports: dict[str, dict[str, Any] | str], sdk: str, server: Server) -> None:
    report = reports[sdk]
    if isinstance(report, str):
        pytest.skip(report)
    version = report["sdk_version"]
    if sdk == "2.2.0":
        assert version == OLD_SDK
    else:
        import openai

        assert version == openai.__version__ and int(version.split(".")[0]) >= 2

    # Every Video the SDK parsed carries every key, with values from the table.
    for name in ("json", "file", "held_final", "by_url_final", "retrieve", "remix"):
        check_video(report[name], status="completed")
    for name in ("held", "by_url", "failing"):
        assert report["created"][name]["status"] == "queued"
    first = report["json"]
    assert (first["model"], first["size"], first["seconds"]) == ("sora-2", "1280x720", "4")
    assert first["prompt"] == openai_scenario.PROMPT
    assert report["retrieve"] == first
    assert (report["file"]["size"], report["file"]["seconds"]) == ("720x1280", "4")  # the defaults
    by_url = report["by_url_final"]
    assert (by_url["model"], by_url["size"], by_url["seconds"]) == ("sora-2-pro", "1792x1024", "8")

    # A forced failure: failed, with the reason as error.
    failed = check_video(report["failing_final"], status="failed")
    assert (failed["error"]["code"], failed["error"]["message"]) == ("generation_failed", "scenario failure")

    # poll(): the first retrieve's openai-poll-after-ms is what the SDK slept before the next one.
    events = report["held_events"]
    answers = [e for e in events if e["kind"] == "response"]
    sends = [e for e in events if e["kind"] == "request"]
    assert len(sends) >= 2 and answers[0]["status"] == 200
    hint = int(answers[0]["poll_after_ms"])
    assert 1000 < hint <= 5000  # longer than the SDK's own 1 s default ...
    gap = sends[1]["t"] - answers[0]["t"]
    assert hint / 1000 - 0.05 <= gap <= hint / 1000 + 1.0, (hint, gap)  # ... and that is what it slept
    assert answers[-1]["poll_after_ms"] is None  # none once the video is finished
    assert "openai-poll-after-ms" not in report["retrieve_headers"]
    assert report["retrieve_headers"]["etag"]

    # How each version sends create: 2.2.0 JSON unless a file is attached; 3.x multipart always.
    kinds = {(ct or "").split(";")[0] for ct in report["submits"]}
    if sdk == "2.2.0":
        assert kinds == {"application/json", "multipart/form-data"}, kinds
    else:
        assert kinds <= {"multipart/form-data"} and kinds, kinds

    # The uploaded input_reference is stored and served at mediarelay's own URL.
    row = task_row(server, report["file"]["id"])
    assert row["operation"] == "image_to_video"
    [ref_url] = row["params"]["images"]
    assert ref_url.startswith(f"{server.base_url}/files/inputs-")
    got = httpx.get(ref_url)
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    assert task_row(server, by_url["id"])["params"]["images"] == ["https://example.com/first-frame.png"]

    # Content: the three variants with OpenAI's content types, read back.
    content = report["content"]
    assert content["video"]["content_type"] == "video/mp4" == report["content_default_type"]
    info = probe(Path(content["video"]["path"]))
    assert info.mime == "video/mp4" and info.video_codec == "h264" and info.audio_codec == "aac"
    assert (info.width, info.height) == (1280, 720) and info.duration is not None
    assert abs(info.duration - 4) < 0.2 and info.frame_rate is not None and round(info.frame_rate) == 30
    assert content["thumbnail"]["content_type"] == "image/webp"
    with Image.open(content["thumbnail"]["path"]) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (480, 270)
    assert content["spritesheet"]["content_type"] == "image/jpeg"
    check_spritesheet(Path(content["spritesheet"]["path"]), 1280, 720)
    check_sdk_error(report["content_failed"], "NotFoundError", 404)

    # Remix: a new video from the completed one, same shape, pointing back at it.
    remix = report["remix"]
    assert report["remix_created"]["status"] == "queued" and remix["remixed_from_video_id"] == first["id"]
    assert (remix["model"], remix["size"], remix["seconds"]) == ("sora-2", "1280x720", "4")
    remix_row = task_row(server, remix["id"])
    assert remix_row["operation"] == "video_to_video"
    assert remix_row["params"]["video"].startswith(f"{server.base_url}/files/")
    check_sdk_error(report["remix_failed_source"], "BadRequestError", 400, "video_id")

    # List: auto-pagination and manual cursors agree, newest first, two a page; asc is the reverse.
    ours = [report[n]["id"] for n in ("remix", "file", "json")] + [
        report["created"][n]["id"] for n in ("failing", "by_url", "held")
    ]
    assert report["list_auto"] == [i for page in report["list_pages"] for i in page]
    assert all(len(page) == 2 for page in report["list_pages"][:-1]) and report["list_pages"][-1]
    assert set(report["list_auto"]) == set(ours)  # this key's videos, no one else's
    assert report["list_auto"].index(ours[0]) < report["list_auto"].index(ours[-1])
    assert report["list_asc"] == report["list_auto"][::-1]
    first_page = report["list_first_page"]
    assert first_page["has_more"] is True and len(first_page["data"]) == 2
    assert first_page["last_id"] == first_page["data"][-1]["id"]

    # Errors in the SDK's classes with our envelope.
    errors = report["errors"]
    check_sdk_error(errors["bad_seconds"], "BadRequestError", 400, "seconds")
    check_sdk_error(errors["bad_size"], "BadRequestError", 400, "size")
    check_sdk_error(errors["pro_size"], "BadRequestError", 400, "size")
    check_sdk_error(errors["bad_model"], "BadRequestError", 400, "model")
    check_sdk_error(errors["bad_file"], "BadRequestError", 400, "input_reference")
    check_sdk_error(errors["bad_limit"], "BadRequestError", 400, "limit")
    check_sdk_error(errors["bad_cursor"], "BadRequestError", 400, "after")
    check_sdk_error(errors["wrong_key"], "AuthenticationError", 401)
    assert errors["wrong_key"]["body"]["type"] == "authentication_error"
    check_sdk_error(errors["unknown"], "NotFoundError", 404)
    for name in ("foreign", "foreign_content", "foreign_delete"):
        assert errors[name] == errors["unknown"], name  # another key's video is just "not found"

    # Delete: the SDK's answer, then the video is gone everywhere.
    assert report["deleted"] == {
        "id": report["failing_final"]["id"],
        "object": "video.deleted",
        "deleted": True,
    }
    check_sdk_error(report["after_delete"], "NotFoundError", 404)
    assert report["after_delete"] == errors["unknown"]
    assert report["failing_final"]["id"] not in report["list_after_delete"]
    assert not server.rows(f"select 1 from tasks where public_id = '{report['failing_final']['id']}'")


# -- raw HTTP: lifecycle renderings, headers, ETag ----------------------------------------------------


def test_lifecycle_fields_headers_and_etag(client: httpx.Client) -> None:
    video = submit(
        client,
        {"X-Sandbox-Queue": "1.5", "X-Sandbox-Duration": "2"},
        size="1280x720",
        seconds="8",
        model="sora-2",
    )
    assert (
        video["status"] == "queued" and video["progress"] == 0 and video["prompt"] == "a lighthouse at dusk"
    )
    vid = video["id"]

    queued = client.get(f"/v1/videos/{vid}")
    assert check_video(queued.json(), status="queued")
    assert queued.headers["openai-poll-after-ms"] == "1000"
    assert queued.headers["content-type"] == "application/json" and queued.headers["etag"]

    running = wait_until(
        lambda: client.get(f"/v1/videos/{vid}"), lambda r: r.json()["progress"] > 0, timeout=20, every=0.05
    )
    assert check_video(running.json(), status="in_progress")
    assert 500 <= int(running.headers["openai-poll-after-ms"]) <= 5000

    done = finished(client, vid)
    assert done["status"] == "completed" and (done["size"], done["seconds"]) == ("1280x720", "8")
    resp = client.get(f"/v1/videos/{vid}")
    assert "openai-poll-after-ms" not in resp.headers
    assert resp.json() == done and orjson.loads(resp.content) == done
    etag = resp.headers["etag"]
    again = client.get(f"/v1/videos/{vid}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    head = client.head(f"/v1/videos/{vid}")
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    assert client.get(f"/v1/videos/{vid}").content == resp.content  # stable bytes

    # Content of an 8 s landscape video; Range and If-None-Match on the download.
    video_resp = client.get(f"/v1/videos/{vid}/content")
    assert video_resp.status_code == 200 and video_resp.headers["content-type"] == "video/mp4"
    part = client.get(f"/v1/videos/{vid}/content", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == video_resp.content[:100]
    assert part.headers["content-range"].startswith("bytes 0-99/")
    cached = client.get(f"/v1/videos/{vid}/content", headers={"If-None-Match": video_resp.headers["etag"]})
    assert cached.status_code == 304
    sheet = client.get(f"/v1/videos/{vid}/content", params={"variant": "spritesheet"})
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(sheet.content)) as img:
        assert img.size == (960, 540)
    check_error(
        client.get(f"/v1/videos/{vid}/content", params={"variant": "gif"}), 400, "invalid_request", "variant"
    )


def test_not_ready_cancel_and_delete(client: httpx.Client, server: Server) -> None:
    held = submit(client, {"X-Sandbox-Duration": "30"})
    wait_until(lambda: get(client, held["id"]), lambda v: v["status"] == "in_progress", timeout=20)
    err = check_error(client.get(f"/v1/videos/{held['id']}/content"), 404, "not_found")
    assert "not ready" in err["message"]
    err = check_error(
        client.post(f"/v1/videos/{held['id']}/remix", json={"prompt": "x"}), 400, "invalid_request"
    )
    assert err["param"] == "video_id"
    check_error(client.post(f"/v1/videos/{held['id']}/remix", json={}), 400, "invalid_request", "prompt")

    # [MR] cancel: failed, error code "canceled".
    resp = client.post(f"/v1/videos/{held['id']}/cancel")
    assert resp.status_code == 200, resp.text
    canceled = check_video(resp.json(), status="failed")
    assert canceled["error"] == {"code": "canceled", "message": "canceled by the client"}
    assert get(client, held["id"]) == canceled

    # DELETE of a running video: stopped, then its rows are gone.
    running = submit(client, {"X-Sandbox-Duration": "30"})
    row = task_row(server, running["id"])
    resp = client.delete(f"/v1/videos/{running['id']}")
    assert resp.status_code == 200 and resp.json() == {
        "id": running["id"],
        "object": "video.deleted",
        "deleted": True,
    }
    VideoDeleted.model_validate(resp.json(), strict=True)
    check_error(client.get(f"/v1/videos/{running['id']}"), 404, "not_found")
    check_error(client.delete(f"/v1/videos/{running['id']}"), 404, "not_found")
    for table, column in (("tasks", "id"), ("assets", "task_id"), ("task_events", "task_id")):
        assert not server.rows(f"select 1 from {table} where {column} = '{row['id']}'"), table

    # DELETE of a completed video removes its files too.
    done = submit(client)
    finished(client, done["id"])
    row = task_row(server, done["id"])
    task_dir = server.data_dir / "files" / row["id"]
    assert sorted(p.name for p in task_dir.iterdir()) == [
        "poster-0.jpg",
        "spritesheet-0.jpg",
        "thumbnail-0.webp",
        "video-0.mp4",
    ]
    assert client.delete(f"/v1/videos/{done['id']}").status_code == 200
    assert not task_dir.exists()
    assert not server.rows(f"select 1 from assets where task_id = '{row['id']}'")


def test_upload_is_stored_served_and_deleted(client: httpx.Client, server: Server) -> None:
    files = {"input_reference": ("frame.png", PNG, "image/png")}
    resp = client.post("/v1/videos", data={"prompt": "from a frame", "seconds": "4"}, files=files)
    assert resp.status_code == 200, resp.text
    video = check_video(resp.json(), status="queued")
    [url] = task_row(server, video["id"])["params"]["images"]
    key = url.removeprefix(f"{server.base_url}/files/")
    assert re.fullmatch(r"inputs-[0-9a-f]{32}/frame\.png", key), key
    assert httpx.get(url).content == PNG
    assert client.delete(f"/v1/videos/{video['id']}").status_code == 200
    assert httpx.get(url).status_code == 404
    assert not (server.data_dir / "files" / key.split("/")[0]).exists()


# -- raw HTTP: lists ---------------------------------------------------------------------------------------


def test_list_pages(server: Server) -> None:
    key = server.new_key("lister")
    with server.client(key) as c:
        empty = c.get("/v1/videos").json()
        assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
        ids = [submit(c, {"X-Sandbox-Queue": "30"})["id"] for _ in range(3)]
        page = c.get("/v1/videos", params={"limit": 2}).json()
        VideoList.model_validate(page, strict=True)
        exact_types(page, LIST_FIELDS, "list")
        assert page["object"] == "list" and page["has_more"] is True
        assert [v["id"] for v in page["data"]] == ids[::-1][:2]
        assert (page["first_id"], page["last_id"]) == (ids[2], ids[1])
        for item in page["data"]:
            check_video(item, status="queued")
        rest = c.get("/v1/videos", params={"limit": 2, "after": page["last_id"]}).json()
        assert [v["id"] for v in rest["data"]] == [ids[0]] and rest["has_more"] is False
        asc = c.get("/v1/videos", params={"order": "asc"}).json()
        assert [v["id"] for v in asc["data"]] == ids and asc["first_id"] == ids[0]
        after_first = c.get("/v1/videos", params={"order": "asc", "after": ids[0]}).json()
        assert [v["id"] for v in after_first["data"]] == ids[1:]
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}):
            check_error(c.get("/v1/videos", params=bad), 400, "invalid_request", "limit")
        check_error(c.get("/v1/videos", params={"order": "up"}), 400, "invalid_request", "order")
        check_error(c.get("/v1/videos", params={"after": UNKNOWN}), 400, "invalid_request", "after")
        for vid in ids:
            assert c.delete(f"/v1/videos/{vid}").status_code == 200
    # Another key's list never shows them, and their ids are unknown cursors there.
    with server.client(server.new_key("lister2")) as other:
        assert other.get("/v1/videos").json()["data"] == []


# -- raw HTTP: auth, foreign ids, bad input ------------------------------------------------------------


def test_auth_and_foreign_ids(client: httpx.Client, server: Server, other_key: str) -> None:
    video = submit(client)
    vid = video["id"]
    calls = [
        ("POST", "/v1/videos", {"prompt": "x"}),
        ("GET", "/v1/videos", None),
        ("GET", f"/v1/videos/{vid}", None),
        ("GET", f"/v1/videos/{vid}/content", None),
        ("DELETE", f"/v1/videos/{vid}", None),
        ("POST", f"/v1/videos/{vid}/remix", {"prompt": "x"}),
        ("POST", f"/v1/videos/{vid}/cancel", None),
    ]
    with server.client(None) as anon, server.client("mr-wrong") as wrong, server.client(other_key) as other:
        for method, path, body in calls:
            for c in (anon, wrong):
                err = check_error(c.request(method, path, json=body), 401, "unauthorized")
                assert err["type"] == "authentication_error"
        for method, path, body in calls[2:]:
            mine = other.request(method, path, json=body)
            unknown = other.request(method, path.replace(vid, UNKNOWN), json=body)
            assert (mine.status_code, mine.content) == (unknown.status_code, unknown.content), path
            check_error(mine, 404, "not_found")
    assert get(client, vid)["id"] == vid  # untouched by the other key


BAD_BODIES: list[tuple[Any, str | None]] = [
    ({}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 123}, "prompt"),
    ({"prompt": "x", "seconds": 4}, "seconds"),
    ({"prompt": "x", "seconds": "5"}, "seconds"),
    ({"prompt": "x", "size": "640x480"}, "size"),
    ({"prompt": "x", "size": "1792x1024"}, "size"),  # sora-2-pro only
    ({"prompt": "x", "model": "sora-1"}, "model"),
    ({"prompt": "x", "input_reference": {}}, "input_reference"),
    (
        {"prompt": "x", "input_reference": {"image_url": "ftp://example.com/a.png"}},
        "input_reference.image_url",
    ),
    ({"prompt": "x", "input_reference": {"file_id": "file-abc"}}, "input_reference"),
    ({"prompt": "x", "input_reference": "https://example.com/a.png"}, "input_reference"),
    ([{"prompt": "x"}], None),
]


def test_bad_input_creates_nothing(client: httpx.Client, server: Server) -> None:
    before, files_before = server.task_count(), files_under(server)
    for body, param in BAD_BODIES:
        check_error(client.post("/v1/videos", json=body), 400, "invalid_request", param)
    err = check_error(
        client.post("/v1/videos", content=b"prompt: not json", headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )
    assert "not valid JSON" in err["message"]
    # Multipart: the whole request is checked before the upload is stored.
    png = {"input_reference": ("frame.png", PNG, "image/png")}
    multipart_cases = [
        ({"prompt": "x", "seconds": "5"}, png, "seconds"),
        ({"prompt": "x"}, {"input_reference": ("a.txt", b"hello", "text/plain")}, "input_reference"),
        ({"prompt": "x"}, {"input_reference": ("empty.png", b"", "image/png")}, "input_reference"),
        ({"prompt": "x", "input_reference[image_url]": "https://example.com/a.png"}, png, "input_reference"),
        ({}, png, "prompt"),
        ({"prompt": "x"}, {"prompt": ("p.txt", b"x", "text/plain")}, "prompt"),
    ]
    for data, files, param in multipart_cases:
        check_error(client.post("/v1/videos", data=data, files=files), 400, "invalid_request", param)
    two = [("input_reference", ("a.png", PNG, "image/png")), ("input_reference", ("b.png", PNG, "image/png"))]
    check_error(client.post("/v1/videos", data={"prompt": "x"}, files=two), 400, "invalid_request")
    assert server.task_count() == before
    assert files_under(server) == files_before


def test_oversized_body_is_413(client: httpx.Client, server: Server) -> None:
    before, files_before = server.task_count(), files_under(server)
    huge = b"x" * (10 * 1024 * 1024 + 10)
    resp = client.post(
        "/v1/videos",
        content=orjson.dumps({"prompt": huge.decode()}),
        headers={"content-type": "application/json"},
    )
    check_error(resp, 413, "too_large")
    big = {"input_reference": ("big.png", PNG + huge, "image/png")}
    check_error(client.post("/v1/videos", data={"prompt": "x"}, files=big), 413, "too_large")
    assert server.task_count() == before and files_under(server) == files_before


# -- the sprite sheet itself -------------------------------------------------------------------------------


def test_spritesheet_tiles_are_frames_at_evenly_spaced_times(tmp_path: Path) -> None:
    """A clip whose grey level rises frame by frame: tile k must show the frame at (k + 0.5) / n."""
    clip, fps, count, (w, h) = tmp_path / "ramp.mp4", 30, 60, (160, 96)
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(count):
            level = round(250 * i / (count - 1))
            frame = av.VideoFrame.from_image(Image.new("RGB", (w, h), (level, level, level)))
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    import asyncio

    sheet_path = tmp_path / "sheet.jpg"
    size = asyncio.run(media.make_spritesheet(clip, sheet_path, columns=4, rows=2, tile_width=80))
    assert size == (4 * 80, 2 * 48)
    with Image.open(sheet_path) as img:
        assert img.format == "JPEG" and img.size == size
        parts = tiles(img.copy(), 4, 2)
    levels = [ImageStat.Stat(t).mean[0] for t in parts]
    for k, level in enumerate(levels):
        frame_index = (k + 0.5) / 8 * count
        expected = 250 * frame_index / (count - 1)
        assert abs(level - expected) < 12, (k, level, expected)
    assert levels == sorted(levels) and levels[-1] - levels[0] > 150
