"""Validation and id helpers every dialect shares."""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, ValidationError

from mediarelay.domain import ErrorKind, MediarelayError, invalid

MAX_URL = 4096
MAX_INLINE_MEDIA = 20 * 1024 * 1024  # decoded bytes of a base64 upload
MAX_PROMPT = 8000


def check_url(value: str) -> str:
    """An http(s) URL with a host. Form only: fetching (and SSRF checks) is the fetching channel's job."""
    value = value.strip()
    if len(value) > MAX_URL:
        raise ValueError(f"URL longer than {MAX_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if any(c.isspace() for c in value):
        raise ValueError("URL must not contain white space")
    return value


def check_url_or_base64(value: str) -> str:
    """A URL, a `data:` URI, or bare base64 of at most MAX_INLINE_MEDIA bytes."""
    value = value.strip()
    if value.startswith(("http://", "https://")):
        return check_url(value)
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if len(payload) * 3 // 4 > MAX_INLINE_MEDIA:
        raise ValueError(f"inline media larger than {MAX_INLINE_MEDIA} bytes")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be an http(s) URL or base64 data") from None
    if not payload:
        raise ValueError("must be an http(s) URL or base64 data")
    return value


def check_prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_PROMPT:
        raise ValueError(f"longer than {MAX_PROMPT} characters")
    return value


Url = Annotated[str, AfterValidator(check_url)]
UrlOrBase64 = Annotated[str, AfterValidator(check_url_or_base64)]
Prompt = Annotated[str, AfterValidator(check_prompt)]


def describe(exc: ValidationError | list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable sentence from pydantic's errors, plus the first offending parameter."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    parts = []
    first: str | None = None
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        first = first or loc or None
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request", first


def validation_error(exc: ValidationError | list[dict[str, Any]]) -> MediarelayError:
    message, param = describe(exc)
    return invalid(message, param)


# OpenAI-style error types, used by the dialects whose envelope is `{"error": {...}}` and by paths no
# dialect owns. One table, so every such dialect names the same failure the same way.
OPENAI_ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.UNAUTHORIZED: "authentication_error",
    ErrorKind.FORBIDDEN: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.CONFLICT: "conflict_error",
    ErrorKind.TOO_LARGE: "invalid_request_error",
    ErrorKind.INSUFFICIENT_QUOTA: "insufficient_quota",
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.UNAVAILABLE: "server_error",
    ErrorKind.INTERNAL: "server_error",
}


def openai_style_error(err: MediarelayError, *, with_param: bool = False) -> tuple[int, Any]:
    """`{"error": {message, type[, param], code}}` with the error's HTTP status; `code` is the error kind."""
    body: dict[str, Any] = {"message": err.message, "type": OPENAI_ERROR_TYPES[err.kind]}
    if with_param:
        body["param"] = err.param
    body["code"] = err.kind.value
    return err.http_status, {"error": body}


def hex_id(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


def uuid_id() -> str:
    return str(uuid.uuid4())


def object_id(task_id: str) -> str:
    """A 24-hex "object id" (timestamp + randomness) derived from the task's ULID, stable forever."""
    from ulid import ULID

    raw = bytes(ULID.from_str(task_id))
    seconds = int.from_bytes(raw[:6], "big") // 1000
    return (seconds.to_bytes(4, "big") + raw[8:16]).hex()


def seed_of(task_id: str) -> int:
    """A stable 32-bit seed for a task (the dialects publish one)."""
    from ulid import ULID

    return int.from_bytes(bytes(ULID.from_str(task_id))[-4:], "big")
