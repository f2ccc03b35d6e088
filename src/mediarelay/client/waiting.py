"""`wait()`: follow a task until it finishes, as cheaply as the server allows.

- mediarelay, native dialect: the server-sent event stream `/v1/tasks/{id}/events` (one connection,
  every change pushed; reconnects continue after the last version seen, with `Last-Event-ID`).
- mediarelay, any other dialect: long-polls of the dialect's own status endpoint, `?wait=30` with the
  last ETag in `If-None-Match` (one request per change; 304 when nothing changed).
- anything else (the aggregators themselves): polling with exponential backoff and jitter, honouring the
  server's `openai-poll-after-ms` and `Retry-After`.

Network failures and 429/502/503/504 answers are retried with backoff (`max_retries` in a row).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from mediarelay.client.core import (
    TRANSIENT,
    Close,
    Config,
    Emit,
    Flow,
    Open,
    Read,
    Send,
    Sleep,
    State,
    Stream,
    backoff_for,
    build,
    decode,
    detect,
    now,
    result_of,
    retry_after,
    stream_error,
)
from mediarelay.client.dialects import Spec, parse_native
from mediarelay.client.errors import (
    TaskCanceledError,
    TaskFailedError,
    UsageError,
    WaitTimeoutError,
    api_error,
)
from mediarelay.client.results import NativeTask, TaskResult

SSE_READ_TIMEOUT = 45.0  # the server sends a keep-alive comment every 15 s


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None


class SSEParser:
    """Incremental `text/event-stream` parser (the WHATWG rules that matter here)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._line = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._line + self._decoder.decode(chunk)
        held = "\r" if text.endswith("\r") else ""  # maybe the first half of a CRLF: decide next time
        lines = text[: len(text) - len(held)].replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._line = lines.pop() + held  # an incomplete last line waits for more bytes
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(Event(self._event or "message", "\n".join(self._data), self._id))
                self._data, self._event = [], ""
                continue
            if line.startswith(":"):
                continue  # keep-alive comment
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value
        return events


class Waiter:
    """One wait: the deadline, the last result seen, and reporting each new one."""

    def __init__(
        self, cfg: Config, timeout: float | None, progress: Callable[[TaskResult], Any] | None
    ) -> None:
        self.cfg = cfg
        self.deadline = None if timeout is None else now() + timeout
        self.progress = progress
        self.last: TaskResult | None = None
        self.failures = 0
        self.backoff = backoff_for(cfg)

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - now()

    def check_deadline(self, task_id: str) -> None:
        if self.remaining() <= 0:
            raise WaitTimeoutError(f"task {task_id} not finished before the timeout", self.last)

    def seen(self, result: TaskResult) -> Flow[None]:
        """Record a fresh answer; report it when something a watcher cares about changed."""
        self.failures = 0
        changed = not result.same_state(self.last)
        self.last = result
        if changed:
            self.backoff.reset()
            if self.progress is not None:
                yield Emit(self.progress, result)

    def transient(self, task_id: str, exc: Exception, delay: float | None = None) -> Flow[None]:
        """A failure worth retrying: sleep, or re-raise once `max_retries` failed in a row."""
        self.failures += 1
        if self.failures > self.cfg.max_retries:
            raise exc
        self.check_deadline(task_id)
        yield Sleep(min(delay if delay is not None else self.backoff.next(), max(0.0, self.remaining())))


def finish(result: TaskResult, raise_on_failure: bool) -> TaskResult:
    if raise_on_failure and result.status == "canceled":
        raise TaskCanceledError(result)
    if raise_on_failure and result.status == "failed":
        raise TaskFailedError(result)
    return result


def wait(
    cfg: Config,
    state: State,
    spec: Spec,
    task: TaskResult | str,
    *,
    timeout: float | None,
    strategy: str | None = None,
    progress: Callable[[TaskResult], Any] | None = None,
    raise_on_failure: bool = True,
) -> Flow[TaskResult]:
    if isinstance(task, TaskResult) and task.done:
        return finish(task, raise_on_failure)
    task_id = task.id if isinstance(task, TaskResult) else task
    how = strategy or cfg.strategy
    if how == "auto":
        mediarelay = yield from detect(cfg, state)
        how = ("sse" if spec.name == "native" else "long_poll") if mediarelay else "poll"
    waiter = Waiter(cfg, timeout, progress)
    if how == "sse":
        if spec.name != "native":
            raise UsageError("the event stream shows native tasks: use strategy 'long_poll' for this dialect")
        result = yield from _follow_events(cfg, spec, task_id, waiter)
    elif how in ("long_poll", "poll"):
        result = yield from _poll(cfg, spec, task_id, waiter, long=how == "long_poll")
    else:
        raise UsageError(f"unknown wait strategy {how!r}: auto, sse, long_poll or poll")
    return finish(result, raise_on_failure)


