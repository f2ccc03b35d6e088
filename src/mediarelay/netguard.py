"""Outbound-request safety (SSRF): where mediarelay may send a request that a client chose the URL of.

Webhook deliveries, relay channels' upstream calls and result downloads go to URLs a client, an upstream or
the operator chose. Unchecked, a client
could make the gateway talk to its own loopback services, the private network, or the cloud metadata
endpoint that hands out credentials. Two checks, with one list of blocked ranges:

- `NetGuard.check_url`, at submit time: the host must not be an IP *literal* in a blocked range, in any
  spelling (`127.1`, `2130706433`, `0x7f000001`, `[::ffff:127.0.0.1]`). No DNS here: names are checked when
  the request is made, since what a name resolves to can change between submit and delivery.
- `NetGuard.stream`, at request time: the pinned `drawbridge` transport resolves the name once, refuses the
  request if ANY resolved address is blocked, then connects to the address it checked (no second lookup,
  so no DNS rebinding) keeping the Host header and TLS SNI. Redirects are never followed.
- `NetGuard.open` / `request` / `download`, the one outbound fetcher of relay channels (upstream API calls,
  result files): the same pinned transport, http/https only, redirects followed by hand so that every
  hop is checked again under the policy of ITS host (and credentials are dropped when a hop leaves the
  origin), a byte cap on every body and an overall time limit (slow bodies cannot hold a step forever).

drawbridge 0.1.2 (pinned) blocks private, loopback, link-local, CGNAT, multicast, reserved and IPv6
transition ranges (IPv4-mapped is unwrapped; NAT64, 6to4 and Teredo are refused outright, as they can
embed any IPv4 address). Its list misses IPv4-compatible `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`
and site-local `fec0::/10`, so the strict policy passes our full list as its extra `ip_blocklist`.

Operator escapes (settings `webhooks.allow_private` / `webhooks.allowed_hosts` for webhooks,
`fetch.allow_private` / `fetch.allowed_hosts` for the fetcher): `allow_private` lifts
every range except cloud metadata addresses; an `allowed_hosts` entry exempts an IP/CIDR (metadata too,
when listed explicitly) or a host name (all of its addresses except metadata ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import drawbridge
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services: blocked even when the operator allows private destinations, because they
# hand out the credentials of the machine itself. (169.254.169.254: AWS/GCP/Azure/OpenStack/Oracle…;
# 169.254.170.2: AWS ECS task credentials; fd00:ec2::254: AWS over IPv6; 100.100.100.200: Alibaba;
# 168.63.129.16: Azure's wire server, a public address.)
METADATA: dict[str, str] = {
    "169.254.169.254/32": "a cloud metadata address",
    "169.254.170.2/32": "a cloud metadata address",
    "fd00:ec2::254/128": "a cloud metadata address",
    "100.100.100.200/32": "a cloud metadata address",
    "168.63.129.16/32": "a cloud metadata address",
}

# Every special-purpose range (IANA IPv4/IPv6 special-purpose registries, multicast, reserved), with the
# reason a refusal reports. A superset of drawbridge's own list.
BLOCKED: dict[str, str] = {
    **METADATA,
    "0.0.0.0/8": "an unspecified/'this network' address",
    "10.0.0.0/8": "a private address",
    "100.64.0.0/10": "a shared (CGNAT) address",
    "127.0.0.0/8": "a loopback address",
    "169.254.0.0/16": "a link-local address",
    "172.16.0.0/12": "a private address",
    "192.0.0.0/24": "an IETF protocol address",
    "192.0.2.0/24": "a documentation address",
    "192.31.196.0/24": "a special-purpose address",
    "192.52.193.0/24": "a special-purpose address",
    "192.88.99.0/24": "a 6to4 relay address",
    "192.168.0.0/16": "a private address",
    "192.175.48.0/24": "a special-purpose address",
    "198.18.0.0/15": "a benchmarking address",
    "198.51.100.0/24": "a documentation address",
    "203.0.113.0/24": "a documentation address",
    "224.0.0.0/4": "a multicast address",
    "240.0.0.0/4": "a reserved address",
    "::/96": "an unspecified, loopback or IPv4-compatible address",
    "::ffff:0:0:0/96": "an IPv4-translated address",
    "64:ff9b::/96": "a NAT64 address (it embeds an IPv4 address)",
    "64:ff9b:1::/48": "a local NAT64 address",
    "100::/64": "a discard-only address",
    "2001::/23": "an IETF protocol address (Teredo included: it embeds an IPv4 address)",
    "2001:db8::/32": "a documentation address",
    "2002::/16": "a 6to4 address (it embeds an IPv4 address)",
    "3fff::/20": "a documentation address",
    "5f00::/16": "a segment-routing address",
    "fc00::/7": "a unique-local (private) address",
    "fe80::/10": "a link-local address",
    "fec0::/10": "a site-local address",
    "ff00::/8": "a multicast address",
}

BLOCKED_NETWORKS: dict[IPNetwork, str] = {ipaddress.ip_network(n): why for n, why in BLOCKED.items()}
METADATA_NETWORKS: dict[IPNetwork, str] = {ipaddress.ip_network(n): why for n, why in METADATA.items()}
ALL_PORTS = frozenset(range(1, 65536))  # [MR] receivers listen anywhere; the address is what matters
USER_AGENT = "mediarelay-webhooks"


class GuardError(Exception):
    """The request was not sent."""


class Blocked(GuardError):
    """The destination is not allowed; retrying will not help."""


class Unresolvable(GuardError):
    """The host name did not resolve (possibly a passing DNS failure)."""


class TooLarge(GuardError):
    """The body is larger than the cap given for it (what was read is discarded)."""


# Headers kept when a redirect leaves the origin (scheme, host, port): nothing that can carry a secret.
CROSS_ORIGIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "user-agent", "cache-control"}
)
BODY_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding"})
HEAD_BYTES = 64  # the first bytes of a download, kept to tell what the file really is


@dataclass(frozen=True)
class Fetched:
    """A whole (capped) response from `NetGuard.request`; `url` is the last hop's."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str


