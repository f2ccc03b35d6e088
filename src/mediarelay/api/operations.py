"""Operations endpoints for load balancers, orchestrators and Prometheus (docs/operations.md).

- `/healthz`: liveness. The process answers; nothing else is checked (a database outage must not make an
  orchestrator restart every node).
- `/readyz`: readiness. A trivial query on the database and a write + delete of a tiny probe object in
  result storage, each bounded by `READY_TIMEOUT`. A check that hangs is not started again while it
  still runs (probes must not pile up threads on a stuck disk or bucket); callers wait for the running one.
- `/metrics`: Prometheus text format, from the app's own registry (`api/metrics.py`).

None of them needs an API key. Failure details name the exception type only: the full error goes to the
log, not to whoever can reach the port.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse

from mediarelay import __version__
from mediarelay.api.metrics import Metrics
from mediarelay.storage.base import Storage
from mediarelay.store.database import Database

log = logging.getLogger("mediarelay.operations")

READY_TIMEOUT = 3.0  # seconds each readiness check may take
PROBE_BODY = b"mediarelay readiness probe\n"

router = APIRouter(tags=["Operations"])


def check_database(db: Database) -> None:
    """One round trip to the database. Blocking."""
    with db.read() as conn:
        conn.execute(text("SELECT 1")).scalar()


def check_storage(storage: Storage) -> None:
    """Write a tiny probe object through the storage interface, see it, delete it. Blocking. A unique
    top-level name per probe: removing it never races another node's probe."""
    key = f"readyz-{uuid.uuid4().hex}/probe.txt"
    staging = storage.new_staging_path(".probe")
    try:
        staging.write_bytes(PROBE_BODY)
        size, _ = storage.put(key, staging)
        if size != len(PROBE_BODY) or not storage.exists(key):
            raise RuntimeError("the probe object was not stored")
    finally:
        staging.unlink(missing_ok=True)
        try:
            storage.remove(key)
        except Exception:
            log.warning("readyz: could not remove the probe object %s", key, exc_info=True)


class Readiness:
    """The readiness checks of one app, each run by at most one thread at a time."""

    def __init__(self, checks: dict[str, Callable[[], None]], timeout: float = READY_TIMEOUT) -> None:
        self.checks = checks
        self.timeout = timeout
        self._running: dict[str, asyncio.Task[None]] = {}

    async def _one(self, name: str) -> dict[str, Any]:
        running = self._running.get(name)
        if running is None or running.done():
            running = self._running[name] = asyncio.ensure_future(asyncio.to_thread(self.checks[name]))
        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(running), self.timeout)
        except TimeoutError:
            log.warning("readyz: the %s check took longer than %g s", name, self.timeout)
            return {"status": "failed", "error": f"no answer within {self.timeout:g} s"}
        except Exception as exc:
            log.warning("readyz: the %s check failed", name, exc_info=True)
            return {"status": "failed", "error": type(exc).__name__}
        return {"status": "ok", "seconds": round(time.perf_counter() - start, 4)}

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(n) for n in names))
        found = dict(zip(names, results, strict=True))
        return all(r["status"] == "ok" for r in results), found


def _readiness(request: Request) -> Readiness:
    state = request.app.state
    found: Readiness | None = getattr(state, "readiness", None)
    if found is None:
        svc = state.services
        found = state.readiness = Readiness(
            {"database": lambda: check_database(svc.db), "storage": lambda: check_storage(svc.storage)}
        )
    return found


@router.get("/healthz", summary="Liveness")
async def healthz(response: Response) -> dict[str, str]:
    # Tells clients (mediarelay.client) that they may long-poll and stream events here.
    response.headers["x-mediarelay-version"] = __version__
    return {"status": "ok"}


READY_EXAMPLE = {"status": "ready", "checks": {"database": {"status": "ok", "seconds": 0.001}}}
UNREADY_EXAMPLE = {"status": "unready", "checks": {"storage": {"status": "failed", "error": "OSError"}}}


@router.get(
    "/readyz",
    summary="Readiness: database and storage reachable",
    responses={
        200: {
            "description": "Every check passed.",
            "content": {"application/json": {"example": READY_EXAMPLE}},
        },
        503: {
            "description": "A check failed or timed out; `checks` says which.",
            "content": {"application/json": {"example": UNREADY_EXAMPLE}},
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    ok, checks = await _readiness(request).run()
    body = {"status": "ready" if ok else "unready", "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503, headers={"cache-control": "no-store"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format.", "content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    found: Metrics = request.app.state.metrics
    await found.collector.refresh()
    return Response(generate_latest(found.registry), media_type=CONTENT_TYPE_LATEST)
