"""Admin UI access over plain HTTP: login, session cookie, CSRF, security headers, vendored files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from webui import Admin, csrf_of, web_server

from conftest import Server, wait_until

STATIC = Path(__file__).parents[2] / "src" / "mediarelay" / "web" / "static"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = web_server(tmp_path_factory.mktemp("web-auth"))
    yield s
    s.stop()


def anon(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url, timeout=30)


@pytest.mark.parametrize(
    "path", ["/admin", "/admin/tasks", "/admin/channels", "/admin/keys", "/admin/webhooks", "/admin/tasks/x"]
)
def test_pages_need_a_session(srv: Server, path: str) -> None:
    with anon(srv) as c:
        r = c.get(path + "?status=failed")
        assert r.status_code == 303
        assert r.headers["location"] == "/admin/login?next=" + quote(path + "?status=failed", safe="")
        # An htmx poll whose session ended navigates the whole page to the login form.
        r = c.get(path, headers={"HX-Request": "true"})
        assert r.status_code == 204 and r.headers["hx-redirect"].startswith("/admin/login?next=")
        # An admin API key is not a session: the pages take the cookie only.
        r = c.get(path, headers={"Authorization": f"Bearer {srv.admin_key}"})
        assert r.status_code == 303


def test_posts_need_a_session(srv: Server) -> None:
    keys_before = srv.rows("select count(*) from api_keys")[0][0]
    with anon(srv) as c:
        r = c.post("/admin/keys", data={"name": "sneaky", "csrf": "x"})
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    assert srv.rows("select count(*) from api_keys")[0][0] == keys_before


def test_login_with_an_admin_key_sets_a_strict_http_only_cookie(srv: Server) -> None:
    with anon(srv) as c:
        form = c.get("/admin/login?next=/admin/keys")
        assert form.status_code == 200
        assert "default-src 'self'" in form.headers["content-security-policy"]
        login_cookie = form.headers["set-cookie"]
        assert "mr_admin_login=" in login_cookie and "HttpOnly" in login_cookie
        r = c.post("/admin/login", data={"csrf": csrf_of(form.text), "key": srv.admin_key, "next": "/admin/keys"})
        assert r.status_code == 303 and r.headers["location"] == "/admin/keys"
        cookies = r.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("mr_admin="))
        attrs = [a.strip().lower() for a in session.split(";")]
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/admin" in attrs
        assert "secure" not in attrs  # plain http here; see the next test
        value = session.split(";")[0].split("=", 1)[1]
        assert len(value) >= 40 and srv.admin_key not in session and srv.admin_key[3:] not in value
        assert all(srv.admin_key not in h for h in cookies)
        page = c.get("/admin/keys")
        assert page.status_code == 200 and "API keys" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"
        assert srv.admin_key not in page.text


def test_cookie_is_secure_behind_https(srv: Server) -> None:
    with anon(srv) as c:
        form = c.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in form.headers["set-cookie"].lower()
    # (httpx rightly keeps Secure cookies off plain http: hand this one over as a proxy would.)
    with httpx.Client(base_url=srv.base_url, cookies={"mr_admin_login": form.cookies["mr_admin_login"]}) as c:
        r = c.post(
            "/admin/login",
            data={"csrf": csrf_of(form.text), "key": srv.admin_key},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert r.status_code == 303
        session = next(h for h in r.headers.get_list("set-cookie") if h.startswith("mr_admin="))
        assert "secure" in [a.strip().lower() for a in session.split(";")]


def test_non_admin_and_unknown_keys_are_refused(srv: Server) -> None:
    user = srv.new_key("web-user")
    with anon(srv) as c:
        for key, status, says in [
            (user, 403, "not an admin key"),
            ("mr-" + "x" * 43, 401, "Unknown or revoked key"),
            ("", 401, "Unknown or revoked key"),
        ]:
            form = c.get("/admin/login")
            r = c.post("/admin/login", data={"csrf": csrf_of(form.text), "key": key})
            assert r.status_code == status and says in r.text
            assert not any(h.startswith("mr_admin=") for h in r.headers.get_list("set-cookie"))
            assert c.get("/admin").status_code == 303


def test_login_form_needs_its_csrf_token(srv: Server) -> None:
    with anon(srv) as c:
        c.get("/admin/login")
        r = c.post("/admin/login", data={"csrf": "forged", "key": srv.admin_key})
        assert r.status_code == 403
        assert not any(h.startswith("mr_admin=") for h in r.headers.get_list("set-cookie"))


def test_login_never_redirects_off_site(srv: Server) -> None:
    for target in ("https://evil.example/", "//evil.example/admin", "/v1/tasks"):
        with anon(srv) as c:
            form = c.get("/admin/login", params={"next": target})
            r = c.post("/admin/login", data={"csrf": csrf_of(form.text), "key": srv.admin_key, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/admin"


def test_every_post_needs_the_session_csrf_token(srv: Server) -> None:
    admin = Admin(srv, srv.admin_key)
    try:
        keys_before = srv.rows("select count(*) from api_keys")[0][0]
        for token in (None, "", "wrong", admin.csrf[:-1]):
            data = {"name": "via-forged-form"} | ({"csrf": token} if token is not None else {})
            r = admin.http.post("/admin/keys", data=data)
            assert r.status_code == 403 and "CSRF" in r.text
            r = admin.http.post("/admin/channels/sandbox-b/disable", data=data)
            assert r.status_code == 403
        assert srv.rows("select count(*) from api_keys")[0][0] == keys_before
        assert srv.rows("select count(*) from channels")[0][0] == 0
        # The header htmx sends works like the form field.
        r = admin.http.post("/admin/keys", data={"name": "via-header"}, headers={"X-CSRF-Token": admin.csrf})
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/keys/")
        assert srv.rows("select count(*) from api_keys")[0][0] == keys_before + 1
    finally:
        admin.close()


def test_logout_ends_the_session(srv: Server) -> None:
    admin = Admin(srv, srv.admin_key)
    cookie = admin.http.cookies["mr_admin"]
    assert admin.post("/admin/logout").status_code == 303
    # The old cookie value is dead on the server, not just cleared in this client.
    with httpx.Client(base_url=srv.base_url, cookies={"mr_admin": cookie}) as c:
        assert c.get("/admin").status_code == 303


def test_revoking_the_key_ends_its_sessions(srv: Server) -> None:
    out = srv.cli("keys", "create", "--name", "second-admin", "--admin")
    assert out.returncode == 0, out.stderr
    second = out.stdout.strip()
    admin = Admin(srv, second)
    try:
        assert admin.get("/admin").status_code == 200
        prefix = second[:9]
        assert srv.cli("keys", "revoke", prefix).returncode == 0  # from outside the server process
        wait_until(lambda: admin.get("/admin").status_code, lambda s: s == 303, timeout=15, every=0.5)
    finally:
        admin.close()


def test_static_files_are_vendored_and_pinned(srv: Server) -> None:
    readme = (STATIC / "README.md").read_text()
    pinned = re.search(r"htmx (2\.0\.\d+).*?`([0-9a-f]{64})`", readme)
    assert pinned, readme
    with anon(srv) as c:
        r = c.get("/admin/static/htmx.min.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert hashlib.sha256(r.content).hexdigest() == pinned.group(2)
        assert f'version:"{pinned.group(1)}"' in r.text
        for name, kind in [("admin.css", "text/css"), ("admin.js", "text/javascript"), ("favicon.svg", "image/svg")]:
            r = c.get(f"/admin/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert c.get("/admin/static/../../config.py").status_code == 404
        assert c.get("/admin/static/README.md").status_code == 404
        page = c.get("/admin/login").text
        # Nothing from elsewhere: every src/href is a path on this server.
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert url.startswith(("/", "#")) and not url.startswith("//"), url
