"""The ASGI application: FastAPI for everything documented, a thin fast path in front for status GETs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp

from mediarelay import __version__
from mediarelay.api import account, admin, admin_channels, files, native, openapi, operations, webhooks
from mediarelay.api.fastpath import FastStatus
from mediarelay.api.fastsubmit import FastSubmit
from mediarelay.api.limits import BodyLimit
from mediarelay.api.metrics import instrument
from mediarelay.api.routes import dialect_router
from mediarelay.api.rsgi import RsgiFront
from mediarelay.api.services import Services
from mediarelay.config import Settings
from mediarelay.dialects import DIALECTS
from mediarelay.logs import RequestId
from mediarelay.web import router as admin_ui


@dataclass(frozen=True)
class Apps:
    """The app for ASGI servers, and the same app behind granian's native interface (`api/rsgi.py`)."""

    asgi: ASGIApp
    rsgi: RsgiFront


def create_app(settings: Settings | None = None, services: Services | None = None) -> ASGIApp:
    """Build the app; the services (database, engine, driver) start and stop with its lifespan."""
    return create_apps(settings, services).asgi


def create_apps(settings: Settings | None = None, services: Services | None = None) -> Apps:
    """Build the app in both interfaces; the services start and stop with the ASGI app's lifespan."""
    svc = services or Services.build(settings or Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    api = FastAPI(
        title="mediarelay",
        version=__version__,
        description="Self-hosted gateway for asynchronous AI media-generation tasks.",
        lifespan=lifespan,
    )
    api.state.services = svc
    svc.errors.install(api)
    openapi.install(api, svc.errors)  # the error answers in /openapi.json, by path like the renderer
    api.include_router(native.router)  # before the generated routes: /v1/tasks/{id}/events is specific
    for dialect in DIALECTS:
        api.include_router(dialect_router(dialect))
    api.include_router(files.router)
    api.include_router(webhooks.router)
    api.include_router(admin_channels.router)  # relay channels: config, health, limits (admin keys)
    api.include_router(admin.router)  # keys, balances, top-ups, ledgers, usage, prices (admin keys)
    api.include_router(account.router)  # the caller's own balance, usage and ledger
    api.include_router(admin_ui)  # the admin web UI at /admin (server-rendered pages)
    api.include_router(operations.router)  # /healthz, /readyz, /metrics

    # Outermost last: the metrics layer times everything; status GETs are answered before any framework
    # code runs.
    app: ASGIApp = BodyLimit(FastSubmit(api, svc, DIALECTS), svc.errors, svc.settings.max_body_bytes)
    # The request id layer is outside everything, so every log line of a request carries its id.
    fast = FastStatus(app, svc.status, DIALECTS)
    asgi = RequestId(instrument(fast, api.state, svc.db, svc.channels))
    return Apps(asgi, RsgiFront(asgi, fast, api.state.metrics.http.series))
