"""SSRF matrix: every spelling of "somewhere inside" must be refused by the outbound guard, and a canary
listening on loopback (IPv4 and, where the machine has it, IPv6) must never see a single request.

The guard under test allows exactly one host, a redirector on 127.0.0.2 (so an allowed hop exists that
can point into private space); the canary on 127.0.0.1 / ::1 is not allowed. Forms that cannot reach the
canary (10/8, metadata...) must be refused before any connection is tried (else the test would hang on a
connect timeout instead of failing fast). The end-to-end part drives a real server: input URLs fetched
by the local channel, and webhook URLs, at the same forms.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import Server, start_server, wait_until
from mediarelay.netguard import Blocked, GuardError, NetGuard

REDIRECTOR_IP = "127.0.0.2"  # the one allowed host (Linux routes all of 127/8 to lo)


@dataclass
class Hits:
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str) -> None:
        with self.lock:
            self.seen.append(what)


def _handler(hits: Hits, redirect: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            hits.add(f"{self.command} {self.path} host={self.headers.get('host')}")
            if redirect and self.path.startswith("/to"):
                query = parse_qs(urlsplit(self.path).query)
                self.send_response(int(query.get("code", ["302"])[0]))
                self.send_header("location", query["u"][0])
                self.send_header("content-length", "0")
                self.end_headers()
                return
            body = b"canary" if not redirect else b"not found"
            self.send_response(200 if not redirect else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@dataclass
class Net:
    port: int  # the canary's port, on 127.0.0.1 and (if available) ::1
    port6: int | None
    canary: Hits
    redirector: str  # base URL of the allowed redirector
    redirector_hits: Hits


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    canary, bounced = Hits(), Hits()
    servers = [_serve(ThreadingHTTPServer(("127.0.0.1", 0), _handler(canary, False)))]
    port = servers[0].server_address[1]
    port6: int | None = None
    for wanted in (port, 0):  # the same port on ::1 if it is free, else any
        try:
            servers.append(_serve(V6Server(("::1", wanted), _handler(canary, False))))
            port6 = servers[-1].server_address[1]
            break
        except OSError:
            continue
    servers.append(_serve(ThreadingHTTPServer((REDIRECTOR_IP, 0), _handler(bounced, True))))
    redirector = f"http://{REDIRECTOR_IP}:{servers[-1].server_address[1]}"
    # The canary really answers when asked directly: a silent canary would prove nothing.
    assert httpx.get(f"http://127.0.0.1:{port}/probe").text == "canary"
    if port6 is not None:
        assert httpx.get(f"http://[::1]:{port6}/probe").text == "canary"
    canary.seen.clear()
    yield Net(port, port6, canary, redirector, bounced)
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def guard() -> NetGuard:
    return NetGuard(allowed_hosts=[REDIRECTOR_IP], timeout=3, max_redirects=5)


def fetch(url: str) -> None:
    """One request through the guard's fetcher (redirects followed hop by hop, as relay channels do)."""

    async def go() -> None:
        g = guard()
        try:
            await g.request("GET", url, timeout=3)
        finally:
            await g.aclose()

    asyncio.run(go())


