"""The asyncio client against a live mediarelay: every dialect at once (events/long-polls, then polling),
failures in every dialect, cancellation of a wait, and a resumed download through a broken connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from client_cases import CANONICAL, CASES, check_media, sha256
from client_faults import FaultProxy

from conftest import Server
from mediarelay.client import AsyncClient, DownloadProgress, TaskFailedError, TaskResult


async def run_dialect(mr: AsyncClient, dialect: str, dest: Path) -> tuple[TaskResult, list[TaskResult]]:
    updates: list[TaskResult] = []

    async def on_update(result: TaskResult) -> None:  # an async callback is awaited
        await asyncio.sleep(0)
        updates.append(result)

    task = await mr.submit(dialect=dialect, **CASES[dialect])
    assert task.dialect == CANONICAL[dialect]
    done = await mr.wait(task, progress=on_update, timeout=90)
    path = await mr.download(done, dest)
    check_media(path, dialect)
    return done, updates


@pytest.mark.parametrize("strategy", ["auto", "poll"])
def test_every_dialect_at_once(server: Server, user_key: str, tmp_path: Path, strategy: str) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncClient(server.base_url, user_key, strategy=strategy, poll_interval=0.3) as mr:
            runs = [run_dialect(mr, d, tmp_path / f"{d}.out") for d in CASES]
            return dict(zip(CASES, await asyncio.gather(*runs), strict=True))

    results = asyncio.run(main())
    for dialect, (done, updates) in results.items():
        assert done.ok and updates and updates[-1].ok, dialect
        progress = [u.progress for u in updates if u.progress is not None]
        assert progress == sorted(progress) and progress[-1] == 100, (dialect, progress)
        assert next(u.status for u in updates) in ("queued", "running"), dialect


def test_failed_tasks_in_every_dialect(server: Server, user_key: str) -> None:
    async def main() -> list[BaseException | TaskResult]:
        async with AsyncClient(server.base_url, user_key) as mr:

            async def one(dialect: str) -> TaskResult:
                headers = {"X-Sandbox-Fail": f"broken {dialect}"}
                return await mr.wait(
                    await mr.submit(dialect=dialect, **CASES[dialect], headers=headers), timeout=60
                )

            return await asyncio.gather(*(one(d) for d in CASES), return_exceptions=True)

    for dialect, outcome in zip(CASES, asyncio.run(main()), strict=True):
        assert isinstance(outcome, TaskFailedError), (dialect, outcome)
        assert outcome.task.status == "failed" and outcome.task.dialect == CANONICAL[dialect]
        assert outcome.task.error is not None and outcome.task.error.message == f"broken {dialect}"
        assert not outcome.task.outputs


def test_cancelling_a_wait_stops_it_at_once(server: Server, user_key: str) -> None:
    """asyncio cancellation ends a wait on the event stream promptly; the task itself goes on."""

    async def main() -> tuple[float, str]:
        async with AsyncClient(server.base_url, user_key) as mr:
            task = await mr.submit(**CASES["native"], headers={"X-Sandbox-Queue": "60"})
            waiting = asyncio.create_task(mr.wait(task))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            elapsed = time.monotonic() - started
            status = (await mr.get(task)).status
            await mr.cancel(task)
            return elapsed, status

    elapsed, status = asyncio.run(main())
    assert elapsed < 1 and status == "queued"


def test_an_interrupted_download_resumes(server: Server, user_key: str, tmp_path: Path) -> None:
    """OpenAI's /content (a download that needs the key), cut mid-body by a relay: the client resumes
    with Range + If-Range, fetches only the rest, and the file matches the published SHA-256."""
    cut = 50_000
    with FaultProxy(server.base_url, cut_after=cut) as proxy:

        async def main() -> tuple[Path, list[DownloadProgress], TaskResult]:
            async with AsyncClient(proxy.base_url, user_key, dialect="openai") as mr:
                done = await mr.wait(await mr.submit(**CASES["openai"]), timeout=60)
                seen: list[DownloadProgress] = []
                path = await mr.download(done, tmp_path / "kite.mp4", progress=seen.append)
                return path, seen, await mr.get(done.id, dialect="native")

        path, progress, native = asyncio.run(main())
    main_out = native.output()
    assert main_out is not None and main_out.bytes is not None
    size = main_out.bytes
    assert path.stat().st_size == size and sha256(path) == main_out.sha256
    check_media(path, "openai")
    fetches = proxy.requests("/content")
    assert [(f.status, f.cut) for f in fetches] == [(200, True), (206, False)], fetches
    assert fetches[0].sent == cut and fetches[1].sent == size - cut
    assert fetches[1].headers["range"] == f"bytes={cut}-" and fetches[1].headers["if-range"].startswith('"')
    assert "authorization" in fetches[1].headers
    assert progress[-1].received == size and progress[-1].resumed_from == cut
