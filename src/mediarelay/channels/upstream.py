"""HTTP to one configured upstream, shared by every relay channel type.

Every request goes through the one outbound fetcher (`netguard.NetGuard`), carries the credential that
was recorded on the task when it was submitted, and is classified the same way for every type:

| what happened                                      | submit                   | poll / cancel        |
|----------------------------------------------------|--------------------------|----------------------|
| not sent (connect error, DNS, address not allowed) | retry elsewhere          | keep waiting         |
| sent, then timeout / reset / cut-off / unreadable  | `SubmitUnknown`          | keep waiting         |
| 504 (a gateway timed out waiting for the upstream) | `SubmitUnknown`          | keep waiting         |
| 429 (Retry-After honoured)                         | retry elsewhere after it | keep waiting so long |
| other 5xx, 401, 403; 404/405 on submit             | retry elsewhere          | keep waiting         |
| other 4xx                                          | the task fails           | the task fails       |

Channel health is fed from here: good answers close the breaker, network/5xx failures count towards
opening it, 429 pauses submits without counting as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, SubmitUnknown
from mediarelay.channels.health import ChannelHealth, secret_of
from mediarelay.domain import Status, Task, TaskError, now_ms
from mediarelay.netguard import Blocked, NetGuard, TooLarge, Unresolvable

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # an API answer (not a result file) larger than this is refused
MAX_RATE_WAIT = 5.0  # a poll waits this long at most for a rate-limit token, then tries later
Model = TypeVar("Model", bound=BaseModel)
LOST_AFTER_MS = 60_000  # an upstream that still does not know a task this long after its submit lost it
NOT_FOUND = frozenset({404})
SANDBOX_HEADERS = {
    "fail": "X-Sandbox-Fail",
    "duration": "X-Sandbox-Duration",
    "queue": "X-Sandbox-Queue",
    "output_seconds": "X-Sandbox-Output-Seconds",
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes


def retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), capped at an hour."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(3600.0, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(3600.0, max(0.0, when.timestamp() - time.time()))


def upstream_message(body: bytes) -> str:
    """The human message of an upstream error in any of the dialects' envelopes, else the body's start."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty answer)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "msg", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    return body[:200].decode("utf-8", "replace")


def lost(task: Task, channel: str) -> PollResult:
    """A poll answered 404: right after the submit an upstream may not show the task yet (keep waiting);
    a minute later it has lost it, and the task fails."""
    if now_ms() - (task.started_at or task.created_at) < LOST_AFTER_MS:
        return PollResult(status=None)
    return PollResult(
        status=Status.FAILED,
        error_code="upstream_lost",
        error_message=f"channel {channel}: the upstream no longer knows task {task.upstream_id}",
    )


def sandbox_headers(task: Task) -> dict[str, str]:
    """The task's sandbox controls (X-Sandbox-* on the original submit), passed on [MR]: an upstream
    that is a mediarelay with a sandbox behaves as asked; any other upstream ignores the headers."""
    controls: dict[str, Any] = task.params.get("sandbox") or {}
    out: dict[str, str] = {}
    for name, header in SANDBOX_HEADERS.items():
        if name in controls:
            value = controls[name]
            out[header] = "1" if value is True else str(value)
    return out