def _fetch(
    cfg: Config, spec: Spec, task_id: str, waiter: Waiter, wait_s: float | None
) -> Flow[TaskResult | None]:
    """One status request (a long-poll when `wait_s`); None when nothing new (304, or a retried failure)."""
    path, params = spec.status_target(task_id)
    headers = {}
    if waiter.last is not None and waiter.last.etag:
        headers["if-none-match"] = waiter.last.etag
    timeout: float | None = None
    if wait_s is not None:
        params = {**params, "wait": f"{wait_s:g}"}
        timeout = cfg.timeout + wait_s
    request = build(cfg, "GET", path, spec=spec, params=params, headers=headers, timeout=timeout)
    try:
        response: httpx.Response = yield Send(request)
    except httpx.TransportError as exc:
        yield from waiter.transient(task_id, exc)
        return None
    if response.status_code == 304:
        waiter.failures = 0
        hint = retry_after(response)
        if waiter.last is not None and hint is not None:
            waiter.last = replace(waiter.last, poll_after=hint)
        return None
    if response.status_code in TRANSIENT:
        error = api_error(
            response.status_code,
            decode(response),
            text=response.text,
            retry_after=retry_after(response),
            dialect=spec.name,
        )
        yield from waiter.transient(task_id, error, retry_after(response))
        return None
    return result_of(spec, cfg, response)


def _poll(cfg: Config, spec: Spec, task_id: str, waiter: Waiter, *, long: bool) -> Flow[TaskResult]:
    first = True
    while waiter.last is None or not waiter.last.done:
        waiter.check_deadline(task_id)
        wait_s: float | None = None
        if first:
            first = False  # the current state at once, then wait for changes
        elif long:
            wait_s = float(max(1, int(min(cfg.long_poll_seconds, waiter.remaining()))))
        else:
            hint = waiter.last.poll_after if waiter.last is not None else None
            delay = waiter.backoff.next() if hint is None else hint
            yield Sleep(max(0.0, min(delay, waiter.remaining())))
            waiter.check_deadline(task_id)
        previous = waiter.last
        started = now()
        result = yield from _fetch(cfg, spec, task_id, waiter, wait_s)
        if result is not None:
            yield from waiter.seen(result)
        unchanged = (
            result is None
            or previous is None
            or (result.etag == previous.etag if result.etag else result.same_state(previous))
        )
        if wait_s is not None and unchanged and now() - started < wait_s / 2:
            # The answer came back early with no news: this server does not hold requests (a proxy or
            # an aggregator that ignores `wait`). Pace the next one like a poll instead of spinning.
            yield Sleep(max(0.0, min(waiter.backoff.next(), waiter.remaining())))
    return waiter.last


def _follow_events(cfg: Config, spec: Spec, task_id: str, waiter: Waiter) -> Flow[TaskResult]:
    """Follow `/v1/tasks/{id}/events`; reconnect (after the last version seen) until a terminal event."""
    path = spec.status_target(task_id)[0] + "/events"
    while True:
        waiter.check_deadline(task_id)
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        last = waiter.last
        if last is not None and isinstance(last.model, NativeTask):
            headers["last-event-id"] = str(last.model.version)
        read = min(SSE_READ_TIMEOUT, max(1.0, waiter.remaining()))
        timeout = httpx.Timeout(cfg.timeout, read=read)
        try:
            stream: Stream = yield Open(build(cfg, "GET", path, spec=spec, headers=headers, timeout=timeout))
        except httpx.TransportError as exc:
            yield from waiter.transient(task_id, exc)
            continue
        if stream.response.status_code != 200:
            error = yield from stream_error(stream, spec.name)
            if stream.response.status_code in TRANSIENT:
                yield from waiter.transient(task_id, error, retry_after(stream.response))
                continue
            raise error
        parser = SSEParser()
        try:
            while chunk := (yield Read(stream)):
                for event in parser.feed(chunk):
                    if event.event != "task":
                        continue
                    yield from waiter.seen(parse_native(orjson.loads(event.data), cfg.base_url))
                    if waiter.last is not None and waiter.last.done:
                        yield Close(stream)
                        return waiter.last
        except httpx.TransportError as exc:  # includes the read timeout of a silent stream
            yield Close(stream)
            yield from waiter.transient(task_id, exc)
            continue
        yield Close(stream)
        # The stream ended before a terminal state (a server restart): pause briefly, then reconnect.
        yield Sleep(min(0.5, max(0.0, waiter.remaining())))


__all__ = ["Event", "SSEParser", "wait"]
