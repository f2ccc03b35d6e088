"""The client's sans-I/O core: every operation is a generator that *describes* its I/O.

A flow yields small operations (`Send` a request, `Open` a streaming one, `Read` a chunk, `Sleep`, `Emit`
a progress value) and receives their results; transport failures are thrown into it at the `yield`.
`sync.Client` and `aio.AsyncClient` run the same flows with `httpx.Client` / `httpx.AsyncClient`, so
the logic (retries, waiting, resuming) exists once — the pattern httpx itself uses for `Auth.auth_flow`.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson

from mediarelay import __version__
from mediarelay.client.dialects import Spec, parse_native
from mediarelay.client.errors import APIError, ProtocolError, api_error, wrapped_error
from mediarelay.client.results import NativeTaskList, TaskPage, TaskResult

T = TypeVar("T")
USER_AGENT = f"mediarelay-client/{__version__}"
VERSION_HEADER = "x-mediarelay-version"
TRANSIENT = frozenset({429, 502, 503, 504})
STRATEGIES = ("auto", "sse", "long_poll", "poll")


# -- the operations a flow yields --------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send a request and read the whole answer -> `httpx.Response`."""

    request: httpx.Request


@dataclass(frozen=True)
class Open:
    """Send a request and return at the headers -> `Stream` (read it with `Read`)."""

    request: httpx.Request


@dataclass
class Stream:
    """An open streaming answer; `chunks` is the driver's byte iterator over it."""

    response: httpx.Response
    chunks: Any = None


@dataclass(frozen=True)
class Read:
    """The next chunk of the stream's body -> bytes (b"" at the end)."""

    stream: Stream


@dataclass(frozen=True)
class Close:
    stream: Stream


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """Call a progress callback (the async driver awaits it when it returns an awaitable)."""

    callback: Callable[[Any], Any]
    value: Any


Op = Send | Open | Read | Close | Sleep | Emit
Flow = Generator[Op, Any, T]


# -- configuration and per-client state -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    base_url: str
    key: str | None
    dialect: str = "native"
    timeout: float = 30.0  # per request (connect, read); long-polls add their wait to it
    headers: Mapping[str, str] = field(default_factory=dict)
    strategy: str = "auto"  # how wait() waits: auto | sse | long_poll | poll
    poll_interval: float = 1.0  # first polling interval (polling strategy), grows by `backoff_factor`
    max_poll_interval: float = 10.0
    backoff_factor: float = 1.6
    jitter: float = 0.2  # ± share of each interval, so that many clients do not poll in step
    long_poll_seconds: float = 30.0  # `?wait=` of each long-poll (mediarelay caps it at 60)
    max_retries: int = 5  # transient failures in a row (network, 429, 502-504) before giving up


@dataclass
class State:
    """What a client learns about its server: whether it is mediarelay (and which version)."""

    detected: bool = False
    server_version: str | None = None


def now() -> float:
    return time.monotonic()


class Backoff:
    """Exponential intervals with jitter; `reset` after progress."""

    def __init__(self, initial: float, maximum: float, factor: float, jitter: float) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self.current = initial

    def next(self) -> float:
        value = self.current * random.uniform(1 - self.jitter, 1 + self.jitter)
        self.current = min(self.maximum, self.current * self.factor)
        return max(0.0, value)

    def reset(self) -> None:
        self.current = self.initial


def backoff_for(cfg: Config) -> Backoff:
    return Backoff(cfg.poll_interval, cfg.max_poll_interval, cfg.backoff_factor, cfg.jitter)


# -- requests and answers ----------------------------------------------------------------------------


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def build(
    cfg: Config,
    method: str,
    target: str,
    *,
    spec: Spec | None = None,
    params: Any = None,  # a mapping or a list of pairs (repeated names)
    json: Any = None,
    data: Mapping[str, Any] | None = None,
    files: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float | None = None,
    auth: bool = True,
) -> httpx.Request:
    """A complete request (absolute URL, key, timeout); any httpx client can send it."""
    url = target if "://" in target else cfg.base_url + target
    merged = {"user-agent": USER_AGENT, "accept": "application/json", **cfg.headers, **(headers or {})}
    if auth and cfg.key:
        merged["authorization"] = cfg.key if spec is not None and spec.bare_key else f"Bearer {cfg.key}"
    limit = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout or cfg.timeout)
    return httpx.Request(
        method,
        url,
        params=params,
        json=json if files is None else None,
        data=data,
        files=files,
        headers=merged,
        extensions={"timeout": limit.as_dict()},
    )


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `Retry-After` (seconds or an HTTP date), else OpenAI's `openai-poll-after-ms`."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    ms = response.headers.get("openai-poll-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            return None
    return None


