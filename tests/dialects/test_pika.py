"""Dialect B (Pika) end to end against a real `mediarelay serve`: submit, feed, cancel, files, errors.

Every live answer is parsed strictly with the dialect's own response models, every documented field is
checked present with its exact JSON type, and result files are downloaded and read back.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import Server, wait_until
from mediarelay.dialects.common import seed_of
from mediarelay.dialects.pika import PikaError, PikaFeed, PikaSubmitted, PikaVideo, to_status
from mediarelay.domain import Status
from mediarelay.media import probe

# The seed page's example, verbatim (seeds/001_e904105532d9aff6.txt).
SEED_EXAMPLE = """{
"id": "c8091b7b-06df-48ed-8fe3-8ee8f1e367c2",
"promptText": "苹果蒸发",
"videos": [
{
"id": "c8091b7b-06df-48ed-8fe3-8ee8f1e367c2",
"status": "finished",
"progress": 100,
"seed": 393769667,
"resultUrl": "https://cdn.pika.art/v1/c8091b7b-06df-48ed-8fe3-8ee8f1e367c2/_____seed393769667.mp4",
"sharingUrl": "https://cdn.pika.art/v1/c8091b7b-06df-48ed-8fe3-8ee8f1e367c2/_____seed393769667_share.mp4",
"videoPoster": "https://cdn.pika.art/v1/c8091b7b-06df-48ed-8fe3-8ee8f1e367c2/poster.jpg",
"imageThumb": "https://cdn.pika.art/v1/c8091b7b-06df-48ed-8fe3-8ee8f1e367c2/thumbnail.jpg",
"duration": 5
}
]
}"""

# The second documented example (specs/dialects.md §B), verbatim.
SPEC_EXAMPLE = (
    '{"id":"66e0818e-05fb-454e-b246-a6f253e9ffbf","promptText":"Plane fly","videos":[{"id":'
    '"66e0818e-05fb-454e-b246-a6f253e9ffbf","status":"finished","seed":3183047765,"resultUrl":'
    '"https://cdn.pika.art/v1/66e0818e-05fb-454e-b246-a6f253e9ffbf/Plane_fly_seed3183047765.mp4",'
    '"sharingUrl":"https://cdn.pika.art/v1/66e0818e-05fb-454e-b246-a6f253e9ffbf/Plane_fly_seed3183047765_share.mp4",'
    '"videoPoster":"https://cdn.pika.art/v1/66e0818e-05fb-454e-b246-a6f253e9ffbf/poster.jpg",'
    '"imageThumb":"https://cdn.pika.art/v1/66e0818e-05fb-454e-b246-a6f253e9ffbf/thumbnail.jpg",'
    '"duration":5,"error":"","progress":100}]}'
)

# The documented request example, verbatim.
DOC_REQUEST = (
    '{"pikaffect":"","promptText":"moving","model":"1.5","options":{"aspectRatio":1.7777777777777777,'
    '"frameRate":24,"camera":{},"parameters":{"guidanceScale":12,"motion":1,"negativePrompt":""},'
    '"extend":false},"image":""}'
)

FEED_FIELDS: dict[str, type] = {"id": str, "promptText": str, "videos": list}
VIDEO_FIELDS: dict[str, type] = {
    "id": str,
    "status": str,
    "seed": int,
    "resultUrl": str,
    "sharingUrl": str,
    "videoPoster": str,
    "imageThumb": str,
    "duration": int,
    "error": str,
    "progress": int,
}
ERROR_FIELDS: dict[str, type] = {"message": str, "type": str, "code": str}
STATUSES = {"queued", "pending", "finished", "error"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
URL_FIELDS = ("resultUrl", "sharingUrl", "videoPoster", "imageThumb")


def body(**changes: Any) -> dict[str, Any]:
    """The documented request with top-level and `options` changes (`options=` merges; None deletes)."""
    data: dict[str, Any] = orjson.loads(DOC_REQUEST)
    options = changes.pop("options", {})
    if options is None:
        del data["options"]
        options = {}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    for key, value in options.items():
        if value is None:
            data["options"].pop(key, None)
        else:
            data["options"][key] = value
    return data


# -- checks -------------------------------------------------------------------------------------------


def exact_types(data: dict[str, Any], fields: dict[str, type], where: str) -> None:
    """Every documented field present with exactly its JSON type (bool is not int, int is not float)."""
    missing = set(fields) - set(data)
    assert not missing, f"{where}: missing {missing}"
    for name, kind in fields.items():
        assert type(data[name]) is kind, f"{where}.{name}: {type(data[name]).__name__}, want {kind.__name__}"


def check_feed(data: Any, task_id: str | None = None) -> dict[str, Any]:
    """A live feed object: the strict model parse, all fields, exact types, values inside the table."""
    assert isinstance(data, dict)
    PikaFeed.model_validate(data, strict=True)
    exact_types(data, FEED_FIELDS, "feed")
    assert UUID4.match(data["id"]), data["id"]
    if task_id is not None:
        assert data["id"] == task_id
    assert len(data["videos"]) == 1
    item = data["videos"][0]
    assert isinstance(item, dict)
    PikaVideo.model_validate(item, strict=True)
    exact_types(item, VIDEO_FIELDS, "videos[0]")
    assert item["id"] == data["id"]
    assert item["status"] in STATUSES
    assert 0 <= item["seed"] < 2**32
    assert 0 <= item["progress"] <= 100
    assert item["duration"] >= 0
    if item["status"] == "finished":
        assert item["progress"] == 100 and item["error"] == ""
        for name in URL_FIELDS:
            assert item[name].startswith("http://127.0.0.1:"), (name, item[name])
        assert item["sharingUrl"] == item["resultUrl"]
    else:
        assert all(item[name] == "" for name in URL_FIELDS), item
    if item["status"] == "error":
        assert item["error"], "an error item says why"
    else:
        assert item["error"] == ""
    return item


def check_error(resp: httpx.Response, status: int, code: str, kind: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    PikaError.model_validate(data, strict=True)
    assert set(data) == {"error"}
    exact_types(data["error"], ERROR_FIELDS, "error")
    assert data["error"]["code"] == code
    assert data["error"]["type"] == kind
    assert data["error"]["message"]
    return dict(data)


def submit(client: httpx.Client, payload: dict[str, Any] | str, headers: dict[str, str] | None = None) -> str:
    resp = (
        client.post(
            "/pika/generate", content=payload, headers={"content-type": "application/json", **(headers or {})}
        )
        if isinstance(payload, str)
        else client.post("/pika/generate", json=payload, headers=headers)
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    PikaSubmitted.model_validate(data, strict=True)
    assert set(data) == {"id"} and type(data["id"]) is str
    assert UUID4.match(data["id"]), data
    return str(data["id"])


def get_feed(client: httpx.Client, task_id: str) -> dict[str, Any]:
    resp = client.get(f"/pika/feed/{task_id}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = resp.json()
    check_feed(data, task_id)
    return data


def status_is(*wanted: str) -> Callable[[dict[str, Any]], bool]:
    return lambda feed: feed["videos"][0]["status"] in wanted


def row(server: Server, public_id: str) -> dict[str, Any]:
    columns = ("id", "model", "operation", "params", "status")
    found = server.rows(f"select {', '.join(columns)} from tasks where public_id = ?", (public_id,))
    assert len(found) == 1
    return dict(zip(columns, found[0], strict=True))


def download(client: httpx.Client, url: str, mime: str, tmp: Path, name: str) -> Path:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    assert resp.headers["content-type"].startswith(mime), (url, resp.headers["content-type"])
    assert resp.content
    path = tmp / name
    path.write_bytes(resp.content)
    return path


# -- the tasks every test below looks at, submitted up front so they run in parallel ------------------

HOLD = {"X-Sandbox-Queue": "60"}  # stays queued until canceled
RUN = {"X-Sandbox-Queue": "0", "X-Sandbox-Duration": "60"}  # stays running until canceled


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> Iterator[httpx.Client]:
    with server.client(user_key) as c:
        yield c


@pytest.fixture(scope="module")
def tasks(client: httpx.Client) -> dict[str, str]:
    effect = body(
        pikaffect="mElT",
        promptText="A cake melts on a plate",
        options={"aspectRatio": 9 / 16, "frameRate": 12, "camera": {"zoom": "IN", "pan": None}},
    )
    return {
        "video": submit(client, DOC_REQUEST),  # the documented body, byte for byte
        "effect": submit(client, effect),
        "image": submit(client, body(promptText="一只红色的狐狸", options={"aspectRatio": None})),
        "i2v": submit(client, body(image="https://example.com/start.png", options={"aspectRatio": 1})),
        "extend": submit(
            client,
            body(video="https://example.com/clip.mp4", options={"extend": True, "aspectRatio": 3.0}),
            headers={"X-Sandbox-Duration": "0.2"},
        ),
        "fail": submit(client, body(promptText="Plane fly"), headers={"X-Sandbox-Fail": "upstream exploded"}),
        "fail_word": submit(client, body(promptText="a sandbox-fail prompt")),
        "queued": submit(client, body(promptText="held in the queue"), headers=HOLD),
        "running": submit(client, body(promptText="a long one"), headers=RUN),
    }


def finished(client: httpx.Client, task_id: str) -> dict[str, Any]:
    return dict(
        wait_until(lambda: get_feed(client, task_id), status_is("finished", "error"), timeout=60)["videos"][0]
    )


# -- the published examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("example", [SEED_EXAMPLE, SPEC_EXAMPLE], ids=["seed", "spec"])
def test_documented_examples_parse(example: str) -> None:
    data = orjson.loads(example)
    feed = PikaFeed.model_validate(data)
    assert feed.id == data["id"] == feed.videos[0].id
    item = feed.videos[0]
    assert item.status == "finished" and item.duration == 5 and item.progress == 100
    assert item.error == ""  # the seed example omits it: the model defaults it
    assert to_status(item) is Status.SUCCEEDED
    assert PikaFeed.model_validate_json(example).model_dump() == feed.model_dump()
    exact_types(data, FEED_FIELDS, "example")


def test_client_side_status_mapping() -> None:
    def item(status: str, error: str = "") -> PikaVideo:
        return PikaVideo(id="x", status=status, error=error)

    assert to_status(item("queued")) is Status.QUEUED
    assert to_status(item("pending")) is Status.RUNNING
    assert to_status(item("error", "boom")) is Status.FAILED
    assert to_status(item("error", "canceled")) is Status.CANCELED
    assert to_status(item("")) is None and to_status(item("NOT_START")) is None  # unknown: keep waiting


# -- success ------------------------------------------------------------------------------------------


def test_documented_request_makes_a_video(
    server: Server, client: httpx.Client, tasks: dict[str, str], tmp_path: Path
) -> None:
    task_id = tasks["video"]
    first = get_feed(client, task_id)
    assert first["promptText"] == "moving"
    assert first["videos"][0]["duration"] == 5  # the requested length while not finished
    item = finished(client, task_id)
    assert item["status"] == "finished", item
    info = probe(download(client, item["resultUrl"], "video/mp4", tmp_path, "v.mp4"))
    assert (info.width, info.height) == (1280, 720)
    assert info.duration is not None and round(info.duration) == item["duration"] == 5
    assert info.frame_rate is not None and round(info.frame_rate) == 24
    assert info.audio_codec is None  # no pikaffect: no sound
    poster = probe(download(client, item["videoPoster"], "image/jpeg", tmp_path, "poster.jpg"))
    assert (poster.width, poster.height) == (1280, 720)
    thumb = probe(download(client, item["imageThumb"], "image/", tmp_path, "thumb"))
    assert thumb.width is not None and thumb.height is not None and 0 < thumb.width < 1280
    found = row(server, task_id)
    assert item["seed"] == seed_of(found["id"])
    assert (found["model"], found["operation"]) == ("pika-1.5", "text_to_video")


def test_pikaffect_adds_sound_and_shapes_the_video(
    server: Server, client: httpx.Client, tasks: dict[str, str], tmp_path: Path
) -> None:
    item = finished(client, tasks["effect"])
    assert item["status"] == "finished", item
    info = probe(download(client, item["resultUrl"], "video/mp4", tmp_path, "fx.mp4"))
    assert (info.width, info.height) == (404, 720)  # 720 * 9/16 = 405 -> even
    assert info.audio_codec is not None
    assert info.frame_rate is not None and round(info.frame_rate) == 12
    params = orjson.loads(row(server, tasks["effect"])["params"])
    assert params["pikaffect"] == "Melt" and params["audio"] is True
    assert params["camera"] == {"zoom": "in"}


def test_no_aspect_ratio_makes_an_image(
    server: Server, client: httpx.Client, tasks: dict[str, str], tmp_path: Path
) -> None:
    feed = wait_until(lambda: get_feed(client, tasks["image"]), status_is("finished", "error"))
    assert feed["promptText"] == "一只红色的狐狸"
    item = feed["videos"][0]
    assert item["status"] == "finished", item
    assert item["duration"] == 0
    assert item["videoPoster"] == item["resultUrl"]  # [MR] an image is its own poster
    info = probe(download(client, item["resultUrl"], "image/png", tmp_path, "i.png"))
    assert (info.width, info.height) == (1024, 1024)
    thumb = probe(download(client, item["imageThumb"], "image/jpeg", tmp_path, "t.jpg"))
    assert thumb.width is not None and thumb.width < 1024
    assert row(server, tasks["image"])["operation"] == "text_to_image"


def test_inputs_choose_the_operation(
    server: Server, client: httpx.Client, tasks: dict[str, str], tmp_path: Path
) -> None:
    assert row(server, tasks["i2v"])["operation"] == "image_to_video"
    assert row(server, tasks["extend"])["operation"] == "video_to_video"
    item = finished(client, tasks["extend"])
    assert item["status"] == "finished", item
    info = probe(download(client, item["resultUrl"], "video/mp4", tmp_path, "x.mp4"))
    assert (info.width, info.height) == (1800, 720)  # aspect ratio 3.0 clamped to 2.5
    square = finished(client, tasks["i2v"])
    info = probe(download(client, square["resultUrl"], "video/mp4", tmp_path, "sq.mp4"))
    assert (info.width, info.height) == (720, 720)


def test_model_2_0_routes_as_pika_2_0(client: httpx.Client, server: Server) -> None:
    task_id = submit(client, body(model="2.0"), headers=HOLD)
    assert row(server, task_id)["model"] == "pika-2.0"
    assert client.post(f"/pika/feed/{task_id}/cancel").status_code == 200


# -- failure and cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fail", "fail_word"])
def test_failure_renders_error(client: httpx.Client, tasks: dict[str, str], name: str) -> None:
    item = finished(client, tasks[name])
    assert item["status"] == "error"
    if name == "fail":
        assert item["error"] == "upstream exploded"
    else:
        assert "sandbox-fail" in item["error"] or "failure" in item["error"]
    assert item["duration"] == 5  # never finished: the requested length


def test_queued_then_canceled(client: httpx.Client, tasks: dict[str, str], server: Server) -> None:
    task_id = tasks["queued"]
    item = get_feed(client, task_id)["videos"][0]
    assert item["status"] == "queued" and item["progress"] == 0
    resp = client.post(f"/pika/feed/{task_id}/cancel")
    assert resp.status_code == 200, resp.text
    item = check_feed(resp.json(), task_id)
    assert (item["status"], item["error"]) == ("error", "canceled")
    assert get_feed(client, task_id) == resp.json()
    again = client.post(f"/pika/feed/{task_id}/cancel")  # idempotent
    assert again.status_code == 200 and again.json() == resp.json()
    assert row(server, task_id)["status"] == "canceled"


def test_running_then_canceled(client: httpx.Client, tasks: dict[str, str]) -> None:
    task_id = tasks["running"]
    feed = wait_until(lambda: get_feed(client, task_id), status_is("pending"), timeout=15)
    first = feed["videos"][0]["progress"]
    later = wait_until(
        lambda: get_feed(client, task_id), lambda f: f["videos"][0]["progress"] > first, timeout=10
    )
    item = later["videos"][0]
    assert item["status"] == "pending" and 0 < item["progress"] < 100 and item["duration"] == 5
    resp = client.post(f"/pika/feed/{task_id}/cancel")
    assert resp.status_code == 200
    item = check_feed(resp.json(), task_id)
    assert (item["status"], item["error"]) == ("error", "canceled")


def test_cancel_of_a_finished_task_changes_nothing(client: httpx.Client, tasks: dict[str, str]) -> None:
    finished(client, tasks["video"])
    before = get_feed(client, tasks["video"])
    resp = client.post(f"/pika/feed/{tasks['video']}/cancel")
    assert resp.status_code == 200
    assert resp.json() == before
    assert get_feed(client, tasks["video"]) == before


# -- HTTP details ---------------------------------------------------------------------------------------


def test_etag_and_range(client: httpx.Client, tasks: dict[str, str]) -> None:
    item = finished(client, tasks["video"])
    resp = client.get(f"/pika/feed/{tasks['video']}")
    etag = resp.headers["etag"]
    cached = client.get(f"/pika/feed/{tasks['video']}", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    part = client.get(item["resultUrl"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert len(part.content) == 100
    assert part.headers["content-range"].startswith("bytes 0-99/")
    full = client.get(item["resultUrl"])
    assert full.content[:100] == part.content


def test_result_file_etag_gives_304(client: httpx.Client, tasks: dict[str, str]) -> None:
    item = finished(client, tasks["video"])
    full = client.get(item["resultUrl"])
    again = client.get(item["resultUrl"], headers={"If-None-Match": full.headers["etag"]})
    assert again.status_code == 304


def test_auth_and_ownership(
    server: Server, client: httpx.Client, other_key: str, tasks: dict[str, str]
) -> None:
    task_id = tasks["video"]
    with server.client(None) as anon:
        check_error(anon.get(f"/pika/feed/{task_id}"), 401, "unauthorized", "authentication_error")
        check_error(
            anon.post("/pika/generate", content=DOC_REQUEST), 401, "unauthorized", "authentication_error"
        )
        check_error(anon.post(f"/pika/feed/{task_id}/cancel"), 401, "unauthorized", "authentication_error")
    with server.client("mr-not-a-key") as bad:
        check_error(bad.get(f"/pika/feed/{task_id}"), 401, "unauthorized", "authentication_error")
    with server.client(client.headers["authorization"].split()[1], bearer=False) as bare:
        check_error(bare.get(f"/pika/feed/{task_id}"), 401, "unauthorized", "authentication_error")
    missing = "00000000-0000-4000-8000-000000000000"
    with server.client(other_key) as other:
        for path in (f"/pika/feed/{task_id}", f"/pika/feed/{task_id}/cancel"):
            theirs = other.request("GET" if path.endswith(task_id) else "POST", path)
            nothing = other.request(
                "GET" if path.endswith(task_id) else "POST", path.replace(task_id, missing)
            )
            check_error(theirs, 404, "not_found", "not_found_error")
            assert (theirs.status_code, theirs.content) == (nothing.status_code, nothing.content)
    check_error(client.get("/pika/feed/not-a-uuid"), 404, "not_found", "not_found_error")
    assert get_feed(client, task_id)["videos"][0]["status"] == "finished"  # the other key changed nothing


BAD_BODIES: dict[str, Any] = {
    "not json": "{promptText: moving",
    "json array": "[1, 2]",
    "missing promptText": body(promptText=None),
    "empty promptText": body(promptText="   "),
    "promptText not a string": body(promptText=42),
    "missing options": body(options=None),
    "missing parameters": body(options={"parameters": None}),
    "missing extend": body(options={"extend": None}),
    "extend not a bool": body(options={"extend": "false"}),
    "guidanceScale not an int": body(
        options={"parameters": {"guidanceScale": "12", "motion": 1, "negativePrompt": ""}}
    ),
    "motion a float": body(
        options={"parameters": {"guidanceScale": 12, "motion": 1.5, "negativePrompt": ""}}
    ),
    "negativePrompt missing": body(options={"parameters": {"guidanceScale": 12, "motion": 1}}),
    "bad model": body(model="3.0"),
    "model a number": body(model=1.5),
    "unknown pikaffect": body(pikaffect="Teleport"),
    "aspectRatio zero": body(options={"aspectRatio": 0}),
    "aspectRatio negative": body(options={"aspectRatio": -1.5}),
    "aspectRatio a string": body(options={"aspectRatio": "16:9"}),
    "frameRate too high": body(options={"frameRate": 240}),
    "frameRate zero": body(options={"frameRate": 0}),
    "camera bad pan": body(options={"camera": {"pan": "sideways"}}),
    "camera not an object": body(options={"camera": "zoom in"}),
    "bad image url": body(image="ftp://example.com/a.png"),
    "image not base64": body(image="this is not an image"),
    "bad video url": body(video="http://", options={"extend": True}),
    "extend without video": body(options={"extend": True}),
    "image and video": body(image="https://example.com/a.png", video="https://example.com/b.mp4"),
    "effect without aspectRatio": body(pikaffect="Melt", options={"aspectRatio": None}),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_input_is_refused_and_creates_nothing(client: httpx.Client, server: Server, name: str) -> None:
    payload = BAD_BODIES[name]
    before = server.task_count()
    content = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    resp = client.post("/pika/generate", content=content, headers={"content-type": "application/json"})
    data = check_error(resp, 400, "invalid_request", "invalid_request_error")
    assert len(data["error"]["message"]) < 1000
    assert server.task_count() == before


def test_documented_variants_are_accepted(client: httpx.Client, server: Server) -> None:
    """Loose-but-valid spellings: no model, null model, base64 image, camera moves, form content type."""
    png_b64 = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    variants = [
        body(model=None),
        body(model=None) | {"model": None},
        body(image=png_b64),
        body(image="data:image/png;base64," + png_b64),
        body(options={"camera": {"pan": "right", "tilt": "down", "rotate": "ccw", "zoom": "out"}}),
        body(options={"frameRate": None, "aspectRatio": 1}),
        body(extra_field="ignored", pikaffect="ta-da"),
    ]
    for payload in variants:
        task_id = submit(client, payload, headers=HOLD)
        check_feed(client.post(f"/pika/feed/{task_id}/cancel").json(), task_id)
    models = {row(server, submit(client, body(model=None), headers=HOLD))["model"]}
    assert models == {"pika-1.5"}
    # `curl -d '{...}'` sends a form content type: still JSON.
    resp = client.post(
        "/pika/generate", content=DOC_REQUEST, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 200 and UUID4.match(resp.json()["id"])
    client.post(f"/pika/feed/{resp.json()['id']}/cancel")


def test_oversized_body_is_413(client: httpx.Client, server: Server) -> None:
    before = server.task_count()
    huge = copy.deepcopy(body())
    huge["promptText"] = "x" * (10 * 1024 * 1024 + 10)
    try:
        resp = client.post(
            "/pika/generate", content=orjson.dumps(huge), headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as exc:  # the server may answer before reading it all and close
        pytest.fail(f"no 413 answer: {exc!r}")
    check_error(resp, 413, "too_large", "invalid_request_error")
    assert server.task_count() == before
