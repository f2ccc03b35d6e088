"""Dialect D (face swap / enhance / filter / upscale), driven over real HTTP against a real server.

The seed page's own example must parse with our response models, and every live answer must validate
strictly against them, carry every documented field with the documented JSON types, and hold real media.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import Server, wait_until
from mediarelay.dialects.faceswap import (
    FILTERS,
    IMAGE_FIELDS,
    INFO_FIELDS,
    TASK_FIELDS,
    CreateTaskResponse,
    TaskInfoResponse,
)
from mediarelay.media import probe

# The seed page's example, verbatim (seeds/002_8ac3bb2f1a54c3bd.txt).
SEED_EXAMPLE = """
{
    "code": 200,
    "msg": "SUCCESS",
    "data": {
        "taskId": 1043,
        "promptId": "ef8ec19d6670c018814358a21a910090",
        "taskType": 7,
        "thumbFileUrl": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
        "state": 30,
        "reason": "",
        "imageList": [
            {
                "id": 957,
                "taskId": 1043,
                "path": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                "origin": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594620471325196_04aerrvp.mp4"
            },
            {
                "id": 956,
                "taskId": 1044,
                "path": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                "origin": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594619399790547_xL19T3ky.mp4"
            }
        ],
        "taskList": [
            {
                "taskId": 1043,
                "promptId": "0fdd439fe1a94c8aa3ddaca3cdf50fe5",
                "taskType": 7,
                "thumbFileUrl": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                "state": 30,
                "reason": "",
                "imageList": [
                    {
                        "id": 957,
                        "taskId": 1043,
                        "path": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                        "origin": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594620471325196_04aerrvp.mp4"
                    }
                ]
            },
            {
                "taskId": 1044,
                "promptId": "5a6ec746cfaf424da38350a323d0fb52",
                "taskType": 7,
                "thumbFileUrl": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                "state": 30,
                "reason": "",
                "imageList": [
                    {
                        "id": 956,
                        "taskId": 1044,
                        "path": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594446809030000_TFVMoqDf.png",
                        "origin": "https://muyuhan.s3.amazonaws.com/faceWap/test/original/1769594619399790547_xL19T3ky.mp4"
                    }
                ]
            }
        ]
    }
}
"""

HEX32 = re.compile(r"^[0-9a-f]{32}$")
STATES = {10, 20, 30, 2}
FACE = "https://example.com/face.png"
IMG = "https://example.com/target-{}.jpg"
VID = "https://example.com/clip-{}.mp4"


# -- helpers --------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return type(value) is int  # bool is not an int here


def check_image(item: dict[str, Any]) -> None:
    assert set(IMAGE_FIELDS) <= set(item)
    assert is_int(item["id"]) and is_int(item["taskId"]) and item["taskId"] >= 0
    assert type(item["path"]) is str and type(item["origin"]) is str


def check_task(data: dict[str, Any], *, top: bool) -> None:
    assert set(TASK_FIELDS) <= set(data)
    assert is_int(data["taskId"]) and data["taskId"] >= 0
    assert type(data["promptId"]) is str and HEX32.match(data["promptId"])
    assert is_int(data["taskType"]) and data["taskType"] in (3, 4, 5, 6, 7)
    assert type(data["thumbFileUrl"]) is str
    assert is_int(data["state"]) and data["state"] in STATES
    assert type(data["reason"]) is str
    assert (data["reason"] != "") == (data["state"] == 2)
    assert type(data["imageList"]) is list
    for item in data["imageList"]:
        check_image(item)
    if data["state"] != 30 and data["taskType"] != 7:
        assert data["imageList"] == [] and data["thumbFileUrl"] == ""
    if top:
        assert set(INFO_FIELDS) <= set(data)
        assert type(data["taskList"]) is list
        for child in data["taskList"]:
            assert "taskList" not in child
            check_task(child, top=False)
    else:
        assert "taskList" not in data


def check_info(resp: httpx.Response) -> dict[str, Any]:
    """A successful getTaskInfo/cancelTask answer: strict model, every field, exact types; returns data."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    TaskInfoResponse.model_validate(body, strict=True)
    assert body["code"] == 200 and body["msg"] == "SUCCESS" and is_int(body["code"])
    check_task(body["data"], top=True)
    data: dict[str, Any] = body["data"]
    return data


