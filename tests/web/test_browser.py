"""The admin UI in a real browser: Debian's headless Chromium driven by Playwright.

The flows of the issue: log in, submit a sandbox task through the API and watch it finish live on its
page, play its preview, cancel another task, create and revoke a key, disable a channel. Every page is
also shot at desktop and phone width into test-artifacts/admin-ui/ and checked for a phone layout that
fits, labelled form fields, and requests that never leave 127.0.0.1 (nor break the CSP).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from webui import TEXT_TO_VIDEO, submit, task, web_server

from conftest import Server, wait_until

CHROMIUM = os.environ.get("MEDIARELAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)",
)
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra (playwright)")

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "admin-ui"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--autoplay-policy=no-user-gesture-required",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class Watched:
    """A page with everything it did recorded: requests, console errors, uncaught exceptions."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self, base_url: str) -> None:
        strays = [u for u in self.requests if not u.startswith(base_url + "/")]
        assert not strays, f"requests that left {base_url}: {strays}"
        assert not self.errors, f"console errors (a CSP violation shows up here too): {self.errors}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = web_server(tmp_path_factory.mktemp("web-browser"), MEDIARELAY_WEBHOOKS__ALLOW_PRIVATE="true")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


def open_page(browser: Any, srv: Server, *, viewport: dict[str, int] = DESKTOP, login: bool = True) -> Watched:
    context = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE, has_touch=viewport is PHONE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    w = Watched(page)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # "Cancel this task?" and friends
    if login:
        page.goto(srv.base_url + "/admin")
        page.fill("#key", srv.admin_key)
        page.click("form.card button[type=submit]")
        page.wait_for_url(srv.base_url + "/admin")
    return w


@pytest.fixture
def admin(browser: Any, srv: Server) -> Iterator[Watched]:
    w = open_page(browser, srv)
    yield w
    w.check(srv.base_url)
    w.page.context.close()


def shot(page: Any, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")  # (a sticky header would land mid-page otherwise)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_log_in(browser: Any, srv: Server) -> None:
    w = open_page(browser, srv, login=False)
    page = w.page
    page.goto(srv.base_url + "/admin/tasks")
    assert page.url.startswith(srv.base_url + "/admin/login?next=")
    shot(page, "login-desktop")
    page.fill("#key", "mr-not-a-key")
    page.click("form.card button[type=submit]")
    assert "Unknown or revoked key" in page.locator("[role=alert]").inner_text()
    w.errors.clear()  # the browser logs the 401 of that attempt as a console error
    page.fill("#key", srv.admin_key)
    page.click("form.card button[type=submit]")
    page.wait_for_url(srv.base_url + "/admin/tasks")  # back where it was going
    assert page.locator("h1").inner_text() == "Tasks"
    cookie = next(c for c in page.context.cookies() if c["name"] == "mr_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert page.evaluate("document.cookie") == ""  # no script can read the session
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/admin/login$"))
    w.check(srv.base_url)
    page.context.close()


def test_task_finishes_live_on_its_page_and_plays(admin: Watched, srv: Server) -> None:
    page = admin.page
    t = submit(srv, srv.admin_key, **{"X-Sandbox-Queue": "1", "X-Sandbox-Duration": "2"})
    page.goto(f"{srv.base_url}/admin/tasks/{t['id']}")
    page.evaluate("window.__notReloaded = true")
    seen: list[str] = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        status = page.locator("#task-status").inner_text().strip()
        if not seen or seen[-1] != status:
            seen.append(status)
            if status == "running":
                shot(page, "task-running-desktop")
        if status == "succeeded":
            break
        time.sleep(0.1)
    assert seen[-1] == "succeeded", seen
    assert seen[0] in ("queued", "running") and len(seen) >= 2, seen  # it changed in front of us
    assert page.evaluate("window.__notReloaded") is True  # live updates, not reloads
    assert page.locator("#task-progress").inner_text() == "100 %"
    assert page.locator("ol.timeline li.t-succeeded").count() == 1
    assert page.locator("#task-announcer").text_content() == "Task succeeded."  # for screen readers

    video = page.locator("#results-h ~ .previews video").first
    video.scroll_into_view_if_needed()
    assert video.get_attribute("src").startswith(f"/files/{t['id']}/")
    assert page.evaluate("(v) => { v.muted = true; return v.play().then(() => 'playing') }", video.element_handle()) == (
        "playing"
    )
    wait_until(lambda: video.evaluate("v => v.currentTime"), lambda s: s > 0.3, timeout=10, every=0.1)
    width, height, ready, error = video.evaluate("v => [v.videoWidth, v.videoHeight, v.readyState, v.error]")
    assert (width, height) == (TEXT_TO_VIDEO["width"], TEXT_TO_VIDEO["height"]) and ready >= 2 and error is None
    shot(page, "task-succeeded-desktop")


def test_cancel_another_task(admin: Watched, srv: Server) -> None:
    page = admin.page
    t = submit(srv, srv.admin_key, **{"X-Sandbox-Duration": "120"})
    page.goto(f"{srv.base_url}/admin/tasks/{t['id']}")
    page.get_by_role("button", name="Cancel task").click()
    page.wait_for_function("document.querySelector('#task-status').innerText.trim() === 'canceled'")
    assert "Task canceled." in page.locator(".flash").inner_text()
    assert page.get_by_role("button", name="Cancel task").count() == 0
    assert page.get_by_role("button", name="Retry as new task").count() == 1
    assert task(srv, srv.admin_key, t["id"])["status"] == "canceled"
    shot(page, "task-canceled-desktop")


def test_create_and_revoke_a_key(admin: Watched, srv: Server) -> None:
    page = admin.page
    page.goto(srv.base_url + "/admin/keys")
    page.fill("#k-name", "browser-made")
    page.fill("#k-balance", "3")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r".*/admin/keys/[0-9a-z]{26}$"))
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("mr-")
    shot(page, "key-created-desktop")
    with srv.client(secret) as c:
        assert c.get("/v1/account").status_code == 200
        assert c.get("/v1/tasks").status_code == 200
    page.get_by_role("button", name="Revoke key").click()
    page.wait_for_function("document.querySelector('h1').innerText.includes('revoked')")
    with srv.client(secret) as c:
        assert c.get("/v1/tasks").status_code == 401
    page.reload()
    assert page.locator("#new-secret").count() == 0  # the secret was shown once


