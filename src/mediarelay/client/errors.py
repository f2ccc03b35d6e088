"""The client's exceptions: one small hierarchy, whatever dialect's envelope the error came in.

Every dialect wraps errors differently (`{"error": {...}}`, `{"code": "<word>", "message"}`, face swap's
`{"code": 800, "msg"}` with HTTP 200); `api_error` reads all of them and picks the class from the HTTP
status — or, for face swap, from the documented code in the body.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediarelay.client.results import TaskResult


class MediarelayClientError(Exception):
    """Base class of everything this client raises."""


class UsageError(MediarelayClientError, ValueError):
    """The call itself cannot be made (e.g. an avatar submit without an audio URL); nothing was sent."""


class APIConnectionError(MediarelayClientError):
    """The server could not be reached or the connection broke (after the client's own retries)."""


class ProtocolError(MediarelayClientError):
    """The server answered, but not in the dialect's documented shape (wrong base URL or dialect?)."""


class APIError(MediarelayClientError):
    """The server answered with an error; `status` is the HTTP status (face swap: the implied one)."""

    def __init__(
        self, message: str, *, status: int, code: str | int | None = None, body: Any = None, dialect: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.dialect = dialect

    def __str__(self) -> str:
        code = f" {self.code}" if self.code not in (None, "") else ""
        return f"HTTP {self.status}{code}: {self.message}"


class BadRequestError(APIError):
    """400 / 413 / 422, face swap 800: the request was refused and nothing was created."""


class AuthenticationError(APIError):
    """401: missing, unknown or revoked key."""


class PermissionDeniedError(APIError):
    """403."""


class InsufficientQuotaError(APIError):
    """402: the key's balance does not cover the task."""


class NotFoundError(APIError):
    """404, face swap 900: no such task (or someone else's: the answer is the same)."""


class ConflictError(APIError):
    """409."""


class RateLimitError(APIError):
    """429; `retry_after` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx, face swap 510."""


class TaskFailedError(MediarelayClientError):
    """The task ended failed; `task` is its last result (`task.error` says why)."""

    def __init__(self, task: TaskResult) -> None:
        reason = task.error.message if task.error else "no reason given"
        super().__init__(f"task {task.id} {task.status}: {reason}")
        self.task = task


class TaskCanceledError(TaskFailedError):
    """The task was canceled before it finished."""


class WaitTimeoutError(MediarelayClientError, builtins.TimeoutError):
    """`wait()` ran out of time; the task goes on. `task` is the last result seen (None if none was)."""

    def __init__(self, message: str, task: TaskResult | None) -> None:
        super().__init__(message)
        self.task = task


class DownloadError(MediarelayClientError):
    """A download could not complete (the partial file is kept for a later resume)."""


class IntegrityError(DownloadError):
    """The downloaded bytes do not match the size or SHA-256 the server published (the file is removed)."""


BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientQuotaError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}
# Face swap answers most errors with HTTP 200 and the provider's code in the body (docs/dialects.md).
FACESWAP_CODES: dict[int, int] = {800: 400, 900: 404, 510: 500}


def envelope(body: Any) -> tuple[str, str | int | None] | None:
    """(message, code) from any of the dialects' error envelopes, or None if `body` is not one."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"], err.get("code") or err.get("type")
    if "code" in body and ("message" in body or "msg" in body):
        message = body.get("message") or body.get("msg") or ""
        return str(message), body["code"]
    return None


def wrapped_error(body: Any) -> tuple[int, str, str | int | None] | None:
    """A 2xx answer that is an error all the same: a `{code, msg|message, data}` wrapper whose code is not
    success (face swap's 800/900/510, an avatar wrapper with a code word other than "success")."""
    if not isinstance(body, dict) or "code" not in body or not ("msg" in body or "message" in body):
        return None
    code = body["code"]
    if code in (200, "success"):
        return None
    message = str(body.get("msg") or body.get("message") or "error")
    if isinstance(code, int) and not isinstance(code, bool):
        return FACESWAP_CODES.get(code, code if 400 <= code < 600 else 500), message, code
    return 400, message, code


def api_error(
    status: int, body: Any, *, text: str = "", retry_after: float | None = None, dialect: str = ""
) -> APIError:
    """The exception for an error answer (`body` decoded JSON, or None with the raw `text`)."""
    found = envelope(body)
    message, code = found if found else ((text.strip()[:300] or f"HTTP {status}"), None)
    cls = BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    if cls is RateLimitError:
        return RateLimitError(
            message, retry_after=retry_after, status=status, code=code, body=body, dialect=dialect
        )
    return cls(message, status=status, code=code, body=body, dialect=dialect)


__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DownloadError",
    "InsufficientQuotaError",
    "IntegrityError",
    "MediarelayClientError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "TaskCanceledError",
    "TaskFailedError",
    "UsageError",
    "WaitTimeoutError",
]
