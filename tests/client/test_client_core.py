"""The client's sans-I/O pieces, without a server: reading each dialect's documented answers and error
envelopes, the event-stream parser, backoff, Retry-After, the quick submit bodies (checked against the
server's own request models), and the retry logic of a wait driven by hand."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest

from mediarelay.client import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TaskResult,
)
from mediarelay.client.core import Backoff, Config, Emit, Send, Sleep, State, retry_after
from mediarelay.client.dialects import SPECS, Quick, spec_for
from mediarelay.client.errors import APIError, api_error, wrapped_error
from mediarelay.client.waiting import SSEParser, wait
from mediarelay.dialects import avatar, faceswap, native, openai_videos, pika, unified_video

BASE = "http://gw.example"

# The providers' documented examples (specs/dialects.md and the seed pages), trimmed.
PIKA_DOC = {
    "id": "66e0818e-05fb-454e-b246-a6f253e9ffbf",
    "promptText": "Plane fly",
    "videos": [
        {
            "id": "66e0818e-05fb-454e-b246-a6f253e9ffbf",
            "status": "finished",
            "seed": 3183047765,
            "resultUrl": "https://cdn.pika.art/v1/66e0/Plane_fly_seed3183047765.mp4",
            "sharingUrl": "https://cdn.pika.art/v1/66e0/Plane_fly_seed3183047765_share.mp4",
            "videoPoster": "https://cdn.pika.art/v1/66e0/poster.jpg",
            "imageThumb": "https://cdn.pika.art/v1/66e0/thumbnail.jpg",
            "duration": 5,
            "error": "",
            "progress": 100,
        }
    ],
}
AVATAR_DOC = {
    "id": "67930a6f8d5ac20007a77b1c",
    "animate_id": "264c5fb9449e4c31a7ea0f392696431b",
    "create_time": 1737689710890,
    "web_work_status": 200,
    "work_webp_path": "https://cdn.gptbest.vip/file/cdn/20250124/zQBRDI6pT3Bcxs5F9iShAWf05jio0F.jpg",
    "work_video_path": "https://cdn.gptbest.vip/file/cdn/20250124/hfulzDLGgiDg3EQsdYZse3em2f3peS.mp4",
}
UNIFIED_DOC = {
    "id": "sora-2:task_01k6x15vhrff09dkkqjrzwhm60",
    "detail": {
        "id": "task_01k6x15vhrff09dkkqjrzwhm60",
        "input": {"size": "small", "model": "sy_ore", "images": [], "prompt": "make animate"},
        "status": "pending",
        "pending_info": {
            "id": "task_01k6x15vhrff09dkkqjrzwhm60",
            "status": "processing",
            "progress_pct": 0.9302178175176704,
            "failure_reason": None,
        },
    },
    "status": "processing",
    "status_update_time": 1759763427208,
}
FACESWAP_DOC = {
    "code": 200,
    "msg": "SUCCESS",
    "data": {
        "taskId": 1043,
        "promptId": "ef8ec19d6670c018814358a21a910090",
        "taskType": 7,
        "thumbFileUrl": "https://muyuhan.s3.amazonaws.com/faceWap/a.png",
        "state": 30,
        "reason": "",
        "imageList": [
            {
                "id": 957,
                "taskId": 1043,
                "path": "https://s3.example/a.png",
                "origin": "https://s3.example/a.mp4",
            },
            {
                "id": 956,
                "taskId": 1044,
                "path": "https://s3.example/b.png",
                "origin": "https://s3.example/b.mp4",
            },
        ],
        "taskList": [
            {"taskId": 1043, "promptId": "0fdd439fe1a94c8aa3ddaca3cdf50fe5", "taskType": 7, "state": 30},
            {"taskId": 1044, "promptId": "5a6ec746cfaf424da38350a323d0fb52", "taskType": 7, "state": 30},
        ],
    },
}
OPENAI_DOC = {
    "id": "video_123",
    "object": "video",
    "model": "sora-2",
    "status": "in_progress",
    "progress": 33,
    "created_at": 1712697600,
    "completed_at": None,
    "expires_at": None,
    "seconds": "8",
    "size": "1280x720",
    "remixed_from_video_id": None,
    "error": None,
}


def test_the_documented_answers_read_as_results() -> None:
    p = SPECS["pika"].parse(PIKA_DOC, BASE)
    assert (p.status, p.progress, p.url) == ("succeeded", 100, PIKA_DOC["videos"][0]["resultUrl"])
    assert {o.role for o in p.outputs} == {"video", "poster", "thumbnail"}
    assert isinstance(p.model, pika.PikaFeed)

    a = SPECS["avatar"].parse(AVATAR_DOC, BASE)
    assert (a.id, a.status, a.url) == (AVATAR_DOC["animate_id"], "succeeded", AVATAR_DOC["work_video_path"])
    assert a.output("thumbnail") is not None and isinstance(a.model, avatar.AvatarWork)

    u = SPECS["unified_video"].parse(UNIFIED_DOC, BASE)
    assert (u.status, u.progress, u.outputs) == ("running", 93, ())
    assert isinstance(u.model, unified_video.QueryResponse)

    f = SPECS["faceswap"].parse(FACESWAP_DOC, BASE)
    assert f.status == "succeeded" and f.id == FACESWAP_DOC["data"]["promptId"]
    assert [(o.role, o.index) for o in f.outputs] == [
        ("video", 0),
        ("thumbnail", 0),
        ("video", 1),
        ("thumbnail", 1),
    ]
    assert f.children == ("0fdd439fe1a94c8aa3ddaca3cdf50fe5", "5a6ec746cfaf424da38350a323d0fb52")
    assert isinstance(f.model, faceswap.TaskInfoResponse)

    o = SPECS["openai_videos"].parse(OPENAI_DOC, BASE)
    assert (o.status, o.progress, o.outputs) == ("running", 33, ())
    done = SPECS["openai_videos"].parse({**OPENAI_DOC, "status": "completed", "progress": 100}, BASE)
    assert done.url == f"{BASE}/v1/videos/video_123/content?variant=video"
    assert all(out.authenticated for out in done.outputs)
    assert isinstance(o.model, openai_videos.Video)


@pytest.mark.parametrize(
    ("dialect", "answer", "status"),
    [
        ("avatar", {**AVATAR_DOC, "web_work_status": 7}, "running"),  # unknown: still running
        ("avatar", {**AVATAR_DOC, "web_work_status": 0}, "queued"),
        ("avatar", {**AVATAR_DOC, "web_work_status": -1, "message": "no face"}, "failed"),
        ("avatar", {**AVATAR_DOC, "web_work_status": -1, "message": "canceled by the client"}, "canceled"),
        ("pika", {"id": "x", "videos": [{"id": "x", "status": "weird"}]}, "running"),
        ("pika", {"id": "x", "videos": [{"id": "x", "status": "error", "error": "canceled"}]}, "canceled"),
        ("pika", {"id": "x", "videos": []}, "queued"),
        ("unified_video", {**UNIFIED_DOC, "status": "NOT_START"}, "running"),
        ("unified_video", {**UNIFIED_DOC, "status": "pending"}, "queued"),
        (
            "faceswap",
            {"code": 200, "msg": "SUCCESS", "data": {**FACESWAP_DOC["data"], "state": 11}},
            "running",
        ),
        (
            "faceswap",
            {"code": 200, "msg": "", "data": {**FACESWAP_DOC["data"], "state": 2, "reason": "canceled"}},
            "canceled",
        ),
        (
            "openai_videos",
            {**OPENAI_DOC, "status": "failed", "error": {"code": "canceled", "message": "x"}},
            "canceled",
        ),
        (
            "openai_videos",
            {**OPENAI_DOC, "status": "failed", "error": {"code": "moderation", "message": "x"}},
            "failed",
        ),
    ],
)
def test_status_values_normalise(dialect: str, answer: dict[str, Any], status: str) -> None:
    """Unknown values mean "still running" (never failed), as the clients in the wild read them."""
    result = SPECS[dialect].parse(answer, BASE)
    assert result.status == status
    assert (result.error is not None) == (status in ("failed", "canceled"))


def test_the_native_view_reads_with_checksums() -> None:
    view = {
        "id": "01M7Z12J230JJ72DEN8TGX4VH8",
        "object": "task",
        "dialect": "pika",
        "status": "finalizing",
        "progress": 99,
        "outputs": [
            {"role": "video", "index": 0, "url": f"{BASE}/files/x/video-0.mp4", "sha256": "ab", "bytes": 3}
        ],
        "error": None,
        "children": [],
        "version": 9,
    }
    result = SPECS["native"].parse(view, BASE)
    assert (result.status, result.progress) == ("running", 99)  # finalizing is published as running
    out = result.output()
    assert out is not None and (out.sha256, out.bytes) == ("ab", 3)


ERRORS = [
    (400, {"error": {"message": "prompt: required", "type": "invalid_request_error", "param": "prompt", "code": "invalid_request"}}, BadRequestError, "prompt: required"),
    (404, {"code": "not_found", "message": "no such task", "data": None}, NotFoundError, "no such task"),
    (401, {"code": 401, "msg": "unauthorized", "data": None}, AuthenticationError, "unauthorized"),
    (429, {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}}, RateLimitError, "slow down"),
    (503, None, ServerError, "upstream down"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "cls", "message"), ERRORS)
def test_error_envelopes(status: int, body: Any, cls: type[APIError], message: str) -> None:
    error = api_error(status, body, text="upstream down", retry_after=2.0)
    assert type(error) is cls and error.message == message and error.status == status
    if cls is RateLimitError:
        assert isinstance(error, RateLimitError) and error.retry_after == 2.0


def test_face_swap_errors_with_http_200() -> None:
    """Face swap answers parameter errors and not-found with HTTP 200 and the documented code."""
    assert wrapped_error({"code": 200, "msg": "SUCCESS", "data": {}}) is None
    assert wrapped_error({"code": "success", "message": "", "data": "abc"}) is None
    assert wrapped_error({"code": 800, "msg": "filter is required", "data": None}) == (
        400,
        "filter is required",
        800,
    )
    assert wrapped_error({"code": 900, "msg": "no data", "data": None}) == (404, "no data", 900)
    assert wrapped_error({"code": 510, "msg": "system", "data": None}) == (500, "system", 510)
    assert wrapped_error({"id": "x", "error": None}) is None


def test_retry_after_forms() -> None:
    def response(**headers: str) -> httpx.Response:
        return httpx.Response(200, headers=headers)

    assert retry_after(response(**{"retry-after": "3"})) == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after(response(**{"retry-after": later})) or 0) <= 30
    assert retry_after(response(**{"openai-poll-after-ms": "1500"})) == 1.5
    assert retry_after(response()) is None


def test_backoff_grows_with_jitter_to_a_cap() -> None:
    b = Backoff(1.0, 10.0, 2.0, 0.2)
    values = [b.next() for _ in range(8)]
    assert 0.8 <= values[0] <= 1.2 and 1.6 <= values[1] <= 2.4
    assert all(8.0 <= v <= 12.0 for v in values[4:])
    b.reset()
    assert b.next() <= 1.2


def test_event_stream_parser_any_chunking() -> None:
    stream = b': ping\r\n\r\nid: 3\r\nevent: task\r\ndata: {"a":\r\ndata: 1}\r\n\r\nid: 4\nevent: task\ndata: {}\n\n'
    for size in (1, 2, 7, len(stream)):
        parser = SSEParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert [(e.event, e.data, e.id) for e in events] == [("task", '{"a":\n1}', "3"), ("task", "{}", "4")]
    assert SSEParser().feed("data: é\n\n".encode()[:7]) == []


def test_quick_bodies_are_valid_requests_of_each_dialect() -> None:
    """What `submit(model, prompt=…, image=…)` and the CLI send passes the server's own validation."""
    image, audio = "https://example.com/i.png", "https://example.com/a.mp3"
    checks = [
        (native.NativeTaskRequest, Quick("sora-2", "a cat", (image,)), "image_to_video"),
        (native.NativeTaskRequest, Quick("m", "a cat", (image,), audio), "avatar"),
        (openai_videos.VideoCreate, Quick(None, "a cat", (image,), fields={"seconds": 8}), None),
        (
            pika.PikaRequest,
            Quick("pika-2.0", "a cat", (image,), fields={"motion": 2, "aspectRatio": None}),
            None,
        ),
        (
            unified_video.VideoCreateRequest,
            Quick("veo3-fast", "a cat", (), fields={"aspect_ratio": "9:16"}),
            None,
        ),
        (avatar.AvatarRequest, Quick(None, None, (image,), audio), None),
        (faceswap.CreateTaskRequest, Quick("faceswap", None, (image, image, image)), None),
        (faceswap.CreateTaskRequest, Quick("filter", None, (image,), fields={"filter": "noir"}), None),
    ]
    for model, quick, operation in checks:
        name = {
            native.NativeTaskRequest: "native",
            openai_videos.VideoCreate: "openai",
            pika.PikaRequest: "pika",
            unified_video.VideoCreateRequest: "unified",
            avatar.AvatarRequest: "avatar",
            faceswap.CreateTaskRequest: "faceswap",
        }[model]
        body = spec_for(name).quick_body(quick)
        parsed = model.model_validate(body)
        if operation:
            assert body["operation"] == operation
        assert parsed is not None
    assert spec_for("pika").quick_body(Quick("pika-2.0", "x", fields={"aspectRatio": None}))["model"] == "2.0"
    assert (
        "aspectRatio"
        not in spec_for("pika").quick_body(Quick(None, "x", fields={"aspectRatio": None}))["options"]
    )


