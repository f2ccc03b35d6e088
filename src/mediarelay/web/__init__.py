"""Server-rendered admin pages at `/admin` (Jinja2 + vendored htmx): dashboard, tasks, channels, keys.

They read through the same repositories and services as the API (never over HTTP) and need an admin
session (see `session.py`). `router` is included by `api/app.py`.
"""

from fastapi import APIRouter

from mediarelay.web import auth, channels, dashboard, keys, static, tasks

router = APIRouter(include_in_schema=False)
for module in (static, auth, dashboard, tasks, channels, keys):
    router.include_router(module.router)
router.include_router(static.fallback)

__all__ = ["router"]
