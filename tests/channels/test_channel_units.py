"""Relay channels piece by piece: the seed pages' answers through each channel's real parser, the
translation table, how upstream answers are classified, cadence, circuit breaker, rate limit, sniffing.

Upstream answers come from a small real HTTP server on 127.0.0.1 serving canned bodies (the seeds'
examples verbatim), reached through the real outbound fetcher.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mediarelay import media
from mediarelay.channels import translate
from mediarelay.channels.base import (
    Channel,
    ChannelConfig,
    ChannelDeps,
    PollResult,
    SubmitUnknown,
    Unsupported,
)
from mediarelay.channels.health import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Durations, TokenBucket
from mediarelay.channels.registry import TYPES, ChannelSet
from mediarelay.channels.upstream import retry_after, upstream_message
from mediarelay.domain import Operation, Status, Task, TaskError
from mediarelay.engine.cadence import BLIND, FAST, from_observed, next_poll_delay
from mediarelay.netguard import NetGuard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_examples

# Documented examples (specs/dialects.md), verbatim.
AVATAR_SUBMITTED = '{"code": "success", "message": "", "data": "57b9ba07db5e4ed5bf18ebb4179a826d"}'
PIKA_SUBMITTED = '{"id": "c1d16f47-16c2-4798-8733-5ed9903885cc"}'
UNIFIED_CREATED = '{"id":"sora-2:task_01k6x15vhrff09dkkqjrzwhm60","status":"pending","status_update_time":1759763427208}'
OPENAI_VIDEO = (
    '{"id": "video_123", "object": "video", "model": "sora-2", "status": "queued", "progress": 0, '
    '"created_at": 1712697600, "size": "1024x1792", "seconds": "8", "quality": "standard"}'
)


class Canned(BaseHTTPRequestHandler):
    answers: dict[tuple[str, str], tuple[int, str, dict[str, str]]]
    seen: list[tuple[str, str, dict[str, str], bytes]]

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        path = self.path.split("?", 1)[0]
        self.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, text, headers = self.answers.get((self.command, path), (404, '{"error": {"message": "nope"}}', {}))
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[str, dict[tuple[str, str], tuple[int, str, dict[str, str]]], list[Any]]]:
    answers: dict[tuple[str, str], tuple[int, str, dict[str, str]]] = {}
    seen: list[Any] = []
    handler = type("Handler", (Canned,), {"answers": answers, "seen": seen})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", answers, seen
    srv.shutdown()
    srv.server_close()


def make_channel(kind: str, base: str, **config: Any) -> Channel:
    cfg = ChannelConfig(name=f"unit-{kind}", type=kind, base_url=base, credentials=("env:UNIT_KEY",), **config)
    return TYPES[kind](cfg, ChannelDeps(guard=NetGuard(allowed_hosts=["127.0.0.1"])))


def make_task(operation: Operation = Operation.TEXT_TO_VIDEO, **over: Any) -> Task:
    fields: dict[str, Any] = {
        "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "seq": 1, "public_id": "p", "dialect": "native", "key_id": "k",
        "model": "m", "operation": operation, "params": {"prompt": "a cat", "width": 1280, "height": 720,
        "seconds": 5, "fps": 24}, "request": {}, "status": Status.QUEUED, "progress": 0, "version": 2,
        "created_at": 1, "updated_at": 1, "started_at": 1, "upstream": {"credential": "env:UNIT_KEY"},
        "upstream_id": "up-1",
    }
    fields.update(over)
    return Task(**fields)


@pytest.fixture(autouse=True)
def unit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_KEY", "sk-unit-secret")


# -- the seeds and the documented examples, through the channels' own parsers ------------------------


def test_seed_and_documented_answers_parse_verbatim(upstream: Any) -> None:
    base, answers, seen = upstream
    answers[("GET", "/avatar/task/up-1")] = (200, seed_examples.AVATAR_TASK, {})
    answers[("GET", "/pika/feed/up-1")] = (200, seed_examples.PIKA_FEED, {})
    answers[("GET", "/v1/video/query")] = (200, seed_examples.UNIFIED_QUERY, {})
    answers[("POST", "/avatar/generation")] = (200, AVATAR_SUBMITTED, {})
    answers[("POST", "/pika/generate")] = (200, PIKA_SUBMITTED, {})
    answers[("POST", "/v1/video/create")] = (200, UNIFIED_CREATED, {})
    answers[("POST", "/v1/videos")] = (200, OPENAI_VIDEO, {})
    gb, uv, oa = make_channel("gptbest", base), make_channel("unified_video", base), make_channel("openai_videos", base)
    avatar_task = make_task(Operation.AVATAR, params={"images": ["https://x.test/f.png"], "audio_url": "https://x.test/a.mp3"})

    async def run() -> None:
        done = await gb.poll(avatar_task)
        assert done.status is Status.SUCCEEDED
        assert done.outputs[0].url == "https://cdn.gptbest.vip/file/cdn/20250124/hfulzDLGgiDg3EQsdYZse3em2f3peS.mp4"
        feed = await gb.poll(make_task())
        assert feed.status is Status.SUCCEEDED and feed.progress == 100
        assert feed.outputs[0].url.endswith("_____seed393769667.mp4") and feed.outputs[0].role == "video"
        query = await uv.poll(make_task(upstream_id="sora-2:task_01k6x15vhrff09dkkqjrzwhm60"))
        assert query.status is Status.QUEUED and query.progress == 93 and not query.outputs  # "pending"
        assert (await gb.submit(avatar_task)).upstream_id == "57b9ba07db5e4ed5bf18ebb4179a826d"
        assert (await gb.submit(make_task())).upstream_id == "c1d16f47-16c2-4798-8733-5ed9903885cc"
        assert (await uv.submit(make_task())).upstream_id == "sora-2:task_01k6x15vhrff09dkkqjrzwhm60"
        made = await oa.submit(make_task())
        assert (made.upstream_id, made.status) == ("video_123", Status.QUEUED)

    asyncio.run(run())
    # The recorded credential went with every request; the unified id travelled encoded in the query.
    assert all(h.get("authorization") == "Bearer sk-unit-secret" for _, _, h, _ in seen)
    assert any(p == "/v1/video/query?id=sora-2%3Atask_01k6x15vhrff09dkkqjrzwhm60" for _, p, _, _ in seen)
    assert [h.get("idempotency-key") for m, p, h, _ in seen if p == "/v1/videos"] == [f"mediarelay-{make_task().id}"]


@pytest.mark.parametrize(
    ("kind", "path", "answer"),
    [
        ("gptbest", "/pika/feed/up-1", '{"id": "up-1", "videos": [{"id": "up-1", "status": ""}]}'),
        ("gptbest", "/pika/feed/up-1", '{"id": "up-1", "videos": [{"id": "up-1", "status": "rendering"}]}'),
        ("gptbest", "/pika/feed/up-1", '{"id": "up-1", "videos": []}'),
        ("unified_video", "/v1/video/query", '{"id": "up-1", "status": "IN_PROGRESS", "status_update_time": 1}'),
        ("unified_video", "/v1/video/query", '{"id": "up-1", "status": "", "status_update_time": 1, "extra": [1]}'),
        ("mediarelay", "/v1/tasks/up-1", '{"id": "up-1", "status": "warming_up"}'),
        ("mediarelay", "/v1/tasks/up-1", '{"id": "up-1", "status": "succeeded", "outputs": []}'),
    ],
)
def test_an_unknown_or_empty_status_means_keep_waiting(upstream: Any, kind: str, path: str, answer: str) -> None:
    base, answers, _ = upstream
    answers[("GET", path)] = (200, answer, {})
    result = asyncio.run(make_channel(kind, base, options={"batch_polls": False}).poll(make_task()))
    assert result.status is None


def test_an_unknown_avatar_code_and_an_unreadable_answer_keep_waiting(upstream: Any) -> None:
    base, answers, _ = upstream
    answers[("GET", "/avatar/task/up-1")] = (200, '{"web_work_status": 7}', {})
    answers[("GET", "/v1/videos/up-1")] = (200, '{"id": "up-1", "status": "warming"', {})
    task = make_task(Operation.AVATAR)
    assert asyncio.run(make_channel("gptbest", base).poll(task)).status is None
    with pytest.raises(TaskError) as err:  # truncated JSON: retryable, the engine keeps waiting
        asyncio.run(make_channel("openai_videos", base).poll(make_task()))
    assert err.value.retryable and err.value.code == "bad_answer"


@pytest.mark.parametrize(
    ("status", "body", "headers", "unknown", "retryable", "after"),
    [
        (500, '{"error": {"message": "boom"}}', {}, False, True, None),
        (503, "<html>down</html>", {"retry-after": "7"}, False, True, 7.0),
        (429, '{"message": "slow"}', {"retry-after": "3"}, False, True, 3.0),
        (401, '{"error": {"message": "bad key"}}', {}, False, True, None),
        (400, '{"error": {"message": "prompt refused"}}', {}, False, False, None),
        (504, "gateway timeout", {}, True, True, None),
        (200, '{"id": "c1d16f47', {}, True, True, None),
    ],
)
def test_submit_answers_are_classified(
    upstream: Any, status: int, body: str, headers: dict[str, str], unknown: bool, retryable: bool, after: float | None
) -> None:
    base, answers, _ = upstream
    answers[("POST", "/pika/generate")] = (status, body, headers)
    with pytest.raises(TaskError) as err:
        asyncio.run(make_channel("gptbest", base).submit(make_task()))
    assert isinstance(err.value, SubmitUnknown) is unknown
    assert err.value.retryable is retryable and err.value.retry_after == after
    if status == 400:
        assert "prompt refused" in err.value.message


def test_nothing_sent_is_not_ambiguous_and_secrets_stay_home() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(TaskError) as err:
        asyncio.run(make_channel("gptbest", f"http://127.0.0.1:{closed}").submit(make_task()))
    assert not isinstance(err.value, SubmitUnknown) and err.value.retryable
    blocked = TYPES["gptbest"](
        ChannelConfig(name="b", type="gptbest", base_url=f"http://127.0.0.1:{closed}", credentials=("env:UNIT_KEY",)),
        ChannelDeps(guard=NetGuard()),  # loopback not allowed
    )
    with pytest.raises(TaskError, match="not allowed"):
        asyncio.run(blocked.submit(make_task()))
    with pytest.raises(TaskError) as missing:
        asyncio.run(make_channel("gptbest", "http://127.0.0.1:9").poll(make_task(upstream={"credential": "env:NOPE"})))
    assert missing.value.code == "credential_missing" and "sk-unit" not in missing.value.message


def test_the_channel_set_checks_configs() -> None:
    with pytest.raises(ValueError, match="base_url"):
        ChannelSet([ChannelConfig(name="a", type="gptbest")])
    with pytest.raises(ValueError, match="unknown type"):
        ChannelSet([ChannelConfig(name="a", type="nope")])
    with pytest.raises(ValueError, match="twice"):
        ChannelSet([ChannelConfig(name="a", type="sandbox"), ChannelConfig(name="a", type="sandbox")])
    found = ChannelSet(
        deps=ChannelDeps(guard=NetGuard()),
        configs=[
            ChannelConfig(name="low", type="sandbox", priority=1),
            ChannelConfig(name="high", type="sandbox", priority=5),
            ChannelConfig(name="off", type="sandbox", priority=9, enabled=False),
            ChannelConfig(name="veo", type="sandbox", priority=9, models=("veo*",)),
            ChannelConfig(name="vid", type="unified_video", base_url="http://x.test", priority=9),
        ]
    ).candidates("sora-2", Operation.TEXT_TO_IMAGE)
    assert [c.config.name for c in found] == ["high", "low"]  # unified video makes no images


def test_weights_spread_tasks() -> None:
    channels = ChannelSet([ChannelConfig(name="a", type="sandbox", weight=3), ChannelConfig(name="b", type="sandbox")])
    firsts = [channels.candidates("m", Operation.TEXT_TO_VIDEO, seed=str(i))[0].config.name for i in range(2000)]
    assert 0.68 < firsts.count("a") / len(firsts) < 0.82  # 3:1


# -- the translation table ------------------------------------------------------------------------------


def test_translation_table() -> None:
    t2v = make_task(params={"prompt": "a cat", "width": 720, "height": 1280, "seconds": 12, "fps": 30, "images": []})
    assert translate.to_unified(t2v, "sora-2") == {
        "model": "sora-2", "prompt": "a cat", "images": [], "orientation": "portrait", "size": "small",
        "duration": 15, "watermark": False,
    }
    assert translate.to_unified(t2v, "veo3-fast") == {
        "model": "veo3-fast", "prompt": "a cat", "images": [], "aspect_ratio": "9:16", "enable_upsample": False,
        "enhance_prompt": False,
    }
    assert translate.to_unified(t2v, "grok-video-3")["aspect_ratio"] == "2:3"
    assert translate.to_openai(t2v, "sora-2") == {"prompt": "a cat", "model": "sora-2", "seconds": "12", "size": "720x1280"}
    pika = translate.to_pika(t2v, "pika-2.0")
    assert pika["model"] == "2.0" and pika["options"]["aspectRatio"] == 720 / 1280 and pika["options"]["frameRate"] == 30
    assert "model" not in translate.to_pika(t2v, "sora-2")  # not a Pika model: the upstream's default
    image = make_task(Operation.TEXT_TO_IMAGE, params={"prompt": "a cat", "output": "image"})
    assert "aspectRatio" not in translate.to_pika(image, "1.5")["options"]
    native = translate.to_native(t2v, "sora-2")
    assert native == {"model": "sora-2", "operation": "text_to_video", "prompt": "a cat", "width": 720,
                      "height": 1280, "seconds": 12, "fps": 30}
    voice = make_task(Operation.AVATAR, params={"images": ["https://x.test/f.png"], "text": "hi", "language": "en",
                                                "voice_id": "v1", "voice_engine_id": "e1"})
    assert translate.to_avatar(voice)["use_voice"] == {"voice_engine_id": "e1", "audio_id": "v1", "language": "en", "text": "hi"}
    # A task in the upstream's own dialect goes through as the client sent it (minus mediarelay's fields).
    own = make_task(dialect="pika", request={"promptText": "x", "options": {"extend": False}, "callbackUrl": "https://h.test"})
    assert translate.to_pika(own, "pika-1.5") == {"promptText": "x", "options": {"extend": False}, "model": "1.5"}
    with pytest.raises(Unsupported, match="prompt"):
        translate.to_openai(make_task(params={}), "sora-2")
    with pytest.raises(Unsupported, match="audio"):
        translate.to_avatar(make_task(Operation.AVATAR, params={"images": ["https://x.test/f.png"], "text": "hi"}))
    with pytest.raises(Unsupported):
        translate.to_openai(make_task(Operation.FACE_SWAP_IMAGE), "sora-2")
    with pytest.raises(Unsupported, match="at most 1"):
        translate.to_unified(make_task(params={"prompt": "x", "images": ["https://a.test/1", "https://a.test/2"]}), "grok-video-3")


def test_model_map_first_match_wins() -> None:
    cfg = ChannelConfig(name="c", type="sandbox", model_map=(("sora-2-pro*", "sora-2-pro"), ("sora*", "sora-2"), ("*", "x")))
    assert [cfg.upstream_model(m) for m in ("sora-2-pro", "sora-2-all", "veo3")] == ["sora-2-pro", "sora-2", "x"]
    assert ChannelConfig(name="c", type="sandbox").upstream_model("veo3") == "veo3"


# -- health, cadence, sniffing ----------------------------------------------------------------------------


def test_circuit_breaker() -> None:
    b = CircuitBreaker(threshold=3, cooldown=10)
    for _ in range(2):
        b.failure(now=0)
    assert b.state == CLOSED and b.allow(now=0)
    b.failure(now=0)
    assert b.state == OPEN and not b.allow(now=5) and b.retry_in(now=5) == 5
    assert b.allow(now=10) and b.state == HALF_OPEN  # one probe…
    assert not b.allow(now=10.5)  # …at a time
    b.failure(now=11)
    assert b.state == OPEN and not b.allow(now=15)
    assert b.allow(now=21)
    b.success()
    assert b.state == CLOSED and b.allow(now=21) and b.trips == 2


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0, stamp=0.0)
    assert bucket.take(now=0) == 0 and bucket.take(now=0) == 0
    assert bucket.take(now=0) == pytest.approx(0.5)
    assert bucket.take(now=0.5) == 0
    assert TokenBucket(rate=None, burst=1).take() == 0


def test_cadence_uses_observed_durations() -> None:
    seen = Durations()
    for s in range(20, 41):
        seen.add(float(s))
    assert from_observed(0, seen) == pytest.approx(10.5)  # halfway to the 5th percentile (21 s)
    assert from_observed(20, seen) == BLIND  # half a second from the window: the window's pace already
    assert from_observed(30, seen) == BLIND  # inside the window: every BLIND seconds
    assert BLIND < from_observed(60, seen) <= 15  # overdue: slower again
    task = make_task(status=Status.RUNNING, started_at=0)
    delay = next_poll_delay(task, PollResult(status=Status.RUNNING), 30_000, durations=seen)
    assert 0.9 * BLIND <= delay <= 1.1 * BLIND
    delay = next_poll_delay(task, PollResult(status=Status.RUNNING), 30_000, durations=seen, blind=1.0)
    assert 0.9 <= delay <= 1.1  # a channel's `poll_blind_seconds` option
    # Progress near 100 % never polls faster than the fast pace, except for ENDGAME_SECONDS after the task
    # first reached 99 % (its 99 % was published then: `updated_at`): then at twice the pace.
    assert next_poll_delay(task, PollResult(status=Status.RUNNING, progress=98), 300_000) >= 0.9 * FAST
    first = next_poll_delay(task, PollResult(status=Status.RUNNING, progress=99), 300_000)
    assert 0.45 * FAST <= first <= 0.55 * FAST
    at99 = replace(task, progress=99, updated_at=299_000)
    assert next_poll_delay(at99, PollResult(status=Status.RUNNING, progress=99), 300_000) <= 0.55 * FAST
    stuck = replace(task, progress=99, updated_at=290_000)
    assert next_poll_delay(stuck, PollResult(status=Status.RUNNING, progress=99), 300_000) >= 0.9 * FAST


def test_retry_after_and_messages() -> None:
    import httpx

    assert retry_after(httpx.Headers({"retry-after": "12"})) == 12
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after(httpx.Headers({})) is None
    assert upstream_message(b'{"error": {"message": "quota"}}') == "quota"
    assert upstream_message(b'{"code": 800, "msg": "bad param"}') == "bad param"
    assert upstream_message(b"<html>") == "<html>"


def test_sniffing_reads_the_bytes_not_the_name(tmp_path: Path) -> None:
    video = tmp_path / "v.bin"
    asyncio.run(media.make_video(video, width=32, height=32, seconds=1, fps=4, text="x", audio=False))
    image = tmp_path / "i.bin"
    asyncio.run(media.make_image(image, width=16, height=16, text="x", fmt="PNG"))
    assert media.sniff(video.read_bytes()[:64]) == ("video", "mp4")
    assert media.sniff(image.read_bytes()[:64]) == ("image", "png")
    assert media.sniff(b"<html><body>expired</body></html>") is None
    assert media.sniff(b"\x00\x00\x00\x20ftypM4A \x00\x00") is None  # audio only
    assert media.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image", "webp")


def test_configuration_refuses_secrets_and_bad_urls() -> None:
    from pydantic import ValidationError

    from mediarelay.config import ChannelSettings, Settings

    with pytest.raises(ValidationError) as err:
        ChannelSettings(name="a", type="gptbest", credentials=["sk-live-123"])
    assert "sk-live-123" not in str(err.value)
    with pytest.raises(ValidationError) as err:
        Settings(channels=[{"name": "a", "type": "gptbest", "credentials": ["sk-live-123"]}])
    assert "sk-live-123" not in str(err.value)
    with pytest.raises(ValidationError):
        ChannelSettings(name="a", type="gptbest", base_url="ftp://x.test")
    with pytest.raises(ValidationError):
        ChannelSettings(name="bad name", type="sandbox")
    settings = ChannelSettings(name="a", type="gptbest", base_url="https://x.test/", model_map={"*": "y"})
    cfg = settings.to_config()
    assert cfg.base_url == "https://x.test" and cfg.model_map == (("*", "y"),)
    assert ChannelSettings.from_config(cfg) == settings.model_copy(update={"base_url": "https://x.test"})
    assert json.loads(settings.model_dump_json())["credentials"] == []
