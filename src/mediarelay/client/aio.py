"""The asyncio client: runs the same flows as `Client` with an `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from typing_extensions import Unpack

from mediarelay.client.base import (
    DEFAULT_WAIT_TIMEOUT,
    BaseClient,
    ClientOptions,
    DownloadCallback,
    ProgressCallback,
    TaskRef,
)
from mediarelay.client.core import Close, Emit, Flow, Op, Open, Read, Send, Sleep, Stream
from mediarelay.client.errors import APIConnectionError
from mediarelay.client.results import TaskPage, TaskResult

T = TypeVar("T")


class AsyncClient(BaseClient):
    """The async twin of `Client`: the same methods, awaited; progress callbacks may be coroutines.

    ```python
    async with AsyncClient("http://127.0.0.1:8000", key="mr-…") as mr:
        task = await mr.wait(await mr.submit("sora-2", prompt="a lighthouse at dusk"))
        await mr.download(task, "lighthouse.mp4")
    ```
    """

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, key, **options)
        self._own = http_client is None
        self._http = http_client or httpx.AsyncClient(follow_redirects=True)

    async def submit(
        self,
        model: str | None = None,
        *,
        prompt: str | None = None,
        image: str | Sequence[str] | None = None,
        audio: str | None = None,
        body: Mapping[str, Any] | BaseModel | None = None,
        dialect: str | None = None,
        headers: Mapping[str, str] | None = None,
        files: Any = None,
        **fields: Any,
    ) -> TaskResult:
        flow = self._submit(model, prompt, image, audio, body, dialect, headers, files, fields)
        return await self._run(flow)

    async def get(self, task: TaskRef, *, dialect: str | None = None) -> TaskResult:
        return await self._run(self._get(task, dialect))

    async def wait(
        self,
        task: TaskRef,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        progress: ProgressCallback | None = None,
        strategy: str | None = None,
        raise_on_failure: bool = True,
        dialect: str | None = None,
    ) -> TaskResult:
        return await self._run(self._wait(task, timeout, progress, strategy, raise_on_failure, dialect))

    async def cancel(self, task: TaskRef, *, dialect: str | None = None) -> TaskResult:
        return await self._run(self._cancel(task, dialect))

    async def download(
        self,
        task: TaskRef,
        dest: str | os.PathLike[str],
        *,
        role: str | None = None,
        index: int = 0,
        verify: bool = True,
        sha256: str | None = None,
        progress: DownloadCallback | None = None,
        dialect: str | None = None,
        retries: int | None = None,
    ) -> Path:
        return await self._run(
            self._download(task, dest, role, index, verify, sha256, progress, dialect, retries)
        )

    async def tasks(
        self,
        *,
        limit: int = 20,
        after: str | None = None,
        status: str | Sequence[str] | None = None,
        dialect: str | None = None,
        model: str | None = None,
        order: str = "desc",
    ) -> TaskPage:
        return await self._run(self._tasks(limit, after, status, dialect, model, order))

    async def server_version(self) -> str | None:
        return await self._run(self._server_version())

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        streams: list[Stream] = []
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    op = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, error = None, None
                try:
                    value = await self._perform(op, streams)
                except httpx.TransportError as exc:
                    error = exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            flow.close()
            for stream in streams:
                await stream.response.aclose()

    async def _perform(self, op: Op, streams: list[Stream]) -> Any:
        if isinstance(op, Send):
            return await self._http.send(op.request)
        if isinstance(op, Open):
            response = await self._http.send(op.request, stream=True)
            stream = Stream(response, response.aiter_bytes())
            streams.append(stream)
            return stream
        if isinstance(op, Read):
            return await anext(op.stream.chunks, b"")
        if isinstance(op, Close):
            await op.stream.response.aclose()
            if op.stream in streams:
                streams.remove(op.stream)
            return None
        if isinstance(op, Sleep):
            await asyncio.sleep(max(0.0, op.seconds))
            return None
        if isinstance(op, Emit):
            outcome = op.callback(op.value)
            if inspect.isawaitable(outcome):
                await outcome
            return None
        raise TypeError(f"unknown operation {op!r}")
