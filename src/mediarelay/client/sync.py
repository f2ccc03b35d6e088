"""The blocking client: runs the core's flows with an `httpx.Client`."""

from __future__ import annotations

import os
import time
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


class Client(BaseClient):
    """mediarelay (or an aggregator speaking one of its dialects), synchronously.

    ```python
    with Client("http://127.0.0.1:8000", key="mr-…") as mr:
        task = mr.wait(mr.submit("sora-2", prompt="a lighthouse at dusk"), progress=print)
        mr.download(task, "lighthouse.mp4")
    ```
    Pass `http_client` to use your own `httpx.Client` (proxies, TLS); it is then not closed here.
    """

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, key, **options)
        self._own = http_client is None
        self._http = http_client or httpx.Client(follow_redirects=True)

    # -- the API -----------------------------------------------------------------------------------

    def submit(
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
        """Create a task: from (model, prompt, image, audio, **fields), or the dialect's own `body`."""
        return self._run(self._submit(model, prompt, image, audio, body, dialect, headers, files, fields))

    def get(self, task: TaskRef, *, dialect: str | None = None) -> TaskResult:
        """The task's current state (one status request)."""
        return self._run(self._get(task, dialect))

    def wait(
        self,
        task: TaskRef,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        progress: ProgressCallback | None = None,
        strategy: str | None = None,
        raise_on_failure: bool = True,
        dialect: str | None = None,
    ) -> TaskResult:
        """Until the task finishes; raises TaskFailedError / TaskCanceledError / WaitTimeoutError."""
        return self._run(self._wait(task, timeout, progress, strategy, raise_on_failure, dialect))

    def cancel(self, task: TaskRef, *, dialect: str | None = None) -> TaskResult:
        return self._run(self._cancel(task, dialect))

    def download(
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
        """A finished task's output (or any URL) to `dest`, resuming an earlier partial download."""
        return self._run(self._download(task, dest, role, index, verify, sha256, progress, dialect, retries))

    def tasks(
        self,
        *,
        limit: int = 20,
        after: str | None = None,
        status: str | Sequence[str] | None = None,
        dialect: str | None = None,
        model: str | None = None,
        order: str = "desc",
    ) -> TaskPage:
        """One page of the key's tasks, every dialect (mediarelay's native `GET /v1/tasks`)."""
        return self._run(self._tasks(limit, after, status, dialect, model, order))

    def server_version(self) -> str | None:
        """mediarelay's version when the server is mediarelay, else None."""
        return self._run(self._server_version())

    # -- plumbing ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
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
                    value = self._perform(op, streams)
                except httpx.TransportError as exc:
                    error = exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            flow.close()
            for stream in streams:
                stream.response.close()

    def _perform(self, op: Op, streams: list[Stream]) -> Any:
        if isinstance(op, Send):
            return self._http.send(op.request)
        if isinstance(op, Open):
            response = self._http.send(op.request, stream=True)
            stream = Stream(response, response.iter_bytes())
            streams.append(stream)
            return stream
        if isinstance(op, Read):
            return next(op.stream.chunks, b"")
        if isinstance(op, Close):
            op.stream.response.close()
            if op.stream in streams:
                streams.remove(op.stream)
            return None
        if isinstance(op, Sleep):
            time.sleep(max(0.0, op.seconds))
            return None
        if isinstance(op, Emit):
            op.callback(op.value)
            return None
        raise TypeError(f"unknown operation {op!r}")
