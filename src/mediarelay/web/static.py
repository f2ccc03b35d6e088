"""The admin UI's own static files (vendored htmx, the stylesheet, a small script), served by the app:
no CDN and no build step. Only the files listed here are served."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from mediarelay.web.common import AdminRoute, Denied
from mediarelay.web.templating import HERE

router = APIRouter(route_class=AdminRoute, include_in_schema=False)

FILES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@router.get("/admin/static/{name}")
async def static_file(name: str) -> Response:
    if name not in FILES:
        raise Denied(404, "No such file.")
    # URLs carry `?v=<version>`, so a day of caching is safe across upgrades.
    return FileResponse(
        HERE / "static" / name, media_type=FILES[name], headers={"cache-control": "public, max-age=86400"}
    )


# Included last: any other /admin path is an HTML "not found" page, not the API's JSON envelope.
fallback = APIRouter(route_class=AdminRoute, include_in_schema=False)


@fallback.get("/admin/{rest:path}")
async def not_found(rest: str) -> Response:
    raise Denied(404, "There is no such admin page.")