# Loopback literals in every spelling, with the canary's IPv4 port ("P") or IPv6 port ("Q").
LITERALS = [
    "http://127.0.0.1:P/",
    "http://2130706433:P/",  # decimal
    "http://0177.0.0.1:P/",  # octal
    "http://017700000001:P/",  # octal, one number
    "http://0x7f.0.0.1:P/",  # hex dotted
    "http://0x7f000001:P/",  # hex
    "http://0x7f.1:P/",
    "http://127.1:P/",  # short forms
    "http://127.0.1:P/",
    "http://127.000.000.001:P/",
    "http://127.0.0.1.:P/",  # trailing dot
    "http://127。0。0。1:P/",  # ideographic full stops (IDNA maps them to dots)
    "http://0.0.0.0:P/",  # connects to loopback on Linux
    "http://0:P/",
    "http://[::ffff:127.0.0.1]:P/",  # IPv4-mapped
    "http://[::ffff:7f00:1]:P/",
    "http://[::ffff:0:7f00:1]:P/",  # IPv4-translated
    "http://[::127.0.0.1]:P/",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]:P/",  # NAT64
    "http://[2002:7f00:1::]:P/",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:P/",  # Teredo
    "http://[::1]:Q/",
    "http://[0:0:0:0:0:0:0:1]:Q/",
    "http://[::]:Q/",
    "HTTP://127.0.0.1:P/",  # upper-case scheme
    "hTTp://127.0.0.1:P/",
    "http://redirector@127.0.0.1:P/",  # userinfo: the host is after the @
    "http://127.0.0.1:P#@redirector/",  # the fragment hides the "allowed" host
    "http://127.0.0.1:P?@redirector/",
    "http://redirector\\@127.0.0.1:P/",  # backslash: both parsers read the host after the @
    "http://127.0.0.1%2e:P/",
]
# Names that resolve to loopback locally (no internet DNS needed): refused when the request is made.
NAMES = ["http://localhost:P/", "http://localhost.:P/", "http://LOCALHOST:P/", "http://LocalHost.:P/"]
# Other inside ranges: refused before connecting (nothing listens there).
ELSEWHERE = [
    "http://10.0.0.1/",
    "http://10.255.255.254:8080/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.0.1/",
    "http://192.168.1.1:8443/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/",  # 169.254.169.254 in decimal
    "http://169.254.170.2/v2/credentials",
    "http://100.100.100.200/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
]
# Not http(s), or not a URL the fetcher can send anywhere.
SCHEMES = [
    "file:///etc/passwd",
    "file://127.0.0.1/etc/passwd",
    "gopher://127.0.0.1:P/_GET%20/",
    "ftp://127.0.0.1:P/",
    "dict://127.0.0.1:P/",
    "ws://127.0.0.1:P/",
    "data:text/plain,hello",
    "javascript:alert(1)",
    "http:///P",
    "http:/\\127.0.0.1:P/",
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:P/",  # IDN: NFKC of these is "localhost"
    "http://１２７.０.０.１:P/",  # full-width digits
    "http://①②⑦.0.0.1:P/",
]


def fill(template: str, n: Net) -> str:
    host = n.redirector.removeprefix("http://")
    return (
        template.replace("redirector", host)
        .replace(":P", f":{n.port}")
        .replace(":Q", f":{n.port6 or n.port}")
    )


@pytest.mark.parametrize("template", LITERALS + SCHEMES)
def test_literal_forms_refused_at_submit_and_at_request(net: Net, template: str) -> None:
    if ":Q" in template and net.port6 is None:
        pytest.skip("no IPv6 loopback here")
    url = fill(template, net)
    with pytest.raises(Blocked):
        guard().check_url(url)
    with pytest.raises(Blocked):
        fetch(url)
    assert net.canary.seen == []


@pytest.mark.parametrize("template", NAMES)
def test_names_resolving_to_loopback_refused_at_request(net: Net, template: str) -> None:
    url = fill(template, net)
    guard().check_url(url)  # names are not resolved at submit (they may change): checked when sent
    with pytest.raises(GuardError) as refused:
        fetch(url)
    try:
        socket.getaddrinfo(httpx.URL(url).host, net.port)
    except OSError:  # this machine does not resolve it (e.g. `localhost.` without DNS): not sent either
        pass
    else:  # it resolves here: the guard must have refused the address it resolves to
        assert isinstance(refused.value, Blocked) and "resolves to" in str(refused.value)
    assert net.canary.seen == []


@pytest.mark.parametrize("url", ELSEWHERE)
def test_private_and_metadata_ranges_refused_without_connecting(url: str) -> None:
    with pytest.raises(Blocked):
        guard().check_url(url)
    start = time.monotonic()
    with pytest.raises(Blocked):
        fetch(url)
    assert time.monotonic() - start < 2  # refused, not a connect attempt that timed out


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:P/",
        "http://localhost:P/",
        "http://2130706433:P/",
        "http://[::ffff:127.0.0.1]:P/",
        "http://[::1]:Q/",
        "//127.0.0.1:P/",  # scheme-relative
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_from_the_allowed_host_into_private_space(net: Net, target: str, code: int) -> None:
    if ":Q" in target and net.port6 is None:
        pytest.skip("no IPv6 loopback here")
    before = len(net.redirector_hits.seen)
    url = str(httpx.URL(net.redirector + "/to", params={"code": code, "u": fill(target, net)}))
    guard().check_url(url)  # the allowed host itself passes
    with pytest.raises(Blocked):
        fetch(url)
    assert len(net.redirector_hits.seen) == before + 1  # the allowed hop was made, the next one refused
    assert net.canary.seen == []


def test_the_allowed_host_itself_is_reached(net: Net) -> None:
    """The control: the guard does fetch from the allowed host (the refusals above are not a broken
    guard refusing everything)."""

    async def go() -> int:
        g = guard()
        try:
            return (await g.request("GET", f"{net.redirector}/plain")).status
        finally:
            await g.aclose()

    assert asyncio.run(go()) == 404
    with pytest.raises(GuardError):
        fetch(f"{net.redirector}/to?u=http://127.0.0.1:{net.port}/")


