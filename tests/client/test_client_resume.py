"""Downloads with resume: a connection dropped mid-body (by a relay in front of the real server), a later
call that continues the partial file, a file that changed meanwhile, and a checksum that does not match."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from client_cases import sha256
from client_faults import FaultProxy

from conftest import Server
from mediarelay.client import Client, DownloadError, IntegrityError, Output, TaskResult
from mediarelay.media import probe


@pytest.fixture(scope="module")
def clip(server: Server, user_key: str) -> Iterator[tuple[TaskResult, Output]]:
    """A finished native task with a video big enough to cut in three."""
    with Client(server.base_url, user_key) as mr:
        task = mr.submit(
            "clip", prompt="resume me", operation="text_to_video", width=640, height=480, seconds=3, fps=24
        )
        done = mr.wait(task, timeout=60)
    video = done.output("video")
    assert video is not None and video.bytes and video.bytes > 20_000 and video.sha256
    yield done, video


def test_a_dropped_connection_resumes_in_the_same_call(
    server: Server, user_key: str, clip: tuple[TaskResult, Output], tmp_path: Path
) -> None:
    _task, video = clip
    assert video.bytes is not None
    cut = video.bytes // 3
    with FaultProxy(server.base_url, cut_after=cut) as proxy, Client(server.base_url, user_key) as mr:
        url = video.url.replace(server.base_url, proxy.base_url)
        path = mr.download(url, tmp_path / "clip.mp4", sha256=video.sha256)
    assert sha256(path) == video.sha256 and path.stat().st_size == video.bytes
    first, second = proxy.requests("/files/")
    assert first.cut and first.sent == cut and "range" not in first.headers
    assert second.status == 206 and second.headers["range"] == f"bytes={cut}-"
    assert second.sent == video.bytes - cut, "the resume fetched more than the rest"
    assert second.headers["if-range"].startswith('"'), "resumed without checking the file is the same"


def test_a_later_call_resumes_the_partial_file(
    server: Server, user_key: str, clip: tuple[TaskResult, Output], tmp_path: Path
) -> None:
    _task, video = clip
    assert video.bytes is not None
    cut = video.bytes // 2
    dest = tmp_path / "later.mp4"
    with FaultProxy(server.base_url, cut_after=cut) as proxy:
        url = video.url.replace(server.base_url, proxy.base_url)
        with (
            Client(proxy.base_url, user_key) as mr,
            pytest.raises(DownloadError, match="run again to resume"),
        ):
            mr.download(url, dest, retries=0)
        part = dest.with_name(dest.name + ".part")
        assert not dest.exists() and part.stat().st_size == cut
        with Client(proxy.base_url, user_key) as mr:  # a new client, as after a restart
            assert mr.download(url, dest, sha256=video.sha256) == dest
    assert sha256(dest) == video.sha256 and not part.exists()
    assert not dest.with_name(dest.name + ".part.json").exists()
    resumed = proxy.requests("/files/")[-1]
    assert resumed.status == 206 and resumed.sent == video.bytes - cut
    assert probe(dest).width == 640


def test_a_partial_file_of_another_version_is_replaced(
    server: Server, user_key: str, clip: tuple[TaskResult, Output], tmp_path: Path
) -> None:
    """If-Range with a stale validator: the server sends the whole file (200) and the client starts over."""
    task, video = clip
    dest = tmp_path / "stale.mp4"
    dest.with_name(dest.name + ".part").write_bytes(b"x" * 1000)
    meta = {"url": video.url, "validator": '"stale-etag"', "total": 5000}
    dest.with_name(dest.name + ".part.json").write_bytes(orjson.dumps(meta))
    with Client(server.base_url, user_key) as mr:
        mr.download(task, dest)  # the task: its native view publishes the checksum
    assert sha256(dest) == video.sha256


def test_a_complete_partial_file_is_just_verified(
    server: Server, user_key: str, clip: tuple[TaskResult, Output], tmp_path: Path
) -> None:
    """All bytes already there: the server answers 416 to the range, the client checks and renames."""
    task, video = clip
    dest = tmp_path / "whole.mp4"
    with Client(server.base_url, user_key) as mr:
        mr.download(task, dest)
    etag = httpx.head(video.url).headers["etag"]
    dest.rename(dest.with_name(dest.name + ".part"))
    meta = {"url": video.url, "validator": etag, "total": video.bytes}
    dest.with_name(dest.name + ".part.json").write_bytes(orjson.dumps(meta))
    with Client(server.base_url, user_key) as mr:
        mr.download(task, dest)
    assert sha256(dest) == video.sha256 and not dest.with_name(dest.name + ".part").exists()


def test_a_checksum_mismatch_removes_the_file(
    server: Server, user_key: str, clip: tuple[TaskResult, Output], tmp_path: Path
) -> None:
    _task, video = clip
    dest = tmp_path / "bad.mp4"
    with Client(server.base_url, user_key) as mr, pytest.raises(IntegrityError, match="SHA-256"):
        mr.download(video.url, dest, sha256="0" * 64)
    assert not list(tmp_path.iterdir()), "a file that failed verification was kept"
