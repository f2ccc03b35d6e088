"""The outbound address guard: literal checks at submit, and the pinned transport at request time.

Blocked destinations are tried for real against a receiver on 127.0.0.1: it must see nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mediarelay.netguard import Blocked, NetGuard, literal_ip

BLOCKED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.16.5.4": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "CGNAT",
    "169.254.1.1": "link-local",
    "169.254.169.254": "metadata",
    "169.254.170.2": "metadata",
    "100.100.100.200": "metadata",
    "168.63.129.16": "metadata",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "255.255.255.255": "reserved",
    "198.18.0.1": "benchmarking",
    "::1": "loopback",
    "::": "unspecified",
    "::7f00:1": "IPv4-compatible",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped: judged as the IPv4 address
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "::ffff:0:7f00:1": "IPv4-translated",
    "64:ff9b::7f00:1": "NAT64",  # Python 3.11 calls this one global
    "2002:7f00:1::": "6to4",  # and this one
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo",
    "fd00:ec2::254": "metadata",
    "fc00::1": "unique-local",
    "fe80::1": "link-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2001:db8::1": "documentation",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2a00:1450::1"]


@pytest.mark.parametrize(("address", "why"), sorted(BLOCKED.items()))
def test_blocked_ranges_with_a_reason(address: str, why: str) -> None:
    reason = NetGuard().check_ip(ipaddress.ip_address(address))
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert NetGuard().check_ip(ipaddress.ip_address(address)) is None


def test_transition_addresses_name_the_ipv4_they_embed() -> None:
    reason = NetGuard().check_ip(ipaddress.ip_address("2002:a9fe:a9fe::"))
    assert reason is not None and "169.254.169.254" in reason


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("example.com", None),
        ("cafe.de", None),
        ("localhost", None),
    ],
)
def test_literal_ip_spellings(host: str, ip: str | None) -> None:
    found = literal_ip(host)
    assert found == (ipaddress.ip_address(ip) if ip else None)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1:8080/",
        "http://2130706433/",
        "http://0x7f000001/",
        "https://[::1]/",
        "http://[::ffff:127.0.0.1]:9000/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.5/",
        "http://[2002:7f00:1::]/",
        "ftp://example.com/",
        "http:///nohost",
    ],
)
def test_check_url_refuses_literals_and_other_schemes(url: str) -> None:
    with pytest.raises(Blocked):
        NetGuard().check_url(url)


def test_check_url_leaves_names_to_request_time() -> None:
    NetGuard().check_url("http://localhost:8000/hook")  # no DNS at submit: checked when sent
    NetGuard().check_url("https://hooks.example.com/x")


def test_operator_exemptions() -> None:
    loop, private = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")
    metadata = ipaddress.ip_address("169.254.169.254")
    lax = NetGuard(allow_private=True)
    assert lax.check_ip(loop) is None and lax.check_ip(private) is None
    assert lax.check_ip(metadata) is not None  # credentials stay out of reach
    assert lax.check_ip(ipaddress.ip_address("fd00:ec2::254")) is not None
    listed = NetGuard(allowed_hosts=["127.0.0.1", "10.0.0.0/8", "hooks.internal"])
    assert listed.check_ip(loop) is None and listed.check_ip(private) is None
    assert listed.check_ip(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert listed.check_ip(ipaddress.ip_address("127.0.0.2")) is not None
    assert listed.check_ip(metadata) is not None
    assert NetGuard(allowed_hosts=["169.254.169.254"]).check_ip(metadata) is None  # explicit only
    listed.check_url("http://127.0.0.1:9/")
    for bad in ("10.0.0.0/33", "300.1.2.3", "fe80::zz"):
        with pytest.raises(ValueError, match="allowed_hosts"):
            NetGuard(allowed_hosts=[bad])


# -- the transport, against a real receiver ---------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append((self.path, self.headers.get("host", "")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "/elsewhere")
            self.end_headers()
            return
        body = b"x" * 100_000
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv.server_address[1], seen
    srv.shutdown()
    srv.server_close()


async def post(guard: NetGuard, url: str) -> tuple[int, bytes]:
    try:
        async with guard.stream(
            "POST", url, content=b"{}", headers={"content-type": "application/json"}
        ) as r:
            return r.status_code, await r.aread()
    finally:
        await guard.aclose()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "[::1]"],
)
def test_loopback_in_any_spelling_is_refused_before_connecting(
    receiver: tuple[int, list[tuple[str, str]]], host: str
) -> None:
    port, seen = receiver
    with pytest.raises(Blocked, match="not allowed"):
        asyncio.run(post(NetGuard(), f"http://{host}:{port}/hook"))
    assert seen == []


@pytest.mark.parametrize("address", [a for a in BLOCKED if a not in ("::ffff:127.0.0.1",)])
def test_the_transport_blocks_what_the_submit_check_blocks(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(Blocked):
        asyncio.run(post(NetGuard(), f"http://{host}:9/"))


def test_an_allowlisted_address_is_reached_without_following_redirects(
    receiver: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = receiver
    guard = NetGuard(allowed_hosts=["127.0.0.1"])
    status, body = asyncio.run(post(guard, f"http://127.0.0.1:{port}/ok"))
    assert status == 200 and len(body) == 100_000
    status, _ = asyncio.run(post(NetGuard(allowed_hosts=["127.0.0.1"]), f"http://127.0.0.1:{port}/redirect"))
    assert status == 302
    assert [p for p, _ in seen] == ["/ok", "/redirect"]  # /elsewhere never requested


def test_an_allowlisted_name_is_pinned_and_keeps_its_host_header(
    receiver: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = receiver
    guard = NetGuard(allowed_hosts=["localhost"])
    try:
        status, _ = asyncio.run(post(guard, f"http://localhost:{port}/named"))
    except httpx.ConnectError:
        pytest.skip("localhost resolves to ::1 first here and the receiver listens on IPv4")
    assert status == 200 and seen == [("/named", f"localhost:{port}")]
    with pytest.raises(Blocked):  # the name is trusted, not the address
        asyncio.run(post(NetGuard(allowed_hosts=["localhost"]), f"http://127.0.0.1:{port}/ip"))


def test_metadata_stays_blocked_when_private_addresses_are_allowed() -> None:
    with pytest.raises(Blocked, match="metadata"):
        asyncio.run(post(NetGuard(allow_private=True), "http://169.254.169.254/latest/meta-data/"))
    with pytest.raises(Blocked, match="metadata"):
        asyncio.run(post(NetGuard(allow_private=True, allowed_hosts=["x.test"]), "http://[fd00:ec2::254]/"))
