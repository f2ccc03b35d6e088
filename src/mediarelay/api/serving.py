"""Running the app under an HTTP server: granian by default (its native interface, RSGI, with the ASGI
app behind it: `api/rsgi.py`), uvicorn as the alternative (ASGI).

Both run in this process (granian through its embedded server) so the services built by `serve`
(database, engine, driver) are the ones the app uses, and SIGTERM/SIGINT stop them gracefully: the
listener closes, requests in flight finish (long-polls are cut after `GRACE_SECONDS`), and the app's
lifespan stops the services, leaving every step resumable from the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
from collections.abc import Callable
from types import FrameType

from starlette.types import ASGIApp

from mediarelay.api.app import Apps
from mediarelay.config import Settings
from mediarelay.logs import GRANIAN_JSON_CONFIG

GRACE_SECONDS = 10
BACKLOG = 2048  # many clients connect at once (pollers after a restart); the kernel caps it anyway


def run(apps: Apps, settings: Settings, drain: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT; `drain` runs first on the signal (it answers held long-polls)."""
    # Everything built so far (the app, its routes and schemas, the dialects' models) lives as long as
    # the process: keep it out of the garbage collector's full passes, which otherwise walk it all and
    # stall every request in flight (the status path's p99 under many connections).
    gc.collect()
    gc.freeze()
    raise_open_files(settings.max_requests_in_flight + 1024)
    if settings.server == "uvicorn":
        run_uvicorn(apps.asgi, settings, drain)
    else:
        run_granian(apps, settings, drain)


def raise_open_files(wanted: int) -> None:
    """Every connection is a file descriptor: lift the soft limit towards `wanted` (never above the hard
    limit an operator set), as nginx's worker_rlimit_nofile does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_uvicorn(app: ASGIApp, settings: Settings, drain: Callable[[], None]) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            drain()
            super().handle_exit(sig, frame)

    # JSON logs: no dictConfig of uvicorn's own, its loggers propagate to the root handler (logs.py).
    json_logs = {"log_config": None} if settings.log_format == "json" else {}
    config = uvicorn.Config(
        app,
        **json_logs,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_SECONDS,
        backlog=BACKLOG,
        limit_concurrency=settings.max_requests_in_flight,  # over it uvicorn answers 503 at once
    )
    Server(config).run()


def run_granian(apps: Apps, settings: Settings, drain: Callable[[], None]) -> None:
    from asgi_lifespan import LifespanManager
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    server = Server(
        apps.rsgi,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        http=HTTPModes.http1,
        backlog=BACKLOG,
        backpressure=settings.max_requests_in_flight,
        log_access=settings.access_log,
        log_level="info",  # type: ignore[arg-type]  # granian accepts the level's name
        log_dictconfig=GRANIAN_JSON_CONFIG if settings.log_format == "json" else None,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            drain()
            server.stop()  # type: ignore[no-untyped-call]

        # RSGI has no lifespan: the ASGI app's (services start, then stop once the server has) runs here.
        async with LifespanManager(apps.asgi, startup_timeout=None, shutdown_timeout=None):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
            await server.serve()

    logging.getLogger("mediarelay").info("serving with granian on %s:%s", settings.host, settings.port)
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it the default loop works too
        asyncio.run(main())
    else:
        uvloop.run(main())
