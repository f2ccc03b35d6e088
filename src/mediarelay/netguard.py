"""Outbound-request safety (SSRF): where mediarelay may send a request that a client chose the URL of.

Webhook deliveries (and, later, relay channels' downloads) go to client-chosen URLs. Unchecked, a client
could make the gateway talk to its own loopback services, the private network, or the cloud metadata
endpoint that hands out credentials. Two checks, with one list of blocked ranges:

- `NetGuard.check_url`, at submit time: the host must not be an IP *literal* in a blocked range, in any
  spelling (`127.1`, `2130706433`, `0x7f000001`, `[::ffff:127.0.0.1]`). No DNS here: names are checked when
  the request is made, since what a name resolves to can change between submit and delivery.
- `NetGuard.stream`, at request time: the pinned `drawbridge` transport resolves the name once, refuses the
  request if ANY resolved address is blocked, then connects to the address it checked (no second lookup,
  so no DNS rebinding) keeping the Host header and TLS SNI. Redirects are never followed.

drawbridge 0.1.2 (pinned) blocks private, loopback, link-local, CGNAT, multicast, reserved and IPv6
transition ranges (IPv4-mapped is unwrapped; NAT64, 6to4 and Teredo are refused outright, as they can
embed any IPv4 address). Its list misses IPv4-compatible `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`
and site-local `fec0::/10`, so the strict policy passes our full list as its extra `ip_blocklist`.

Operator escapes (settings `webhooks.allow_private`, `webhooks.allowed_hosts`): `allow_private` lifts
every range except cloud metadata addresses; an `allowed_hosts` entry exempts an IP/CIDR (metadata too,
when listed explicitly) or a host name (all of its addresses except metadata ones).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
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
        self, *, allow_private: bool = False, allowed_hosts: Iterable[str] = (), timeout: float = 10.0
    ) -> None:
        self.allow_private = allow_private
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
            max_redirects=0,  # a redirect is an answer, not an instruction: never followed
            max_response_bytes=None,  # callers read a bounded prefix themselves
            user_agent=USER_AGENT,
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
        """Refuse an http(s) URL whose host is a literal address in a blocked range (no DNS lookup)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise Blocked(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise Blocked("must be an http(s) URL with a host")
        ip = literal_ip(host)
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
        self, method: str, url: str, *, content: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """Send one request through the checked, pinned transport; the response body is left unread.

        Raises `Blocked` (not allowed, or a URL that cannot be requested), `Unresolvable`, or httpx's
        transport errors (refused, reset, timed out).
        """
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            raise Blocked(f"invalid URL: {exc}") from None
        try:
            async with self._client(host).stream(method, url, content=content, headers=dict(headers)) as resp:
                yield resp
        except drawbridge.DrawbridgeDNSError as exc:
            raise Unresolvable(str(exc)) from None
        except drawbridge.BlockedAddressError as exc:
            why = self.check_ip(exc.ip) or f"{exc.ip} is {exc.reason}"
            named = "" if literal_ip(exc.hostname) else f"{exc.hostname} resolves to {exc.ip}; "
            raise Blocked(f"destination not allowed: {named}{why}") from None
        except (drawbridge.DrawbridgeError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise Blocked(f"destination not allowed: {exc}") from None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