@dataclass(frozen=True)
class Downloaded:
    """What `NetGuard.download` wrote: nothing unless `status` is 2xx."""

    status: int
    url: str
    content_type: str | None
    size: int
    sha256: str
    head: bytes


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port


def _redirect_method(method: str, status: int) -> tuple[str, bool]:
    """(method, keep body) for a redirect hop, as browsers and httpx do: 303 and a non-GET 301/302 turn
    into a GET without body; 307/308 repeat the request."""
    if status == 303 or (status in (301, 302) and method not in ("GET", "HEAD")):
        return "GET", False
    return method, status in (307, 308)


def unwrap(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is its IPv4 address (the kernel connects to that)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a transition address carries (6to4, Teredo server, NAT64), for error messages."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The IP address a URL host spells, in any form the resolver would accept (`127.1`, `0x7f000001`,
    `2130706433`, `0177.0.0.1`), without a DNS lookup; None for a name."""
    host = host.strip("[]")
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # `127.0.0.1.`: the resolver reads a fully qualified literal as the address
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def parse_allowed(entries: Iterable[str]) -> tuple[frozenset[IPNetwork], frozenset[str]]:
    """Split operator allowlist entries into networks (IPs, CIDRs) and host names."""
    networks: set[IPNetwork] = set()
    names: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.add(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if "/" in entry or ":" in entry or entry.replace(".", "").isdigit():
                raise ValueError(f"allowed_hosts: {raw!r} is neither an IP, a CIDR nor a host name") from None
            names.add(entry)
    return frozenset(networks), frozenset(names)


class NetGuard:
    """The operator's outbound policy, and an HTTP client that enforces it on every request."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        timeout: float = 10.0,
        max_redirects: int = 5,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.allowed_networks, self.allowed_names = parse_allowed(allowed_hosts)
        blocklist = METADATA_NETWORKS if allow_private else BLOCKED_NETWORKS
        self._strict = self._policy(allow_private, blocklist, timeout)
        # For host names the operator trusts: any address but a metadata one.
        self._trusted = self._policy(True, METADATA_NETWORKS, timeout)
        self._clients: dict[bool, drawbridge.Client] = {}

    def _policy(
        self, allow_private: bool, blocklist: Iterable[IPNetwork], timeout: float
    ) -> drawbridge.Policy:
        return drawbridge.Policy(
            allow_private=allow_private,
            ip_allowlist=self.allowed_networks,
            ip_blocklist=frozenset(blocklist),
            allow_ports=ALL_PORTS,
            timeout=timeout,
            max_redirects=0,  # drawbridge never follows: `open` does, hop by hop, under each hop's policy
            max_response_bytes=None,  # callers read a bounded prefix themselves
            user_agent=self.user_agent,
        )

    # -- decisions ------------------------------------------------------------------------------

    def check_ip(self, ip: IPAddress) -> str | None:
        """Why this address is refused under this policy, or None when it is allowed."""
        ip = unwrap(ip)
        if any(ip in net for net in self.allowed_networks):
            return None
        table = METADATA_NETWORKS if self.allow_private else BLOCKED_NETWORKS
        for net, why in table.items():
            if ip in net:
                if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
                    return f"{ip} is {why}: {inner}"
                return f"{ip} is {why}"
        return None

    def check_url(self, url: str) -> None:
        """Refuse an http(s) URL whose host is a literal address in a blocked range (no DNS lookup).

        The host is read by urlsplit AND by the fetcher's own parser (httpx), and both readings are
        checked: they differ on some spellings (httpx maps `127。0。0。1` to `127.0.0.1` and refuses
        `１２７.０.０.１`, urlsplit keeps both as names), and the submit check must judge the address the
        request would really go to. A URL the fetcher cannot parse could never be delivered: refused."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            fetched = httpx.URL(url).host
        except (ValueError, httpx.InvalidURL) as exc:
            raise Blocked(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not host or not fetched:
            raise Blocked("must be an http(s) URL with a host")
        for spelled in dict.fromkeys((host, fetched)):
            ip = literal_ip(spelled)
            if ip is not None and (why := self.check_ip(ip)) is not None:
                raise Blocked(f"destination not allowed: {why}")

    def _trusts_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_names

    # -- requests -------------------------------------------------------------------------------

    def _client(self, host: str) -> drawbridge.Client:
        trusted = self._trusts_name(host)
        client = self._clients.get(trusted)
        if client is None:
            client = drawbridge.Client(self._trusted if trusted else self._strict)
            self._clients[trusted] = client
        return client

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send one request through the checked, pinned transport; the response body is left unread.
        A redirect is returned as it is, never followed.

        Raises `Blocked` (not allowed, or a URL that cannot be requested), `Unresolvable`, or httpx's
        transport errors (refused, reset, timed out).
        """
        try:
            parsed = httpx.URL(url)
            host = parsed.host
        except httpx.InvalidURL as exc:
            raise Blocked(f"invalid URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not host:
            raise Blocked("destination not allowed: only http(s) URLs with a host are fetched")
        # A host that spells a blocked address in a form the transport reads as a name (`127.0.0.1.`) is
        # refused here, whatever the resolver would make of it: the same answer as `check_url` gives.
        if (ip := literal_ip(host)) is not None and (why := self.check_ip(ip)) is not None:
            raise Blocked(f"destination not allowed: {why}")
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            async with self._client(host).stream(
                method, url, content=content, headers=dict(headers or {}), **extra
            ) as resp:
                yield resp
        except drawbridge.DrawbridgeDNSError as exc:
            raise Unresolvable(str(exc)) from None
        except drawbridge.BlockedAddressError as exc:
            why = self.check_ip(exc.ip) or f"{exc.ip} is {exc.reason}"
            named = "" if literal_ip(exc.hostname) else f"{exc.hostname} resolves to {exc.ip}; "
            raise Blocked(f"destination not allowed: {named}{why}") from None
        except (drawbridge.DrawbridgeError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise Blocked(f"destination not allowed: {exc}") from None

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_redirects: int | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Like `stream`, but follows up to `max_redirects` redirects itself: each hop is a new request
        through the pinned transport, checked under the policy of its own host (an allowed name that
        redirects elsewhere gains nothing), and a hop to another origin drops every header that could
        carry a credential. Too many hops raise `Blocked`."""
        limit = self.max_redirects if max_redirects is None else max_redirects
        hdrs = dict(headers or {})
        hops = 0
        while True:
            async with self.stream(method, url, content=content, headers=hdrs, timeout=timeout) as resp:
                location = resp.headers.get("location") if resp.is_redirect else None
                if not location or limit == 0:
                    yield resp
                    return
                if hops >= limit:
                    raise Blocked(f"destination not allowed: more than {limit} redirects")
                try:
                    target = httpx.URL(url).join(location)
                except httpx.InvalidURL as exc:
                    raise Blocked(f"destination not allowed: bad redirect ({exc})") from None
                method, keep_body = _redirect_method(method, resp.status_code)
            if _origin(target) != _origin(httpx.URL(url)):
                hdrs = {k: v for k, v in hdrs.items() if k.lower() in CROSS_ORIGIN_HEADERS}
                keep_body = False
            if not keep_body:
                content = None
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in BODY_HEADERS}
            url = str(target)
            hops += 1

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        max_redirects: int | None = None,
    ) -> Fetched:
        """One request, redirects followed (see `open`), the whole body read up to `max_bytes` (else
        `TooLarge`), everything within `timeout` seconds (else `TimeoutError`)."""
        limit = self.timeout if timeout is None else timeout
        async with asyncio.timeout(limit):
            async with self.open(
                method, url, content=content, headers=headers, timeout=limit, max_redirects=max_redirects
            ) as resp:
                _check_length(resp, max_bytes)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise TooLarge(f"the answer is larger than {max_bytes} bytes")
                return Fetched(resp.status_code, resp.headers, bytes(body), str(resp.request.url))

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_bytes: int,
        max_redirects: int | None = None,
    ) -> Downloaded:
        """Stream a file into `dest` with its SHA-256, capped at `max_bytes` (else `TooLarge`) and
        `timeout` seconds in all (else `TimeoutError`). A non-2xx answer writes nothing. `dest` is
        removed again when anything goes wrong."""
        limit = self.timeout if timeout is None else timeout
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            async with asyncio.timeout(limit):
                async with self.open(
                    "GET", url, headers=headers, timeout=limit, max_redirects=max_redirects
                ) as r:
                    final = str(r.request.url)
                    if not 200 <= r.status_code < 300:
                        return Downloaded(r.status_code, final, r.headers.get("content-type"), 0, "", b"")
                    _check_length(r, max_bytes)
                    with dest.open("wb") as out:
                        async for chunk in r.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise TooLarge(f"the file is larger than {max_bytes} bytes")
                            if len(head) < HEAD_BYTES:
                                head += chunk[: HEAD_BYTES - len(head)]
                            digest.update(chunk)
                            out.write(chunk)
                    return Downloaded(
                        r.status_code, final, r.headers.get("content-type"), size, digest.hexdigest(), head
                    )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _check_length(resp: httpx.Response, max_bytes: int) -> None:
    """Refuse early when the announced length is already over the cap (the read enforces it anyway)."""
    announced = resp.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > max_bytes:
        raise TooLarge(f"the answer announces {announced} bytes, more than {max_bytes}")