def check_error(resp: httpx.Response, http: int, code: int) -> dict[str, Any]:
    assert resp.status_code == http, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"code", "msg", "data"}
    assert is_int(body["code"]) and body["code"] == code
    assert type(body["msg"]) is str and body["msg"]
    assert body["data"] is None
    return body


def seq_of(server: Server, prompt_id: str) -> tuple[int, str | None, str]:
    [(seq, parent, tid)] = server.rows("select seq, parent_id, id from tasks where public_id = ?", (prompt_id,))
    return int(seq), parent, str(tid)


@dataclass
class Submitted:
    prompt_id: str
    task_id: int
    body: dict[str, Any]


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> Submitted:
    resp = client.post("/createTask", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    CreateTaskResponse.model_validate(answer, strict=True)
    assert answer["code"] == 200 and answer["msg"] == "SUCCESS"
    assert set(answer["data"]) == {"promptId", "taskId"}
    assert HEX32.match(answer["data"]["promptId"]) and is_int(answer["data"]["taskId"])
    return Submitted(answer["data"]["promptId"], answer["data"]["taskId"], body)


def info(client: httpx.Client, prompt_id: str) -> dict[str, Any]:
    return check_info(client.get("/getTaskInfo", params={"promptId": prompt_id}))


def wait_state(client: httpx.Client, prompt_id: str, states: set[int], timeout: float = 45) -> dict[str, Any]:
    result: dict[str, Any] = wait_until(
        lambda: info(client, prompt_id), lambda d: d["state"] in states, timeout
    )
    return result


def download(client: httpx.Client, url: str, tmp: Path, mime: str) -> Path:
    assert url.startswith(str(client.base_url) + "/files/"), url
    resp = client.get(url)
    assert resp.status_code == 200 and resp.headers["content-type"] == mime and resp.content
    dest = tmp / url.rsplit("/", 2)[-2] / url.rsplit("/", 1)[-1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(resp.content)
    return dest


# -- one batch of submissions, running in parallel while the tests look at them --------------------


@dataclass
class Batch:
    swap: Submitted  # taskType 3, two targets
    enhance: Submitted
    filter: Submitted
    upscale: Submitted  # scale 2
    upscale_default: Submitted  # no scale: 2
    videos: Submitted  # taskType 7, three targets
    one_video: Submitted  # taskType 7, one target
    failing: Submitted  # taskType 7, the second target fails


@pytest.fixture(scope="module")
def bare(server: Server, user_key: str) -> Iterator[httpx.Client]:
    with server.client(user_key, bearer=False) as c:
        yield c


@pytest.fixture(scope="module")
def bearer(server: Server, user_key: str) -> Iterator[httpx.Client]:
    with server.client(user_key) as c:
        yield c


@pytest.fixture(scope="module")
def batch(bare: httpx.Client, bearer: httpx.Client) -> Batch:
    bodies: list[tuple[httpx.Client, dict[str, Any]]] = [
        (bare, {"taskType": 3, "faceUrl": FACE, "targetUrls": [IMG.format(1), IMG.format(2)]}),
        (bearer, {"taskType": 4, "targetUrls": [IMG.format(3)]}),
        (bare, {"taskType": 5, "targetUrls": [IMG.format(4)], "filter": "Cartoon"}),
        (bearer, {"taskType": 6, "targetUrls": [IMG.format(5)], "scale": 2}),
        (bare, {"taskType": 6, "targetUrls": [IMG.format(6)]}),
        (
            bearer,
            {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(1), VID.format(2), VID.format(3)]},
        ),
        (bare, {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(4)]}),
        (
            bearer,
            {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(5), VID.format(6) + "?sandbox-fail"]},
        ),
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        done = list(pool.map(lambda cb: submit(*cb), bodies))
    return Batch(*done)


# -- the seed -------------------------------------------------------------------------------------