# -- end to end: a real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose only channel downloads its inputs itself (the local channel), allowing only the
    redirector as a private destination."""
    tmp: Path = tmp_path_factory.mktemp("ssrf")
    channel = {"name": "cpu", "type": "local", "options": {"workers": 1}}
    srv = start_server(
        tmp,
        MEDIARELAY_SANDBOX__ENABLED="false",
        MEDIARELAY_FETCH__ALLOWED_HOSTS=json.dumps([REDIRECTOR_IP]),
        MEDIARELAY_CHANNELS=json.dumps([channel]),
        MEDIARELAY_DATA_DIR=str(tmp / "data"),
        MEDIARELAY_WEBHOOKS__RETRY_SCHEDULE="[0.2]",
    )
    yield srv
    srv.stop()


E2E_INPUTS = [
    "http://2130706433:P/in.png",
    "http://[::ffff:127.0.0.1]:P/in.png",
    "http://127.0.0.1.:P/in.png",
    "http://localhost:P/in.png",
    "http://[::1]:Q/in.png",
    "http://169.254.169.254/latest/meta-data/in.png",
]


def test_input_urls_of_a_fetching_channel(net: Net, local_server: Server) -> None:
    """Upscale tasks (face swap dialect, taskType 6) whose target URL points inside: each task fails
    with the guard's refusal, the canary sees nothing. One goes through the allowed redirector."""
    urls = [fill(t, net) for t in E2E_INPUTS if net.port6 is not None or ":Q" not in t]
    urls.append(str(httpx.URL(net.redirector + "/to", params={"u": f"http://127.0.0.1:{net.port}/in.png"})))
    with local_server.client(local_server.new_key("ssrf")) as api:
        ids = []
        for url in urls:
            r = api.post("/createTask", json={"taskType": 6, "targetUrls": [url], "scale": 2})
            assert r.status_code == 200 and r.json()["code"] == 200, r.text
            ids.append(r.json()["data"]["promptId"])
        for url, pid in zip(urls, ids, strict=True):
            data = wait_until(
                lambda pid=pid: api.get("/getTaskInfo", params={"promptId": pid}).json()["data"],
                lambda d: d["state"] in (2, 30),
                timeout=30,
            )
            assert data["state"] == 2 and "not allowed" in data["reason"], (url, data)
    assert net.canary.seen == []


WEBHOOK_LITERALS = [
    "http://127.0.0.1:P/hook",
    "http://2130706433:P/hook",
    "http://0x7f.1:P/hook",
    "http://[::ffff:7f00:1]:P/hook",
    "http://127.0.0.1.:P/hook",
    "http://127。0。0。1:P/hook",
    "http://169.254.169.254/hook",
    "http://[fd00::1]/hook",
    "file:///etc/passwd",
]


def test_webhook_urls(net: Net, local_server: Server) -> None:
    """Literal forms are refused at submit in the dialect's envelope and nothing is stored; a name that
    resolves to loopback is accepted, and every delivery attempt is refused by the guard."""
    with local_server.client(local_server.new_key("hooks")) as api:
        before = local_server.task_count()
        for template in WEBHOOK_LITERALS:
            url = fill(template, net)
            if url.isascii():  # a header carries ASCII (the body field below takes any URL)
                r = api.post(
                    "/createTask",
                    json={"taskType": 6, "targetUrls": ["https://example.com/a.png"], "scale": 2},
                    headers={"X-Webhook-Url": url},
                )
                body = r.json()
                assert r.status_code == 200 and body["code"] == 800 and "X-Webhook-Url" in body["msg"], (
                    url,
                    r.text,
                )
            r = api.post(
                "/createTask",
                json={
                    "taskType": 6,
                    "targetUrls": ["https://example.com/a.png"],
                    "scale": 2,
                    "callbackUrl": url,
                },
            )
            assert r.json()["code"] == 800, (url, r.text)
        assert local_server.task_count() == before

        hook = fill("http://localhost:P/hook", net)
        target = fill("http://localhost:P/in.png", net)
        r = api.post(
            "/createTask", json={"taskType": 6, "targetUrls": [target], "scale": 2, "callbackUrl": hook}
        )
        assert r.json()["code"] == 200, r.text
        pid = r.json()["data"]["promptId"]
        delivery = wait_until(
            lambda: api.get("/v1/webhooks/deliveries", params={"task_id": pid}).json()["data"],
            lambda d: bool(d) and bool(d[0]["attempts"]),
            timeout=30,
        )[0]
        assert delivery["attempts"][0]["http_status"] is None
        assert "not allowed" in (delivery["attempts"][0]["error"] or ""), delivery
    assert net.canary.seen == []
