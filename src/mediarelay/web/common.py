"""What every admin page shares: the route class (login redirects, security headers), the session and
CSRF dependencies, and the page renderer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mediarelay import __version__
from mediarelay.api.services import Services
from mediarelay.web import extensions
from mediarelay.web.queries import AdminQueries
from mediarelay.web.session import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions, same
from mediarelay.web.templating import templates

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class Redirect(Exception):
    """Leave this page for another (a 303, or `HX-Redirect` for an htmx request)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class Denied(Exception):
    """A refused request (bad CSRF token, unknown object): an error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class AdminUI:
    """The admin UI's state in one app: sessions and its read-only queries."""

    services: Services
    sessions: Sessions
    queries: AdminQueries


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def ui(request: Request) -> AdminUI:
    found: AdminUI | None = getattr(request.app.state, "admin_ui", None)
    if found is None:
        svc = services(request)
        queries = AdminQueries(svc.db)
        found = AdminUI(svc, Sessions(queries), queries)
        request.app.state.admin_ui = found
    return found


def redirect(request: Request, url: str) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"hx-redirect": url})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, message: str) -> Response:
    session: Session | None = getattr(request.state, "admin_session", None)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"session": session, "status": status, "message": message, "nav": "", "version": __version__},
        status_code=status,
    )


class AdminRoute(APIRoute):
    """Turns `Redirect`/`Denied` into responses and adds the security headers to every admin answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except Redirect as exc:
                response = redirect(request, exc.url)
            except Denied as exc:
                response = error_page(request, exc.status, exc.message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("cache-control", "no-store")
            return response

        return handler


async def admin_session(request: Request) -> Session:
    """The logged-in admin, or a redirect to the login page (back here afterwards)."""
    session = await ui(request).sessions.get(request.cookies.get(COOKIE))
    if session is None:
        target = request.url.path
        if request.headers.get("hx-request"):
            target = request.headers.get("hx-current-url", target)
            target = "/" + target.split("/", 3)[-1] if "://" in target else target
        elif request.url.query:
            target += "?" + request.url.query
        raise Redirect("/admin/login?next=" + quote(target, safe=""))
    request.state.admin_session = session
    return session


async def checked_session(request: Request, session: Session = Depends(admin_session)) -> Session:
    """A session whose POST carries its CSRF token (form field or header)."""
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not same(token, session.csrf):
        raise Denied(
            403,
            "The form was stale or did not come from this site (CSRF check failed). "
            "Reload the page and try again.",
        )
    return session


def flash(session: Session, message: str, kind: str = "ok") -> None:
    session.flash.append((kind, message))


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    nav: str = "",
    status: int = 200,
    partial: bool = False,
) -> HTMLResponse:
    """Render a page (or an htmx partial) with the shared context."""
    session: Session | None = getattr(request.state, "admin_session", None)
    messages: list[tuple[str, str]] = []
    if session is not None and not partial:
        messages, session.flash = session.flash, []
    base = {
        "session": session,
        "nav": nav,
        "messages": messages,
        "version": __version__,
        "features": extensions.features(services(request)),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


async def form_data(request: Request) -> dict[str, str]:
    """The POSTed form as plain strings (files are never expected here)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}
