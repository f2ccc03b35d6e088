"""The blocking client against a live mediarelay: every dialect end to end, each way of waiting, failures,
cancel, timeouts and the error classes."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from client_cases import CANONICAL, CASES, PROGRESS, check_media, sha256
from client_faults import FaultProxy

from conftest import Server
from mediarelay.client import (
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    TaskCanceledError,
    TaskFailedError,
    TaskResult,
    UsageError,
    WaitTimeoutError,
)


def recording_client(base_url: str, key: str, seen: list[httpx.Request], **options: object) -> Client:
    """A client whose requests are recorded (with the time each was sent)."""

    def record(request: httpx.Request) -> None:
        request.extensions["sent_at"] = time.monotonic()
        seen.append(request)

    http = httpx.Client(follow_redirects=True, event_hooks={"request": [record]})
    return Client(base_url, key, http_client=http, **options)  # type: ignore[arg-type]


def check_updates(updates: list[TaskResult], dialect: str) -> None:
    """Each update is news, in lifecycle order, with progress that never goes back."""
    assert updates and updates[-1].status == "succeeded", updates
    order = {"queued": 0, "running": 1, "succeeded": 2}
    ranks = [order[u.status] for u in updates]
    assert ranks == sorted(ranks), [u.status for u in updates]
    progress = [u.progress for u in updates if u.progress is not None]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    if dialect in PROGRESS:
        assert all(u.progress is not None for u in updates)
    for a, b in itertools.pairwise(updates):
        assert not b.same_state(a), "an update that is no news"


def run_dialect(server: Server, key: str, tmp_path: Path, dialect: str) -> None:
    """submit -> wait (auto: events for native, long-polls otherwise) -> download -> verify, in one dialect."""
    seen: list[httpx.Request] = []
    with recording_client(server.base_url, key, seen) as mr:
        task = mr.submit(dialect=dialect, **CASES[dialect])
        assert task.dialect == CANONICAL[dialect] and task.status == "queued" and task.id, task
        before = len(seen)
        updates: list[TaskResult] = []
        done = mr.wait(task, progress=updates.append, timeout=60)
        during = seen[before:]
        assert done.ok and done.id == task.id and done.url, done
        check_updates(updates, dialect)
        path = mr.download(done, tmp_path / dialect / "result")
        check_media(path, dialect)
        assert [p.name for p in path.parent.iterdir()] == ["result"], "partial files left behind"
        # The checksum the native view publishes is the one of the file we got (and was verified).
        native = mr.get(task.id, dialect="native")
        main = native.output()
        assert main is not None and main.sha256 == sha256(path), dialect
    assert mr.state.server_version, "a mediarelay server was detected"
    polls = [r for r in during if r.url.path != "/healthz"]
    if dialect == "native":  # server-sent events: one stream, no polling
        assert [r.url.path for r in polls] == [f"/v1/tasks/{task.id}/events"]
    else:  # long-polls: each one held until the answer changed
        assert polls and all("wait" in r.url.params for r in polls[1:]), [str(r.url) for r in polls]
        assert len(polls) <= 3 * len(updates) + 2, (dialect, len(polls), len(updates))


def test_submit_wait_download_in_every_dialect(server: Server, user_key: str, tmp_path: Path) -> None:
    """All six dialects at once, each in its own thread and client."""
    with ThreadPoolExecutor(len(CASES)) as pool:
        runs = {d: pool.submit(run_dialect, server, user_key, tmp_path, d) for d in CASES}
    for dialect, run in runs.items():
        error = run.exception()
        assert error is None, f"{dialect}: {error!r}"


@pytest.mark.parametrize("dialect", ["pika", "openai"])
def test_polling_fallback(server: Server, user_key: str, tmp_path: Path, dialect: str) -> None:
    seen: list[httpx.Request] = []
    with recording_client(server.base_url, user_key, seen, strategy="poll", poll_interval=0.2) as mr:
        task = mr.submit(dialect=dialect, **CASES[dialect])
        before = len(seen)
        updates: list[TaskResult] = []
        done = mr.wait(task, progress=updates.append, timeout=60)
        check_updates(updates, dialect)
        check_media(mr.download(done, tmp_path / "out"), dialect)
    polls = [r for r in seen[before:] if r.url.path != "/healthz"]
    assert len(polls) >= 3 and not any("wait" in r.url.params for r in polls)
    if dialect == "openai":  # the first answer says openai-poll-after-ms: 1000 while queued
        gaps = [b.extensions["sent_at"] - a.extensions["sent_at"] for a, b in itertools.pairwise(polls)]
        assert gaps[0] >= 0.9, gaps


def test_an_aggregator_that_is_not_mediarelay_is_polled(server: Server, user_key: str) -> None:
    """Without mediarelay's identity header the client polls with backoff: no long-polls, no streams."""
    seen: list[httpx.Request] = []
    with FaultProxy(server.base_url, hide_server=True) as proxy:
        mr = recording_client(proxy.base_url, user_key, seen, poll_interval=0.2)
        with mr:
            task = mr.submit(dialect="unified", **CASES["unified"])
            assert mr.wait(task, timeout=60).ok
            assert mr.state.detected and mr.state.server_version is None
    polls = [r for r in seen if r.url.path == "/v1/video/query"]
    assert len(polls) >= 3 and not any("wait" in r.url.params for r in polls)
    assert not any(r.url.path.endswith("/events") for r in seen)


