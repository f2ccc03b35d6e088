"""Log in with an admin key, log out."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mediarelay.web.common import AdminRoute, Denied, checked_session, form_data, page, redirect, ui
from mediarelay.web.session import COOKIE, LIFETIME, LOGIN_COOKIE, Session, cookie_options, same

router = APIRouter(route_class=AdminRoute, include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only ever return to an admin page of this site (no open redirect)."""
    if target and target.startswith("/admin") and not target.startswith("/admin/login"):
        return target
    return "/admin"


def _login_form(request: Request, target: str, *, error: str = "", status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = page(
        request, "login.html", {"login_csrf": token, "next": safe_next(target), "error": error}, status=status
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_options(request))
    return response


@router.get("/admin/login")
async def login_page(request: Request) -> Response:
    if await ui(request).sessions.get(request.cookies.get(COOKIE)) is not None:
        return redirect(request, safe_next(request.query_params.get("next")))
    return _login_form(request, request.query_params.get("next", ""))


@router.post("/admin/login")
async def login(request: Request) -> Response:
    form = await form_data(request)
    if not same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        raise Denied(403, "The login form expired or did not come from this site. Reload it and try again.")
    admin = ui(request)
    secret = form.get("key", "").strip()
    if secret.lower().startswith("bearer "):
        secret = secret[7:].strip()
    key = await asyncio.to_thread(admin.services.keys.by_secret, secret) if secret else None
    if key is None or not key.active:
        return _login_form(request, form.get("next", ""), error="Unknown or revoked key.", status=401)
    if not key.is_admin:
        return _login_form(
            request,
            form.get("next", ""),
            error="This key is not an admin key: the admin pages need one.",
            status=403,
        )
    token, _ = admin.sessions.create(key.id, key.name or key.prefix)
    response = redirect(request, safe_next(form.get("next")))
    response.set_cookie(COOKIE, token, max_age=int(LIFETIME), **cookie_options(request))
    response.delete_cookie(LOGIN_COOKIE, **cookie_options(request))
    return response


@router.post("/admin/logout")
async def logout(request: Request, session: Session = Depends(checked_session)) -> Response:
    ui(request).sessions.end(request.cookies.get(COOKIE))
    response = redirect(request, "/admin/login")
    response.delete_cookie(COOKIE, **cookie_options(request))
    return response