def test_seed_example_parses_with_the_response_models() -> None:
    raw = orjson.loads(SEED_EXAMPLE)
    parsed = TaskInfoResponse.model_validate(raw, strict=True)
    assert parsed.code == 200 and parsed.msg == "SUCCESS" and parsed.data is not None
    assert parsed.data.taskId == 1043 and parsed.data.taskType == 7 and parsed.data.state == 30
    assert [i.id for i in parsed.data.imageList] == [957, 956]
    assert [t.promptId for t in parsed.data.taskList] == [
        "0fdd439fe1a94c8aa3ddaca3cdf50fe5",
        "5a6ec746cfaf424da38350a323d0fb52",
    ]
    assert parsed.data.taskList[1].imageList[0].taskId == 1044
    # Our own checker accepts the seed as well: the same fields and types we emit.
    check_task(raw["data"], top=True)
    # The same parsers read errors and the submit answer (the relay direction).
    assert TaskInfoResponse.model_validate({"code": 900, "msg": "no data", "data": None}).data is None
    created = CreateTaskResponse.model_validate(
        {
            "code": 200,
            "msg": "SUCCESS",
            "data": {"promptId": "ef8ec19d6670c018814358a21a910090", "taskId": 1043},
        },
        strict=True,
    )
    assert created.data is not None and created.data.taskId == 1043


# -- image task types -----------------------------------------------------------------------------


def test_image_types_produce_real_images(
    server: Server, bare: httpx.Client, bearer: httpx.Client, batch: Batch, tmp_path: Path
) -> None:
    expected = {  # submission -> (taskType, number of results, side)
        "swap": (3, 2, 512),
        "enhance": (4, 1, 512),
        "filter": (5, 1, 512),
        "upscale": (6, 1, 1024),
        "upscale_default": (6, 1, 1024),
    }
    for name, (task_type, count, side) in expected.items():
        sub: Submitted = getattr(batch, name)
        seq, parent, _ = seq_of(server, sub.prompt_id)
        assert sub.task_id == seq and parent is None
        # Submitted with one auth form, read back with the other: both are the same key.
        data = wait_state(
            bearer if name in ("swap", "filter", "upscale_default") else bare, sub.prompt_id, {30, 2}
        )
        assert data["state"] == 30, data
        assert data["taskId"] == seq and data["promptId"] == sub.prompt_id and data["taskType"] == task_type
        assert data["reason"] == "" and data["taskList"] == []
        assert len(data["imageList"]) == count
        assert data["thumbFileUrl"] == data["imageList"][0]["path"]
        for item in data["imageList"]:
            assert item["taskId"] == seq and item["id"] > 0
            image = probe(download(bare, item["origin"], tmp_path, "image/png"))
            assert image.mime == "image/png" and (image.width, image.height) == (side, side), (name, image)
            thumb = probe(download(bare, item["path"], tmp_path, "image/jpeg"))
            assert thumb.width and thumb.height and max(thumb.width, thumb.height) <= side
        assert len({i["id"] for i in data["imageList"]}) == count
        assert len({i["origin"] for i in data["imageList"]}) == count


