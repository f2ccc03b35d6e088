"""What every submit endpoint does before it parses anything into a task: the key's request-rate limit
and the `Idempotency-Key` header (docs/billing.md).

A retried submit with the same key and the same request gets the original task (no new task, no second
charge); the same key with a different request is a conflict, as with Stripe's idempotency keys.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mediarelay.api.services import Services
from mediarelay.dialects.base import Dialect
from mediarelay.domain import Task, TaskSpec, invalid
from mediarelay.store.keys import ApiKey
from mediarelay.store.tasks import Idempotency

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
# Request headers that change what a submit does, so they are part of what "the same request" means.
SIGNIFICANT_HEADERS = ("x-webhook-url",)
SIGNIFICANT_PREFIX = "x-sandbox-"
REPLAYED = {"Idempotent-Replayed": "true"}
# The header in the OpenAPI document of every submit endpoint.
IDEMPOTENCY_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
            "description": "a retry with the same key and request returns the original task and charges once",
        }
    ]
}


def fingerprint(
    method: str,
    path: str,
    query: str,
    body: Any,
    headers: Mapping[str, str],
    files: Sequence[tuple[str, str, str]] = (),
) -> str:
    """A digest of everything that makes a submit what it is: where it went, its (canonical) body, the
    headers that steer it, and the digests of uploaded files."""
    doc = {
        "method": method,
        "path": path,
        "query": query,
        "body": body,
        "headers": {
            h: v for h, v in headers.items() if h in SIGNIFICANT_HEADERS or h.startswith(SIGNIFICANT_PREFIX)
        },
        "files": [list(f) for f in files],
    }
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def json_body(raw: bytes) -> Any:
    """A JSON body in canonical form (key order and spacing do not matter), else its digest."""
    try:
        return orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        return {"sha256": hashlib.sha256(raw).hexdigest()}


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    raw = headers.get(HEADER)
    if raw is None:
        return None
    value = raw.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable() or not value.isascii():
        raise invalid(f"Idempotency-Key: 1 to {MAX_KEY_LENGTH} printable ASCII characters", "Idempotency-Key")
    return value


async def admit(
    svc: Services,
    request: Request,
    key: ApiKey,
    body: Any = None,
    files: Sequence[tuple[str, str, str]] = (),
) -> tuple[Task | None, Idempotency | None]:
    """Count the submit against the key's rate (429 when over), then resolve its `Idempotency-Key`:
    (the original task if this is a replay, the idempotency to store with a new task). `body` is the
    parsed body (default: the raw body read as JSON); `files` (field, file name, sha256) of uploads."""
    idem_key = idempotency_key(request.headers)
    await svc.billing.admit(key.id)
    if idem_key is None:
        return None, None
    if body is None:
        body = json_body(await request.body())
    digest = fingerprint(
        request.method,
        request.url.path,
        request.url.query,
        body,
        {k.lower(): v for k, v in request.headers.items()},
        files,
    )
    idem = Idempotency(key=idem_key, fingerprint=digest, ttl_ms=svc.billing.idempotency_ms)
    original = await asyncio.to_thread(svc.tasks.replay, key.id, idem)
    return original, idem


async def submit_admitted(
    svc: Services, dialect: Dialect, request: Request, key: ApiKey, spec: Callable[[], TaskSpec]
) -> tuple[Any, Mapping[str, str]]:
    """A JSON submit after its checks: admission (`admit`), then the original task for a replay or the
    new one (`spec` is built after admission, as the route always did). Returns the answer's payload and
    extra headers; the FastAPI route and the thin path (api/fastsubmit.py) both answer with it."""
    original, idem = await admit(svc, request, key)
    if original is not None:
        return dialect.accepted(original), REPLAYED
    task = await svc.engine.submit(spec(), key.id, idempotency=idem)
    return dialect.accepted(task), {}


async def file_digests(files: Sequence[tuple[str, UploadFile]]) -> list[tuple[str, str, str]]:
    """(field, file name, sha256) of each uploaded file, for the fingerprint; the files stay readable."""

    def digest(upload: UploadFile) -> str:
        upload.file.seek(0)
        sha = hashlib.sha256()
        for chunk in iter(lambda: upload.file.read(1 << 20), b""):
            sha.update(chunk)
        upload.file.seek(0)
        return sha.hexdigest()

    return [(name, f.filename or "", await asyncio.to_thread(digest, f)) for name, f in files]