def drive(flow: Any, answers: list[httpx.Response]) -> tuple[Any, list[Any]]:
    """Run a flow by hand: each Send gets the next answer; sleeps and progress are recorded."""
    ops: list[Any] = []
    value: Any = None
    try:
        while True:
            op = flow.send(value)
            ops.append(op)
            value = answers.pop(0) if isinstance(op, Send) else None
            if isinstance(op, Emit):
                op.callback(op.value)
    except StopIteration as stop:
        return stop.value, ops


def feed(status: str, progress: int, code: int = 200, **headers: str) -> httpx.Response:
    body = {"id": "x", "promptText": "p", "videos": [{"id": "x", "status": status, "progress": progress}]}
    return httpx.Response(code, json=body, headers={"etag": f'"{status}{progress}"', **headers})


def test_polling_retries_transient_failures_and_honours_retry_after() -> None:
    cfg = Config(base_url=BASE, key="k", strategy="poll", poll_interval=1.0, jitter=0.0)
    seen: list[TaskResult] = []
    flow = wait(cfg, State(), SPECS["pika"], "x", timeout=None, progress=seen.append)
    answers = [
        feed("queued", 0),
        httpx.Response(503, json={"error": {"message": "busy"}}, headers={"retry-after": "7"}),
        httpx.Response(304, headers={"etag": '"queued0"'}),
        feed("pending", 40),
        feed("finished", 100),
    ]
    result, ops = drive(flow, answers)
    assert result.status == "succeeded" and [r.progress for r in seen] == [0, 40, 100]
    sleeps = [op.seconds for op in ops if isinstance(op, Sleep)]
    assert sleeps[1] == 7.0, sleeps  # the server's Retry-After, not the backoff
    assert sleeps[0] == 1.0 and sleeps[2] > sleeps[0], sleeps  # backoff grows while nothing changes
    sends = [op.request for op in ops if isinstance(op, Send)]
    assert sends[2].headers["if-none-match"] == '"queued0"' and "wait" not in sends[2].url.params


def test_polling_gives_up_after_max_retries() -> None:
    cfg = Config(base_url=BASE, key="k", strategy="poll", max_retries=2, jitter=0.0)
    flow = wait(cfg, State(), SPECS["pika"], "x", timeout=None)
    answers = [feed("queued", 0)] + [httpx.Response(502, text="bad gateway") for _ in range(3)]
    with pytest.raises(ServerError, match="bad gateway"):
        drive(flow, answers)


def test_a_long_poll_answered_at_once_is_paced_like_a_poll() -> None:
    """A server that ignores `wait` (a proxy, an aggregator) must not make the client spin."""
    cfg = Config(base_url=BASE, key="k", strategy="long_poll", jitter=0.0)
    flow = wait(cfg, State(), SPECS["pika"], "x", timeout=None)
    answers = [feed("queued", 0), feed("queued", 0), feed("queued", 0), feed("finished", 100)]
    result, ops = drive(flow, answers)
    assert result.ok
    sends = [op.request for op in ops if isinstance(op, Send)]
    assert len(sends) == 4 and all(r.url.params["wait"] == "30" for r in sends[1:])
    assert len([op for op in ops if isinstance(op, Sleep)]) == 2