def test_file_range_and_status_etag(bare: httpx.Client, batch: Batch) -> None:
    data = wait_state(bare, batch.enhance.prompt_id, {30})
    origin = data["imageList"][0]["origin"]
    full = bare.get(origin)
    part = bare.get(origin, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == full.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(full.content)}"

    first = bare.get("/getTaskInfo", params={"promptId": batch.enhance.prompt_id})
    etag = first.headers["etag"]
    again = bare.get(
        "/getTaskInfo", params={"promptId": batch.enhance.prompt_id}, headers={"If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag


# -- face swap on video: fan-out -----------------------------------------------------------------


def test_video_fanout_end_to_end(server: Server, bearer: httpx.Client, batch: Batch, tmp_path: Path) -> None:
    sub = batch.videos
    parent_seq, parent_parent, parent_id = seq_of(server, sub.prompt_id)
    assert sub.task_id == parent_seq and parent_parent is None

    data = wait_state(bearer, sub.prompt_id, {30, 2}, timeout=60)
    assert data["state"] == 30 and data["reason"] == "", data
    assert data["taskId"] == parent_seq and data["taskType"] == 7
    kids = data["taskList"]
    assert len(kids) == 3
    assert len({k["promptId"] for k in kids} | {sub.prompt_id}) == 4
    union = []
    for kid in kids:
        seq, parent, _ = seq_of(server, kid["promptId"])
        assert parent == parent_id and kid["taskId"] == seq
        assert kid["state"] == 30 and kid["reason"] == "" and kid["taskType"] == 7
        assert len(kid["imageList"]) == 1 and kid["imageList"][0]["taskId"] == seq
        assert kid["thumbFileUrl"] == kid["imageList"][0]["path"]
        union += kid["imageList"]
        # A child asked for directly answers as itself, without children.
        own = info(bearer, kid["promptId"])
        assert own["taskList"] == [] and {k: own[k] for k in kid} == kid
    assert data["imageList"] == union
    assert data["thumbFileUrl"] == union[0]["path"]

    for item in union:
        video = probe(download(bearer, item["origin"], tmp_path, "video/mp4"))
        assert (video.width, video.height) == (640, 360), video
        assert video.duration is not None and abs(video.duration - 3) < 0.3, video
        assert video.mime == "video/mp4" and video.video_codec == "h264", video
        assert video.frame_rate is not None and abs(video.frame_rate - 25) < 0.5, video
        thumb = probe(download(bearer, item["path"], tmp_path, "image/webp"))
        assert thumb.width and thumb.height and max(thumb.width, thumb.height) <= 640


def test_single_video_fans_out_too(server: Server, bare: httpx.Client, batch: Batch) -> None:
    data = wait_state(bare, batch.one_video.prompt_id, {30, 2}, timeout=60)
    assert data["state"] == 30, data
    assert len(data["taskList"]) == 1 and len(data["imageList"]) == 1
    assert data["imageList"] == data["taskList"][0]["imageList"]
    assert data["imageList"][0]["taskId"] == data["taskList"][0]["taskId"] != data["taskId"]


def test_a_failing_child_fails_the_parent(bearer: httpx.Client, batch: Batch) -> None:
    data = wait_state(bearer, batch.failing.prompt_id, {30, 2}, timeout=60)
    assert data["state"] == 2 and "sandbox" in data["reason"], data
    kids = data["taskList"]
    assert len(kids) == 2
    bad = next(k for k in kids if k["state"] == 2)
    assert bad["reason"] == data["reason"] and bad["imageList"] == [] and bad["thumbFileUrl"] == ""
    bad_own = info(bearer, bad["promptId"])
    assert bad_own["state"] == 2 and bad_own["reason"] == data["reason"]
    # The sibling without the fail word runs to completion on its own.
    good = next(k for k in kids if k is not bad)
    good_own = wait_state(bearer, good["promptId"], {30, 2}, timeout=60)
    assert good_own["state"] == 30 and len(good_own["imageList"]) == 1


def test_failed_parent_view_follows_late_children(bearer: httpx.Client, batch: Batch) -> None:
    data = wait_state(bearer, batch.failing.prompt_id, {30, 2}, timeout=60)
    for kid in data["taskList"]:
        wait_state(bearer, kid["promptId"], {30, 2}, timeout=60)
    later = info(bearer, batch.failing.prompt_id)
    assert sorted(k["state"] for k in later["taskList"]) == [2, 30]
    assert len(later["imageList"]) == 1


# -- lifecycle states, failure, cancel ------------------------------------------------------------


def test_queued_then_running_then_done(bare: httpx.Client) -> None:
    sub = submit(
        bare,
        {"taskType": 4, "targetUrls": [IMG.format(7)]},
        **{"X-Sandbox-Queue": "1.5", "X-Sandbox-Duration": "1.5"},
    )
    first = info(bare, sub.prompt_id)
    assert first["state"] == 10 and first["reason"] == "" and first["imageList"] == []
    assert first["thumbFileUrl"] == "" and first["taskList"] == []
    running = wait_state(bare, sub.prompt_id, {20, 30}, timeout=10)
    assert running["state"] == 20 and running["imageList"] == [] and running["thumbFileUrl"] == ""
    done = wait_state(bare, sub.prompt_id, {30, 2}, timeout=20)
    assert done["state"] == 30 and len(done["imageList"]) == 1


def test_fanout_parent_is_queued_then_running(bare: httpx.Client) -> None:
    sub = submit(
        bare,
        {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(7), VID.format(8)]},
        **{"X-Sandbox-Queue": "1.5", "X-Sandbox-Duration": "30"},
    )
    first = info(bare, sub.prompt_id)
    assert first["state"] == 10 and [k["state"] for k in first["taskList"]] == [10, 10]
    running = wait_state(bare, sub.prompt_id, {20}, timeout=10)
    assert running["imageList"] == [] and running["thumbFileUrl"] == ""
    canceled = check_info(bare.post("/cancelTask", params={"promptId": sub.prompt_id}))
    assert canceled["state"] == 2 and canceled["reason"] == "canceled"


def test_forced_failure(bare: httpx.Client) -> None:
    sub = submit(
        bare,
        {"taskType": 3, "faceUrl": FACE, "targetUrls": [IMG.format(8)]},
        **{"X-Sandbox-Fail": "no face found"},
    )
    data = wait_state(bare, sub.prompt_id, {30, 2}, timeout=20)
    assert data["state"] == 2 and data["reason"] == "no face found"
    assert data["imageList"] == [] and data["thumbFileUrl"] == ""


def test_cancel(
    server: Server, bare: httpx.Client, bearer: httpx.Client, other_key: str, batch: Batch
) -> None:
    hold = {"X-Sandbox-Queue": "30"}
    image = submit(bare, {"taskType": 5, "targetUrls": [IMG.format(9)], "filter": "noir"}, **hold)
    videos = submit(
        bearer, {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(9), VID.format(10)]}, **hold
    )

    data = check_info(bare.post("/cancelTask", params={"promptId": image.prompt_id}))
    assert data["state"] == 2 and data["reason"] == "canceled" and data["imageList"] == []
    assert info(bearer, image.prompt_id) == data

    data = check_info(bearer.post("/cancelTask", params={"promptId": videos.prompt_id}))
    assert data["state"] == 2 and data["reason"] == "canceled"
    assert [(k["state"], k["reason"]) for k in data["taskList"]] == [(2, "canceled")] * 2
    for kid in data["taskList"]:
        assert info(bare, kid["promptId"])["state"] == 2
    assert info(bare, videos.prompt_id) == data

    # Cancelling a finished task changes nothing.
    done = wait_state(bare, batch.enhance.prompt_id, {30})
    assert check_info(bare.post("/cancelTask", params={"promptId": batch.enhance.prompt_id})) == done

    # Unknown, foreign, missing.
    unknown = bare.post("/cancelTask", params={"promptId": "0" * 32})
    check_error(unknown, 200, 900)
    with server.client(other_key, bearer=False) as other:
        foreign = other.post("/cancelTask", params={"promptId": videos.prompt_id})
    assert (foreign.status_code, foreign.content) == (unknown.status_code, unknown.content)
    check_error(bare.post("/cancelTask"), 200, 800)
    check_error(httpx.post(f"{server.base_url}/cancelTask", params={"promptId": image.prompt_id}), 401, 401)