class Upstream:
    """One configured upstream: base URL, credentials, timeouts, health, the fetcher."""

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        if not config.base_url:
            raise ValueError(f"channel {config.name!r}: type {config.type!r} needs a base_url")
        if deps.guard is None:
            raise ValueError(f"channel {config.name!r}: no outbound fetcher configured")
        for i, ref in enumerate(config.credentials):
            if ref.startswith("secret:"):
                if ref[7:] not in config.secrets:  # only admin-API channels store secrets
                    raise ValueError(f"channel {config.name!r}: credential {ref!r} names no stored secret")
            elif not ref.startswith("env:") or len(ref) < 5:  # not echoed: it may be a pasted secret
                raise ValueError(
                    f"channel {config.name!r}: credential {i} is no 'env:NAME' or 'secret:LABEL' reference"
                )
        self.config = config
        self.guard: NetGuard = deps.guard
        self.health = deps.health or ChannelHealth.create(
            threshold=config.breaker_failures,
            cooldown=config.breaker_cooldown_seconds,
            rate=config.rate_limit,
            burst=config.rate_burst,
        )
        self.base = config.base_url.rstrip("/")
        self.max_result_bytes = config.max_result_bytes or deps.max_result_bytes
        self.fetch_timeout = deps.fetch_timeout

    @property
    def name(self) -> str:
        return self.config.name

    def url(self, path: str) -> str:
        return self.base + path

    def auth(self, task: Task) -> dict[str, str]:
        """The Authorization header for the credential recorded on the task (never another one)."""
        ref = (task.upstream or {}).get("credential")
        if not ref:
            return {}
        secret = secret_of(str(ref), self.config.secrets)
        if secret is None:
            raise TaskError(
                "credential_missing",
                f"channel {self.name}: credential {ref} (the one this task was submitted with) is not set",
                retryable=True,
            )
        return {"authorization": f"Bearer {secret}"}

    async def _token(self, kind: str) -> None:
        """Rate limit for requests other than submits (the engine reserves a submit's token itself)."""
        if kind == "submit":
            return
        waited = 0.0
        while (wait := self.health.bucket.take()) > 0:
            if waited + wait > MAX_RATE_WAIT:
                raise TaskError(
                    "rate_limited",
                    f"channel {self.name}: over its rate limit",
                    retryable=True,
                    retry_after=wait,
                )
            await asyncio.sleep(wait)
            waited += wait

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        task: Task,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Reply:
        """One request (`kind`: submit | poll | cancel). Returns 2xx answers and any status in `accept`;
        raises `TaskError` / `SubmitUnknown` for everything else, as the module docstring's table says.
        Each refusal is counted by (kind, code) in the channel's health record (exported by /metrics)."""
        with self._counting(kind):
            submit = kind == "submit"
            if timeout is None:
                timeout = self.config.submit_timeout_seconds if submit else self.config.poll_timeout_seconds
            hdrs = {"accept": "application/json", **self.auth(task), **(headers or {})}
            content = None
            if json is not None:
                content = orjson.dumps(json)
                hdrs["content-type"] = "application/json"
            await self._token(kind)
            where = f"channel {self.name}: {method} {path}"
            try:
                got = await self.guard.request(
                    method,
                    self.url(path),
                    content=content,
                    headers=hdrs,
                    timeout=timeout,
                    max_bytes=MAX_ANSWER_BYTES,
                )
            except Blocked as exc:
                self.health.failed(str(exc))
                raise TaskError("upstream_blocked", f"{where}: {exc}", retryable=True) from None
            except (
                Unresolvable,
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.PoolTimeout,
                httpx.WriteError,
                httpx.WriteTimeout,
            ) as exc:
                # Nothing reached the upstream (or not all of the request): safe to send again.
                message = f"{where}: not reachable ({_describe(exc)})"
                self.health.failed(message)
                raise TaskError("upstream_unreachable", message, retryable=True) from None
            except (TimeoutError, httpx.TimeoutException) as exc:
                message = f"{where}: no answer within {timeout:g} s"
                self.health.failed(message)
                raise (
                    SubmitUnknown(message)
                    if submit
                    else TaskError("upstream_timeout", message, retryable=True)
                ) from exc
            except (httpx.HTTPError, TooLarge) as exc:
                message = f"{where}: the answer was cut off or unreadable ({_describe(exc)})"
                self.health.failed(message)
                raise (
                    SubmitUnknown(message) if submit else TaskError("upstream_error", message, retryable=True)
                ) from None
            reply = Reply(got.status, got.headers, got.body)
            status = got.status
            if 200 <= status < 300 or status in accept:
                self.health.ok()
                return reply
            message = f"{where}: HTTP {status}: {upstream_message(got.body)}"
            if status == 429:
                wait = retry_after(got.headers) or 5.0
                self.health.throttled(wait, message)
                raise TaskError("upstream_rate_limited", message, retryable=True, retry_after=wait)
            if status >= 500 or status in (401, 403) or (submit and status in (404, 405)):
                self.health.failed(message)
                if submit and status == 504:  # a gateway gave up waiting for the upstream: it may have it
                    raise SubmitUnknown(message)
                raise TaskError(
                    "upstream_error", message, retryable=True, retry_after=retry_after(got.headers)
                )
            self.health.ok()
            raise TaskError("upstream_rejected", message)

    @contextlib.contextmanager
    def _counting(self, kind: str) -> Iterator[None]:
        """Count each refusal by (kind, code) in the channel's health record (exported by /metrics)."""
        try:
            yield
        except TaskError as exc:
            self.health.errors[(kind, exc.code)] += 1
            raise

    def parse(self, model: type[Model], reply: Reply, *, kind: str) -> Model:
        """The answer as the dialect's (tolerant) response model; an unreadable answer to a submit is
        `SubmitUnknown` (the upstream may have taken the task), to anything else a retryable error."""
        try:
            return model.model_validate_json(reply.body)
        except ValidationError as exc:
            message = f"channel {self.name}: unreadable {kind} answer ({_first_error(exc)})"
            self.health.failed(message)
            if kind == "submit":
                raise SubmitUnknown(message) from None
            raise TaskError("bad_answer", message, retryable=True) from None

    def json(self, reply: Reply, *, kind: str) -> Any:
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            message = f"channel {self.name}: unreadable {kind} answer (not JSON)"
            self.health.failed(message)
            if kind == "submit":
                raise SubmitUnknown(message) from None
            raise TaskError("bad_answer", message, retryable=True) from None

    async def download(self, task: Task, output: Output, dest: Path) -> None:
        """Stream a result file into `dest` through the fetcher (size cap, time limit, redirects
        re-checked). The credential goes along only to the upstream's own origin."""
        url = output.url
        if not url:
            raise TaskError("no_output", "the upstream gave no URL for a result")
        headers = self.auth(task) if _same_origin(url, self.base) else {}
        try:
            got = await self.guard.download(
                url, dest, headers=headers, timeout=self.fetch_timeout, max_bytes=self.max_result_bytes
            )
        except TooLarge as exc:
            raise TaskError("result_too_large", f"result {url}: {exc}") from None
        except Blocked as exc:
            raise TaskError("result_blocked", f"result {url}: {exc}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise TaskError(
                "result_fetch_failed",
                f"result {url}: not downloaded within {self.fetch_timeout:g} s",
                retryable=True,
            ) from None
        except (Unresolvable, httpx.HTTPError) as exc:
            raise TaskError(
                "result_fetch_failed", f"result {url}: {_describe(exc)}", retryable=True
            ) from None
        if got.status in (401, 403, 404, 410):
            raise TaskError(
                "result_expired",
                f"result {url}: HTTP {got.status} (the upstream's URL may have expired)",
                retryable=True,
            )
        if not 200 <= got.status < 300:
            raise TaskError("result_fetch_failed", f"result {url}: HTTP {got.status}", retryable=True)
        if got.size == 0:
            dest.unlink(missing_ok=True)
            raise TaskError("result_empty", f"result {url}: the file is empty", retryable=True)
        expected = output.spec.get("sha256")
        if expected and expected != got.sha256:
            dest.unlink(missing_ok=True)
            raise TaskError(
                "result_corrupt", f"result {url}: SHA-256 {got.sha256} instead of {expected}", retryable=True
            )


def _same_origin(url: str, base: str) -> bool:
    try:
        a, b = httpx.URL(url), httpx.URL(base)
    except httpx.InvalidURL:
        return False
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))