def decode(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def check(response: httpx.Response, dialect: str = "") -> Any:
    """The decoded JSON of a successful answer; raises the matching APIError otherwise."""
    body = decode(response)
    status = response.status_code
    if status >= 400:
        raise api_error(status, body, text=response.text, retry_after=retry_after(response), dialect=dialect)
    wrapped = wrapped_error(body)
    if wrapped is not None:
        effective, _, _ = wrapped
        raise api_error(effective, body, dialect=dialect)
    if body is None:
        raise ProtocolError(f"HTTP {status} from {response.request.url}: the answer is not JSON")
    return body


def result_of(spec: Spec, cfg: Config, response: httpx.Response) -> TaskResult:
    """A status/cancel answer as a TaskResult, with its ETag and the server's polling hint."""
    result = spec.parse(check(response, spec.name), cfg.base_url)
    return replace(result, etag=response.headers.get("etag"), poll_after=retry_after(response))


def send_retrying(cfg: Config, request: httpx.Request) -> Flow[httpx.Response]:
    """Send an idempotent request; retry network failures and 429/502/503/504 with backoff."""
    backoff = backoff_for(cfg)
    for attempt in range(cfg.max_retries + 1):
        last = attempt == cfg.max_retries
        try:
            response: httpx.Response = yield Send(request)
        except httpx.TransportError:
            if last:
                raise
            yield Sleep(backoff.next())
            continue
        if response.status_code in TRANSIENT and not last:
            yield Sleep(retry_after(response) or backoff.next())
            continue
        return response
    raise AssertionError("unreachable")  # pragma: no cover


def read_all(stream: Stream) -> Flow[bytes]:
    parts: list[bytes] = []
    while chunk := (yield Read(stream)):
        parts.append(chunk)
    yield Close(stream)
    return b"".join(parts)


def stream_error(stream: Stream, dialect: str = "") -> Flow[APIError]:
    """The APIError of a streamed error answer (its body read first)."""
    body = yield from read_all(stream)
    response = stream.response
    decoded = None
    with contextlib.suppress(orjson.JSONDecodeError):
        decoded = orjson.loads(body) if body else None
    return api_error(
        response.status_code,
        decoded,
        text=body.decode("utf-8", "replace"),
        retry_after=retry_after(response),
        dialect=dialect,
    )


# -- the simple operations ------------------------------------------------------------------------------


def detect(cfg: Config, state: State) -> Flow[bool]:
    """Is the server mediarelay? (`GET /healthz` answers with an `x-mediarelay-version` header.)"""
    if not state.detected:
        try:
            response: httpx.Response = yield Send(build(cfg, "GET", "/healthz", auth=False, timeout=10))
        except httpx.TransportError:
            return False  # unknown: ask again next time
        state.server_version = response.headers.get(VERSION_HEADER)
        state.detected = True
    return state.server_version is not None


def submit(
    cfg: Config,
    spec: Spec,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    files: Any = None,
) -> Flow[TaskResult]:
    """Never retried: a resent submit could create the task twice."""
    if files:
        form = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in body.items()}
        request = build(cfg, "POST", spec.submit_path, spec=spec, data=form, files=files, headers=headers)
    else:
        request = build(cfg, "POST", spec.submit_path, spec=spec, json=dict(body), headers=headers)
    response: httpx.Response = yield Send(request)
    result = spec.submitted(check(response, spec.name), cfg.base_url)
    return replace(result, etag=response.headers.get("etag"))


def get(
    cfg: Config, spec: Spec, task_id: str, *, headers: Mapping[str, str] | None = None
) -> Flow[TaskResult]:
    path, params = spec.status_target(task_id)
    request = build(cfg, "GET", path, spec=spec, params=params, headers=headers)
    response = yield from send_retrying(cfg, request)
    return result_of(spec, cfg, response)


def cancel(cfg: Config, spec: Spec, task_id: str) -> Flow[TaskResult]:
    """Cancel is idempotent (a finished task is returned unchanged), so it may be retried."""
    path, params = spec.cancel_target(task_id)
    response = yield from send_retrying(cfg, build(cfg, "POST", path, spec=spec, params=params))
    return result_of(spec, cfg, response)


def list_tasks(
    cfg: Config,
    *,
    limit: int = 20,
    after: str | None = None,
    status: Sequence[str] = (),
    dialect: str | None = None,
    model: str | None = None,
    order: str = "desc",
) -> Flow[TaskPage]:
    """`GET /v1/tasks` (mediarelay's native API): the key's tasks of every dialect, newest first."""
    params: list[tuple[str, str]] = [("limit", str(limit)), ("order", order)]
    params += [("status", s) for s in status]
    for name, value in (("after", after), ("dialect", dialect), ("model", model)):
        if value:
            params.append((name, value))
    response = yield from send_retrying(cfg, build(cfg, "GET", "/v1/tasks", params=params))
    body = check(response, "native")
    page = NativeTaskList.model_validate(body)
    items = tuple(parse_native(item, cfg.base_url) for item in body.get("data") or ())
    return TaskPage(data=items, has_more=page.has_more, first_id=page.first_id, last_id=page.last_id)