def test_a_failed_task_raises_with_its_reason(server: Server, user_key: str) -> None:
    with Client(server.base_url, user_key) as mr:
        task = mr.submit(dialect="faceswap", **CASES["faceswap"], headers={"X-Sandbox-Fail": "no face found"})
        with pytest.raises(TaskFailedError) as caught:
            mr.wait(task, timeout=60)
        assert not isinstance(caught.value, TaskCanceledError)
        assert caught.value.task.status == "failed" and caught.value.task.error is not None
        assert caught.value.task.error.message == "no face found"
        assert "no face found" in str(caught.value)
        again = mr.wait(task.id, dialect="faceswap", raise_on_failure=False)
        assert again.status == "failed" and not again.outputs


@pytest.mark.parametrize("dialect", ["native", "unified", "avatar"])
def test_cancel(server: Server, user_key: str, dialect: str) -> None:
    with Client(server.base_url, user_key, dialect=dialect) as mr:
        task = mr.submit(**CASES[dialect], headers={"X-Sandbox-Queue": "60"})
        canceled = mr.cancel(task.id)
        assert canceled.status == "canceled" and canceled.error is not None
        with pytest.raises(TaskCanceledError):
            mr.wait(task.id, timeout=10)
        assert mr.get(task.id).status == "canceled"


def test_wait_times_out_and_the_task_goes_on(server: Server, user_key: str) -> None:
    with Client(server.base_url, user_key, dialect="pika") as mr:
        task = mr.submit(**CASES["pika"], headers={"X-Sandbox-Queue": "60"})
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as caught:
            mr.wait(task, timeout=1.0)
        assert 0.9 <= time.monotonic() - started < 5
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.task is not None and caught.value.task.status == "queued"
        assert mr.get(task).status == "queued"
        mr.cancel(task)


BAD_BODIES = {
    "native": {"model": "x", "operation": "text_to_video"},
    "openai": {"prompt": "a kite", "seconds": "5"},
    "pika": {"promptText": "x"},
    "unified": {"model": "sora-9", "prompt": "x"},
    "avatar": {"avatar_url": "https://example.com/f.png"},
    "faceswap": {"taskType": 5, "targetUrls": ["https://example.com/p.png"]},
}


@pytest.mark.parametrize("dialect", list(BAD_BODIES))
def test_errors_come_as_exceptions_in_every_dialect(server: Server, user_key: str, dialect: str) -> None:
    count = server.task_count()
    with Client(server.base_url, user_key, dialect=dialect) as mr:
        with pytest.raises(BadRequestError) as bad:
            mr.submit(body=BAD_BODIES[dialect])
        assert bad.value.status == 400 and bad.value.message
        assert server.task_count() == count, "a refused submit created a task"
        with pytest.raises(NotFoundError):
            mr.get("0123456789abcdef0123456789abcdef")
    with Client(server.base_url, "mr-not-a-key", dialect=dialect) as mr, pytest.raises(AuthenticationError):
        mr.get("0123456789abcdef0123456789abcdef")


def test_quick_inputs_are_checked_before_anything_is_sent(server: Server, user_key: str) -> None:
    with Client(server.base_url, user_key) as mr:
        with pytest.raises(UsageError, match="audio"):
            mr.submit(dialect="avatar", image="https://example.com/f.png")
        with pytest.raises(UsageError, match="unknown dialect"):
            mr.submit("x", prompt="y", dialect="klingon")
        with pytest.raises(UsageError, match="body"):
            mr.submit("x", body={"model": "x"})


def test_tasks_lists_every_dialect_with_filters(server: Server, user_key: str) -> None:
    with Client(server.base_url, user_key) as mr:
        failed = mr.submit(dialect="pika", **CASES["pika"], headers={"X-Sandbox-Fail": "listed"})
        mr.wait(failed, raise_on_failure=False, timeout=60)
        page = mr.tasks(status="failed", limit=100)
        assert all(t.status == "failed" for t in page.data)
        assert any(
            t.raw["public_id"] == failed.id and t.error and t.error.message == "listed" for t in page.data
        )
        first = mr.tasks(limit=1)
        assert len(first.data) == 1 and first.has_more
        second = mr.tasks(limit=1, after=first.last_id)
        assert second.data[0].id != first.data[0].id
