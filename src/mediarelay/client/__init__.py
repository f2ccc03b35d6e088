"""A Python client for mediarelay and for the aggregator APIs whose dialects it speaks.

`Client` (blocking) and `AsyncClient` (asyncio) share one sans-I/O core (`core.py`): submit, get, wait
(server-sent events / long-polls on mediarelay, polling with backoff elsewhere), cancel, download with
resume, and typed results (`TaskResult`) for every dialect. See docs/client.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediarelay.client.aio import AsyncClient
    from mediarelay.client.dialects import SPECS, spec_for
    from mediarelay.client.errors import (
        APIConnectionError,
        APIError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        DownloadError,
        InsufficientQuotaError,
        IntegrityError,
        MediarelayClientError,
        NotFoundError,
        PermissionDeniedError,
        ProtocolError,
        RateLimitError,
        ServerError,
        TaskCanceledError,
        TaskFailedError,
        UsageError,
        WaitTimeoutError,
    )
    from mediarelay.client.results import DownloadProgress, Output, TaskError, TaskPage, TaskResult
    from mediarelay.client.sync import Client

    DIALECTS: tuple[str, ...]

# Imported on first use: the `mediarelay` CLI registers the client commands without paying for the
# dialect models and httpx on every invocation (`mediarelay keys list` needs neither).
_HOMES = {
    "AsyncClient": "aio",
    "Client": "sync",
    "SPECS": "dialects",
    "spec_for": "dialects",
    "DownloadProgress": "results",
    "Output": "results",
    "TaskError": "results",
    "TaskPage": "results",
    "TaskResult": "results",
}


def __getattr__(name: str) -> Any:
    if name == "DIALECTS":
        return tuple(importlib.import_module("mediarelay.client.dialects").SPECS)
    module = _HOMES.get(name, "errors" if name.endswith("Error") else None)
    if module is None or name not in __all__:
        raise AttributeError(f"module 'mediarelay.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mediarelay.client.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DIALECTS",
    "SPECS",
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "DownloadError",
    "DownloadProgress",
    "InsufficientQuotaError",
    "IntegrityError",
    "MediarelayClientError",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "TaskPage",
    "TaskResult",
    "UsageError",
    "WaitTimeoutError",
    "spec_for",
]
