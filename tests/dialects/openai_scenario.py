"""One scenario of the OpenAI Videos API driven by the OFFICIAL `openai` SDK, whatever its version.

`tests/dialects/test_openai_videos.py` runs it with the installed (newest) SDK and, in a subprocess with
`PYTHONPATH` pointing at a cache of openai 2.2.0 (the first release with `client.videos`), with the
oldest one; it then asserts on the JSON report this prints. The scenario only uses the SDK and the
standard library, so both versions run exactly the same code:

    python openai_scenario.py <base_url> <key> <other_key> <out_dir>

Downloaded files are written to `out_dir` (the test reads them back); the report says where.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import openai
from openai import OpenAI

PROMPT = "a red kite over the sea"


def tiny_png(width: int = 64, height: int = 36) -> bytes:
    """A real PNG (solid colour) built with zlib only, so the scenario needs nothing but the SDK."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((200, 40, 40)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Recorder:
    """httpx event hooks: every request's send time and every response's status and poll header."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def on_request(self, request: Any) -> None:
        with self.lock:
            self.events.append(
                {
                    "kind": "request",
                    "t": time.monotonic(),
                    "method": request.method,
                    "path": request.url.path,
                    "content_type": request.headers.get("content-type"),
                }
            )

    def on_response(self, response: Any) -> None:
        with self.lock:
            self.events.append(
                {
                    "kind": "response",
                    "t": time.monotonic(),
                    "method": response.request.method,
                    "path": response.request.url.path,
                    "status": response.status_code,
                    "poll_after_ms": response.headers.get("openai-poll-after-ms"),
                }
            )


def dump(video: Any) -> dict[str, Any]:
    data: dict[str, Any] = video.model_dump(mode="json")
    return data


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    return {"class": type(exc).__name__, "status": exc.status_code, "body": exc.body}


def expect_error(call: Any) -> dict[str, Any]:
    try:
        call()
    except openai.APIStatusError as exc:
        return error_of(exc)
    return {"class": None}


def run(base_url: str, key: str, other_key: str, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    http = openai.DefaultHttpxClient(
        event_hooks={"request": [recorder.on_request], "response": [recorder.on_response]}
    )
    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, http_client=http)
    videos = client.videos
    report: dict[str, Any] = {"sdk_version": openai.__version__}
    started = time.monotonic()

    # Submissions that run in parallel while the blocking create_and_poll calls below wait.
    held = videos.create(prompt=f"{PROMPT} (held)", extra_headers={"X-Sandbox-Duration": "8"})
    by_url = videos.create(
        prompt=f"{PROMPT} (by url)",
        model="sora-2-pro",
        size="1792x1024",
        seconds="8",
        extra_body={"input_reference": {"image_url": "https://example.com/first-frame.png"}},
    )
    failing = videos.create(prompt=f"{PROMPT} (fails)", extra_headers={"X-Sandbox-Fail": "scenario failure"})
    report["created"] = {"held": dump(held), "by_url": dump(by_url), "failing": dump(failing)}

    # poll() sleeps for the server's openai-poll-after-ms (the SDK reads it on its first retrieve only,
    # then keeps that interval): start it early in the held video's run, while the server's hint is
    # longer than the SDK's 1 s default, so the wait shows which one was used.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        raw_held = videos.with_raw_response.retrieve(held.id)
        running = raw_held.parse()
        hint = int(raw_held.headers.get("openai-poll-after-ms") or 0)
        if running.status == "in_progress" and running.progress >= 10 and hint > 1200:
            break
        time.sleep(0.05)
    mark = len(recorder.events)
    report["held_final"] = dump(videos.poll(held.id))
    report["held_events"] = [e for e in recorder.events[mark:] if e["path"].endswith(held.id)]

    # create_and_poll: JSON body (2.2.0; 3.x always sends multipart), then with a file (multipart).
    report["json"] = dump(videos.create_and_poll(prompt=PROMPT, seconds="4", size="1280x720"))
    png = tiny_png()
    report["file"] = dump(
        videos.create_and_poll(
            prompt=f"{PROMPT} (file)", input_reference=("frame.png", io.BytesIO(png), "image/png")
        )
    )

    report["by_url_final"] = dump(videos.poll(by_url.id))
    report["failing_final"] = dump(videos.poll(failing.id))

    first = report["json"]["id"]
    report["retrieve"] = dump(videos.retrieve(first))
    raw = videos.with_raw_response.retrieve(first)
    report["retrieve_headers"] = {k.lower(): v for k, v in raw.headers.items()}

    # Content: every variant, written where the test can read it back.
    report["content"] = {}
    for variant in ("video", "thumbnail", "spritesheet"):
        got = videos.download_content(first, variant=variant)  # type: ignore[arg-type]
        path = out_dir / f"{variant}.bin"
        got.write_to_file(path)
        report["content"][variant] = {
            "path": str(path),
            "content_type": got.response.headers.get("content-type"),
            "bytes": len(got.content),
        }
    report["content_default_type"] = videos.download_content(first).response.headers.get("content-type")
    report["content_failed"] = expect_error(lambda: videos.download_content(failing.id))

    # Remix of a completed video.
    remix = videos.remix(first, prompt=f"{PROMPT}, at night")
    report["remix_created"] = dump(remix)
    report["remix"] = dump(videos.poll(remix.id))
    report["remix_failed_source"] = expect_error(lambda: videos.remix(failing.id, prompt="again"))

    # List: SDK auto-pagination and manual `after` cursors, two per page, both orders.
    report["list_auto"] = [v.id for v in videos.list(limit=2)]
    pages: list[list[str]] = []
    page = videos.list(limit=2)
    pages.append([v.id for v in page.data])
    while page.has_more:
        page = videos.list(limit=2, after=page.data[-1].id)
        pages.append([v.id for v in page.data])
    report["list_pages"] = pages
    report["list_asc"] = [v.id for v in videos.list(limit=100, order="asc").data]
    report["list_first_page"] = dump(videos.list(limit=2))

    # Errors, in the SDK's exception classes.
    report["errors"] = {
        "bad_seconds": expect_error(lambda: videos.create(prompt=PROMPT, seconds="5")),  # type: ignore[arg-type]
        "bad_size": expect_error(lambda: videos.create(prompt=PROMPT, size="640x480")),  # type: ignore[arg-type]
        "pro_size": expect_error(lambda: videos.create(prompt=PROMPT, size="1024x1792")),
        "bad_model": expect_error(lambda: videos.create(prompt=PROMPT, model="sora-1")),  # type: ignore[arg-type]
        "bad_file": expect_error(
            lambda: videos.create(
                prompt=PROMPT, input_reference=("a.txt", io.BytesIO(b"not an image"), "text/plain")
            )
        ),
        "unknown": expect_error(lambda: videos.retrieve("video_" + "0" * 32)),
        "bad_limit": expect_error(lambda: videos.list(limit=1000)),
        "bad_cursor": expect_error(lambda: videos.list(after="video_" + "0" * 32)),
    }
    wrong = OpenAI(base_url=f"{base_url}/v1", api_key="mr-not-a-key", max_retries=0)
    report["errors"]["wrong_key"] = expect_error(lambda: wrong.videos.retrieve(first))
    other = OpenAI(base_url=f"{base_url}/v1", api_key=other_key, max_retries=0)
    report["errors"]["foreign"] = expect_error(lambda: other.videos.retrieve(first))
    report["errors"]["foreign_content"] = expect_error(lambda: other.videos.download_content(first))
    report["errors"]["foreign_delete"] = expect_error(lambda: other.videos.delete(first))

    # Delete: the answer, then the video is gone.
    report["deleted"] = videos.delete(failing.id).model_dump(mode="json")
    report["after_delete"] = expect_error(lambda: videos.retrieve(failing.id))
    report["list_after_delete"] = [v.id for v in videos.list(limit=100).data]
    report["submits"] = [
        e["content_type"]
        for e in recorder.events
        if e["kind"] == "request" and e["method"] == "POST" and e["path"] == "/v1/videos"
    ]
    report["elapsed"] = time.monotonic() - started
    return report


def main() -> None:
    base_url, key, other_key, out_dir = sys.argv[1:5]
    report = run(base_url, key, other_key, Path(out_dir))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
