"""The one outbound fetcher (`NetGuard.open/request/download`) against real servers on 127.0.0.1:
redirects followed by hand and re-checked at every hop, credentials dropped across origins, byte caps,
time limits, http(s) only, loopback only when the operator allows it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mediarelay.netguard import Blocked, NetGuard, TooLarge

BIG = b"z" * 200_000


class Site(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]
    other: int  # the second site's port, for cross-origin redirects

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("authorization")))
        port = self.server.server_address[1]
        routes = {
            "/hop": (302, f"http://127.0.0.1:{port}/big"),
            "/away": (302, f"http://127.0.0.1:{self.other}/big"),
            "/private": (302, "http://127.0.0.2:9/secret"),
            "/metadata": (307, "http://169.254.169.254/latest/meta-data/"),
            "/scheme": (302, "file:///etc/passwd"),
            "/loop": (302, "/loop"),
        }
        if self.path in routes:
            status, location = routes[self.path]
            self.send_response(status)
            self.send_header("location", location)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.path == "/liar":  # announces more than the cap
            self.send_response(200)
            self.send_header("content-length", str(10**9))
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("content-length", "50")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"s")
                self.wfile.flush()
                time.sleep(0.05)
            return
        body = BIG if self.path == "/big" else b"small"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sites() -> Iterator[tuple[int, int, list[tuple[str, str | None]], list[tuple[str, str | None]]]]:
    servers = []
    logs: list[list[tuple[str, str | None]]] = [[], []]
    for log in logs:
        handler = type("Handler", (Site,), {"seen": log, "other": 0})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append((srv, handler))
    servers[0][1].other = servers[1][0].server_address[1]
    servers[1][1].other = servers[0][0].server_address[1]
    yield servers[0][0].server_address[1], servers[1][0].server_address[1], logs[0], logs[1]
    for srv, _ in servers:
        srv.shutdown()
        srv.server_close()


def fetch(guard: NetGuard, url: str, **kw: object) -> tuple[int, bytes, str]:
    async def run() -> tuple[int, bytes, str]:
        try:
            got = await guard.request("GET", url, headers={"authorization": "Bearer top-secret"}, **kw)  # type: ignore[arg-type]
            return got.status, got.body, got.url
        finally:
            await guard.aclose()

    return asyncio.run(run())


LOCAL = ["127.0.0.1"]


def test_loopback_needs_explicit_permission(sites: tuple[int, int, list, list]) -> None:
    a, _, seen, _ = sites
    with pytest.raises(Blocked, match="loopback"):
        fetch(NetGuard(), f"http://127.0.0.1:{a}/small")
    assert seen == []
    assert fetch(NetGuard(allowed_hosts=LOCAL), f"http://127.0.0.1:{a}/small")[:2] == (200, b"small")


def test_redirects_are_followed_and_each_hop_is_checked(sites: tuple[int, int, list, list]) -> None:
    a, _, seen_a, seen_b = sites
    status, body, final = fetch(NetGuard(allowed_hosts=LOCAL), f"http://127.0.0.1:{a}/hop")
    assert (status, len(body), final) == (200, len(BIG), f"http://127.0.0.1:{a}/big")
    assert seen_a == [("/hop", "Bearer top-secret"), ("/big", "Bearer top-secret")]  # same origin: kept
    # Another origin: followed, but the credential stays behind.
    fetch(NetGuard(allowed_hosts=LOCAL), f"http://127.0.0.1:{a}/away")
    assert seen_b == [("/big", None)]
    # A hop to a place the policy refuses ends the fetch before anything is sent there.
    for path, why in (("/private", "loopback"), ("/metadata", "metadata"), ("/scheme", "http")):
        with pytest.raises(Blocked, match=why):
            fetch(NetGuard(allowed_hosts=LOCAL), f"http://127.0.0.1:{a}{path}")
    with pytest.raises(Blocked, match="redirects"):
        fetch(NetGuard(allowed_hosts=LOCAL, max_redirects=3), f"http://127.0.0.1:{a}/loop")
    assert [p for p, _ in seen_a].count("/loop") == 4  # the first request and three hops


def test_caps_and_time_limits(sites: tuple[int, int, list, list], tmp_path: Path) -> None:
    a, *_ = sites
    guard = NetGuard(allowed_hosts=LOCAL)
    with pytest.raises(TooLarge):
        fetch(guard, f"http://127.0.0.1:{a}/big", max_bytes=1000)
    with pytest.raises(TooLarge, match="announces"):
        fetch(guard, f"http://127.0.0.1:{a}/liar", max_bytes=1000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fetch(guard, f"http://127.0.0.1:{a}/slow", timeout=0.5)
    assert time.monotonic() - started < 2

    async def download(url: str, dest: Path, cap: int) -> object:
        try:
            return await guard.download(url, dest, max_bytes=cap, timeout=10)
        finally:
            await guard.aclose()

    dest = tmp_path / "f.bin"
    got = asyncio.run(download(f"http://127.0.0.1:{a}/big", dest, 10**6))
    assert got.size == len(BIG) and got.sha256 == hashlib.sha256(BIG).hexdigest()  # type: ignore[attr-defined]
    assert got.head == BIG[:64] and dest.read_bytes() == BIG  # type: ignore[attr-defined]
    with pytest.raises(TooLarge):
        asyncio.run(download(f"http://127.0.0.1:{a}/big", tmp_path / "g.bin", 1000))
    assert not (tmp_path / "g.bin").exists()  # nothing half-written is left


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://100.64.0.1/",  # CGNAT
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private
        "http://169.254.169.254/",
    ],
)
def test_refused_destinations(url: str) -> None:
    with pytest.raises(Blocked):
        fetch(NetGuard(), url)


def test_metadata_stays_refused_when_private_is_allowed() -> None:
    with pytest.raises(Blocked, match="metadata"):
        fetch(NetGuard(allow_private=True), "http://169.254.169.254/latest/meta-data/")