def test_disable_a_channel(admin: Watched, srv: Server) -> None:
    page = admin.page
    before = submit(srv, srv.admin_key, {**TEXT_TO_VIDEO, "model": "b-model"})
    wait_until(lambda: task(srv, srv.admin_key, before["id"]), lambda v: v["channel"] is not None)
    assert task(srv, srv.admin_key, before["id"])["channel"] == "sandbox-b"

    page.goto(srv.base_url + "/admin/channels")
    card = page.locator("#ch-sandbox-b")
    card.get_by_role("button", name="Disable sandbox-b").click()
    page.wait_for_url(srv.base_url + "/admin/channels")
    card = page.locator("#ch-sandbox-b")
    assert card.locator(".badge").first.inner_text() == "disabled"
    assert card.get_by_role("button", name="Enable sandbox-b").count() == 1
    shot(page, "channels-disabled-desktop")

    after = submit(srv, srv.admin_key, {**TEXT_TO_VIDEO, "model": "b-model"})
    wait_until(lambda: task(srv, srv.admin_key, after["id"]), lambda v: v["channel"] is not None)
    assert task(srv, srv.admin_key, after["id"])["channel"] == "sandbox"  # routed around it
    with srv.client(srv.admin_key) as c:
        assert c.get("/v1/admin/channels/sandbox-b").json()["enabled"] is False  # stored, not just shown

    card.get_by_role("button", name="Enable sandbox-b").click()
    page.wait_for_url(srv.base_url + "/admin/channels")
    assert page.locator("#ch-sandbox-b .badge").first.inner_text() != "disabled"


PAGES = {
    "dashboard": "/admin",
    "tasks": "/admin/tasks",
    "task": "/admin/tasks/{task}",
    "channels": "/admin/channels",
    "channel-edit": "/admin/channels/sandbox-b/edit",
    "keys": "/admin/keys",
    "key": "/admin/keys/{key}",
    "webhooks": "/admin/webhooks",
}


class Receiver(BaseHTTPRequestHandler):
    """A webhook endpoint that takes everything (for a delivery log with something in it)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def shown(srv: Server) -> Iterator[tuple[str, str]]:
    """A finished task whose webhooks were delivered, and its key: something on every page."""
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with srv.client(srv.admin_key) as c:
            url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
            assert c.put("/v1/webhook", json={"url": url}).status_code == 200
        t = submit(srv, srv.admin_key)
        wait_until(
            lambda: srv.rows(f"select state from webhook_events where task_id = '{t['id']}'"),
            lambda rows: ("delivered",) in rows and all(s != "pending" for (s,) in rows),
            timeout=60,
        )
        yield t["id"], srv.rows("select id from api_keys order by created_at limit 1")[0][0]
    finally:
        receiver.shutdown()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_fits_and_is_labelled(
    browser: Any, srv: Server, shown: tuple[str, str], viewport: dict[str, int]
) -> None:
    task_id, key_id = shown
    w = open_page(browser, srv, viewport=viewport)
    page = w.page
    name = "desktop" if viewport is DESKTOP else "phone"
    for label, path in PAGES.items():
        page.goto(srv.base_url + path.format(task=task_id, key=key_id))
        page.wait_for_load_state("load")
        shot(page, f"{label}-{name}")
        problems = page.evaluate(
            """(screen) => {
              const out = [];
              if (document.documentElement.scrollWidth > screen)
                out.push('wider than the screen: ' + document.documentElement.scrollWidth);
              if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
              if (!document.documentElement.lang) out.push('no lang');
              for (const el of document.querySelectorAll('input, select, textarea')) {
                if (el.type === 'hidden' || el.getAttribute('aria-hidden') === 'true') continue;
                if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) out.push('unlabelled ' + (el.name || el.id));
              }
              for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) out.push('img without alt');
              for (const b of document.querySelectorAll('button, a')) {
                const img = b.querySelector('img[alt]');
                if (!(b.textContent.trim() || b.getAttribute('aria-label') || (img && img.alt))) out.push('nameless ' + b.outerHTML.slice(0, 60));
              }
              for (const svg of document.querySelectorAll('svg.chart')) if (!svg.querySelector('title') || !svg.querySelector('desc')) out.push('chart without title/desc');
              return out;
            }""",
            viewport["width"],
        )
        assert not problems, (label, name, problems)
    w.check(srv.base_url)
    page.context.close()
