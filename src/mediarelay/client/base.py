"""What the sync and async clients share: settings, argument handling, and building each call's flow."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel

from mediarelay.client import core, download, waiting
from mediarelay.client.core import STRATEGIES, Config, Flow, State
from mediarelay.client.dialects import Quick, Spec, spec_for
from mediarelay.client.errors import UsageError
from mediarelay.client.results import DownloadProgress, TaskPage, TaskResult

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_WAIT_TIMEOUT = 1800.0
TaskRef = TaskResult | str
ProgressCallback = Callable[[TaskResult], Any]
DownloadCallback = Callable[[DownloadProgress], Any]


class ClientOptions(TypedDict, total=False):
    """The keyword options of `Client` / `AsyncClient` (see `BaseClient`)."""

    dialect: str
    timeout: float
    headers: Mapping[str, str]
    strategy: str
    poll_interval: float
    max_poll_interval: float
    long_poll_seconds: float
    max_retries: int


class BaseClient:
    """Holds the settings; each public method of the sync/async clients runs one flow built here.

    `base_url` is the server's root (mediarelay, or an aggregator speaking one of the dialects); it and
    `key` default to the `MEDIARELAY_URL` / `MEDIARELAY_KEY` environment variables. `dialect` is the one
    used for bare ids and submits (default: mediarelay's native API). `timeout` is per request;
    `strategy` is how `wait()` waits (auto: server-sent events or long-polls on mediarelay, polling with
    backoff elsewhere); `max_retries` is how many transient failures in a row are retried.
    """

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        dialect: str = "native",
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        strategy: str = "auto",
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        long_poll_seconds: float = 30.0,
        max_retries: int = 5,
    ) -> None:
        if strategy not in STRATEGIES:
            raise UsageError(f"strategy must be one of {', '.join(STRATEGIES)}")
        url = (base_url or os.environ.get("MEDIARELAY_URL") or DEFAULT_URL).rstrip("/")
        if "://" not in url:
            raise UsageError(f"base URL {url!r} needs a scheme (http:// or https://)")
        self.config = Config(
            base_url=url,
            key=key if key is not None else os.environ.get("MEDIARELAY_KEY"),
            dialect=spec_for(dialect).name,
            timeout=timeout,
            headers=dict(headers or {}),
            strategy=strategy,
            poll_interval=poll_interval,
            max_poll_interval=max(poll_interval, max_poll_interval),
            long_poll_seconds=long_poll_seconds,
            max_retries=max_retries,
        )
        self.state = State()

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def _spec(self, task: TaskRef | None = None, dialect: str | None = None) -> Spec:
        if dialect:
            return spec_for(dialect)
        if isinstance(task, TaskResult):
            return spec_for(task.dialect)
        return spec_for(self.config.dialect)

    # -- flows -----------------------------------------------------------------------------------------

    def _submit(
        self,
        model: str | None,
        prompt: str | None,
        image: str | Sequence[str] | None,
        audio: str | None,
        body: Mapping[str, Any] | BaseModel | None,
        dialect: str | None,
        headers: Mapping[str, str] | None,
        files: Any,
        fields: Mapping[str, Any],
    ) -> Flow[TaskResult]:
        spec = self._spec(dialect=dialect)
        if body is not None:
            if model is not None or prompt is not None or image is not None or audio is not None:
                raise UsageError("give either body= (the dialect's own request) or model/prompt/image/audio")
            data = body.model_dump(mode="json", exclude_none=True) if isinstance(body, BaseModel) else body
            payload = {**data, **fields}
        else:
            images = (image,) if isinstance(image, str) else tuple(image or ())
            payload = spec.quick_body(Quick(model, prompt, images, audio, fields))
        return core.submit(self.config, spec, payload, headers=headers, files=files)

    def _get(self, task: TaskRef, dialect: str | None) -> Flow[TaskResult]:
        return core.get(self.config, self._spec(task, dialect), _id(task))

    def _cancel(self, task: TaskRef, dialect: str | None) -> Flow[TaskResult]:
        return core.cancel(self.config, self._spec(task, dialect), _id(task))

    def _wait(
        self,
        task: TaskRef,
        timeout: float | None,
        progress: ProgressCallback | None,
        strategy: str | None,
        raise_on_failure: bool,
        dialect: str | None,
    ) -> Flow[TaskResult]:
        if strategy is not None and strategy not in STRATEGIES:
            raise UsageError(f"strategy must be one of {', '.join(STRATEGIES)}")
        return waiting.wait(
            self.config,
            self.state,
            self._spec(task, dialect),
            task,
            timeout=timeout,
            strategy=strategy,
            progress=progress,
            raise_on_failure=raise_on_failure,
        )

    def _download(
        self,
        target: TaskRef,
        dest: str | os.PathLike[str],
        role: str | None,
        index: int,
        verify: bool,
        sha256: str | None,
        progress: DownloadCallback | None,
        dialect: str | None,
        retries: int | None,
    ) -> Flow[Path]:
        path = Path(dest)
        if isinstance(target, str) and target.startswith(("http://", "https://")):
            return download.download(
                self.config, target, path, sha256=sha256, progress=progress, retries=retries
            )
        spec = self._spec(target, dialect)

        def flow() -> Flow[Path]:
            task = target
            if not isinstance(task, TaskResult):
                task = yield from core.get(self.config, spec, task)
            return (
                yield from download.download_task(
                    self.config,
                    self.state,
                    spec,
                    task,
                    path,
                    role=role,
                    index=index,
                    verify=verify,
                    progress=progress,
                    retries=retries,
                )
            )

        return flow()

    def _tasks(
        self,
        limit: int,
        after: str | None,
        status: str | Sequence[str] | None,
        dialect: str | None,
        model: str | None,
        order: str,
    ) -> Flow[TaskPage]:
        statuses = (status,) if isinstance(status, str) else tuple(status or ())
        name = spec_for(dialect).name if dialect else None
        return core.list_tasks(
            self.config, limit=limit, after=after, status=statuses, dialect=name, model=model, order=order
        )

    def _server_version(self) -> Flow[str | None]:
        yield from core.detect(self.config, self.state)
        return self.state.server_version


def _id(task: TaskRef) -> str:
    if isinstance(task, TaskResult):
        return task.id
    if not task:
        raise UsageError("a task id is required")
    return task