# -- auth and not found --------------------------------------------------------------------------


def test_auth_and_not_found(server: Server, user_key: str, other_key: str, batch: Batch) -> None:
    base = server.base_url
    prompt_id = batch.swap.prompt_id
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "mr-not-a-key"},
        {"Authorization": "Bearer nope"},
    ):
        check_error(
            httpx.get(f"{base}/getTaskInfo", params={"promptId": prompt_id}, headers=headers), 401, 401
        )
        check_error(httpx.post(f"{base}/createTask", json=batch.swap.body, headers=headers), 401, 401)
    # Both forms of a good key read the task.
    for auth in (user_key, f"Bearer {user_key}"):
        resp = httpx.get(
            f"{base}/getTaskInfo", params={"promptId": prompt_id}, headers={"Authorization": auth}
        )
        assert check_info(resp)["promptId"] == prompt_id

    with server.client(user_key, bearer=False) as mine, server.client(other_key, bearer=False) as other:
        unknown = mine.get("/getTaskInfo", params={"promptId": "ef8ec19d6670c018814358a21a910090"})
        check_error(unknown, 200, 900)
        foreign = other.get("/getTaskInfo", params={"promptId": prompt_id})
        assert (foreign.status_code, foreign.content) == (unknown.status_code, unknown.content)
        child = info(mine, batch.videos.prompt_id)["taskList"][0]["promptId"]
        foreign_child = other.get("/getTaskInfo", params={"promptId": child})
        assert (foreign_child.status_code, foreign_child.content) == (unknown.status_code, unknown.content)
        check_error(mine.get("/getTaskInfo"), 200, 800)
        check_error(mine.get("/getTaskInfo", params={"promptId": ""}), 200, 800)


# -- bad input ------------------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, Any]] = [
    ("empty object", {}),
    ("missing targetUrls", {"taskType": 4}),
    ("missing taskType", {"targetUrls": [IMG.format(1)]}),
    ("face swap without faceUrl", {"taskType": 3, "targetUrls": [IMG.format(1)]}),
    ("video face swap without faceUrl", {"taskType": 7, "targetUrls": [VID.format(1)]}),
    ("filter without a filter", {"taskType": 5, "targetUrls": [IMG.format(1)]}),
    ("unknown filter", {"taskType": 5, "targetUrls": [IMG.format(1)], "filter": "sepia"}),
    ("scale 3", {"taskType": 6, "targetUrls": [IMG.format(1)], "scale": 3}),
    ("unknown taskType", {"taskType": 8, "targetUrls": [IMG.format(1)]}),
    ("taskType as a string", {"taskType": "4", "targetUrls": [IMG.format(1)]}),
    ("taskType as a bool", {"taskType": True, "targetUrls": [IMG.format(1)]}),
    ("no targets", {"taskType": 4, "targetUrls": []}),
    ("targets not a list", {"taskType": 4, "targetUrls": IMG.format(1)}),
    ("too many targets", {"taskType": 4, "targetUrls": [IMG.format(i) for i in range(11)]}),
    ("ftp target", {"taskType": 4, "targetUrls": ["ftp://example.com/a.png"]}),
    ("target not a URL", {"taskType": 4, "targetUrls": ["not a url"]}),
    ("faceUrl not a URL", {"taskType": 3, "faceUrl": "javascript:alert(1)", "targetUrls": [IMG.format(1)]}),
    ("faceUrl a number", {"taskType": 3, "faceUrl": 5, "targetUrls": [IMG.format(1)]}),
    ("filter a number", {"taskType": 5, "targetUrls": [IMG.format(1)], "filter": 1}),
    ("a JSON array", [{"taskType": 4, "targetUrls": [IMG.format(1)]}]),
]


def test_bad_input_creates_nothing(server: Server, bare: httpx.Client) -> None:
    before = server.task_count()
    for label, body in BAD_BODIES:
        err = check_error(bare.post("/createTask", json=body), 200, 800)
        assert err["msg"], label
    for raw, ctype in (
        (b"taskType=4&targetUrls=x", "application/x-www-form-urlencoded"),
        (b'{"taskType": 4, "targetUrls": [', "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe", "application/json"),
    ):
        check_error(bare.post("/createTask", content=raw, headers={"Content-Type": ctype}), 200, 800)
    big = b'{"taskType": 4, "targetUrls": ["' + b"a" * (10 * 1024 * 1024 + 10) + b'"]}'
    check_error(bare.post("/createTask", content=big, headers={"Content-Type": "application/json"}), 413, 800)
    # Messages say what is wrong.
    msg = bare.post(
        "/createTask", json={"taskType": 5, "targetUrls": [IMG.format(1)], "filter": "sepia"}
    ).json()["msg"]
    assert "filter" in msg and all(name in msg for name in FILTERS)
    msg = bare.post("/createTask", json={"taskType": 3, "targetUrls": [IMG.format(1)]}).json()["msg"]
    assert "faceUrl" in msg
    time.sleep(0.2)
    assert server.task_count() == before


def test_cancelling_a_failed_batch_stops_its_running_children(bare: httpx.Client) -> None:
    sub = submit(
        bare,
        {"taskType": 7, "faceUrl": FACE, "targetUrls": [VID.format(31) + "?sandbox-fail", VID.format(32)]},
        # The failing child fails 30-70 % into its 6 s run; its sibling is still running then.
        **{"X-Sandbox-Queue": "0", "X-Sandbox-Duration": "6"},
    )
    wait_state(bare, sub.prompt_id, {2}, timeout=30)
    data = info(bare, sub.prompt_id)
    survivor = next(k for k in data["taskList"] if k["state"] != 2)
    assert survivor["state"] in (10, 20)  # still running: the failure came first
    check_info(bare.post("/cancelTask", params={"promptId": sub.prompt_id}))
    child = info(bare, survivor["promptId"])
    assert child["state"] == 2 and child["reason"] == "canceled"
    parent = info(bare, sub.prompt_id)
    assert parent["reason"] != "canceled"  # the batch failed; its failure reason stands
    assert sorted(k["state"] for k in parent["taskList"]) == [2, 2]
