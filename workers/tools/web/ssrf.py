"""The SSRF guard: a fetched url may only reach public internet addresses.

`AddressGuard.check(url)` parses the url itself (not with httpx, which rejects some of the host
spellings an attacker would try and passes others on to `getaddrinfo`, whose `inet_aton` reads
`2130706433`, `0177.0.0.1` and `0x7f.1` as 127.0.0.1), resolves the host with a pluggable
resolver, and refuses the url unless *every* address it resolves to is public, or the host or
address is in the configured allow-list. It returns a `Target` pinned to one checked address:
the fetcher connects to that address and nothing else, so a second DNS answer (rebinding) is
never consulted. The fetcher calls `check` again for every redirect.

Refused: loopback, private (RFC 1918, ULA), link-local (cloud metadata lives there:
169.254.169.254, fd00:ec2::254), CGNAT, multicast, unspecified, reserved, documentation and
benchmark ranges, and IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
unless the embedded address is itself public.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import anyio
import idna

from workers.errors import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolves a host name to its addresses (the port only helps getaddrinfo pick socket types).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class BlockedURL(ToolError):
    """The url may not be fetched; the message says why, for the model and the log."""


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Why each range is refused, in the words the refusal uses.
_BLOCKED_V4: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified / 'this network'", _nets("0.0.0.0/8")),
    ("loopback", _nets("127.0.0.0/8")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("carrier-grade NAT", _nets("100.64.0.0/10")),
    ("link-local (cloud metadata)", _nets("169.254.0.0/16")),
    ("IETF protocol assignments", _nets("192.0.0.0/24")),
    ("documentation", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("6to4 relay anycast", _nets("192.88.99.0/24")),
    ("benchmarking", _nets("198.18.0.0/15")),
    ("multicast", _nets("224.0.0.0/4")),
    ("reserved / broadcast", _nets("240.0.0.0/4")),
)
_BLOCKED_V6: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("::/128")),
    ("loopback", _nets("::1/128")),
    ("IPv4-compatible (deprecated)", _nets("::/96")),
    ("NAT64 local-use", _nets("64:ff9b:1::/48")),
    ("discard-only", _nets("100::/64")),
    ("IETF protocol assignments (incl. Teredo)", _nets("2001::/23")),
    ("documentation", _nets("2001:db8::/32", "3fff::/20")),
    ("6to4", _nets("2002::/16")),
    ("unique local (private; incl. metadata fd00:ec2::254)", _nets("fc00::/7")),
    ("link-local", _nets("fe80::/10")),
    ("site-local (deprecated)", _nets("fec0::/10")),
    ("multicast", _nets("ff00::/8")),
)
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        # An address that carries an IPv4 one reaches that IPv4 host: judge it by that.
        if address in _MAPPED or address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            why = refusal(embedded)
            return f"embeds {embedded}, which is {why}" if why else None
        table = _BLOCKED_V6
    else:
        table = _BLOCKED_V4
    for why, networks in table:
        if any(address in net for net in networks):
            return why
    return None


_V4_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read `host` the way `inet_aton` and browsers do: one to four parts, each decimal, octal
    (leading 0) or hex (0x), the last part filling the remaining bytes (`127.1`, `2130706433`).
    None when the host is not such a number.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.match(p) for p in parts):
        return None
    values: list[int] = []
    for part in parts:
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, value in enumerate(head):
        number += value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def parse_ip(host: str) -> IPAddress | None:
    """An IP literal in any spelling (IPv6 without brackets, scope id dropped), else None."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4(host)


# What a host name may hold once IDNA-encoded: letters, digits, hyphens, underscores, dots.
_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*$")
# A host whose last label is numeric is an IPv4 address to browsers, valid or not.
_NUMERIC_LABEL = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


def _ascii_host(host: str) -> str:
    try:
        host.encode("ascii")
        return host
    except UnicodeEncodeError:
        pass
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise BlockedURL(f"invalid host name {host!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked url, pinned to the address the fetcher must connect to."""

    url: str  # the url as it will be reported (credentials and fragment dropped)
    scheme: str
    host: str  # ASCII host name or canonical IP, no brackets
    port: int
    address: IPAddress
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def pinned_url(self) -> str:
        """The url with its host replaced by the checked address."""
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{ip}:{self.port}{self.path}"


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The resolver used outside tests: the system's, off the event loop."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedURL(f"cannot resolve {host}: {exc.strerror or exc}") from None
    out: dict[IPAddress, None] = {}
    for *_, sockaddr in infos:
        parsed = parse_ip(str(sockaddr[0]))
        if parsed is not None:
            out.setdefault(parsed, None)
    return list(out)


class AddressGuard:
    """Checks urls against the public-address rule and the allow-list.

    `allow` entries are host names (exact, case-insensitive) or IP addresses / CIDR ranges;
    `ValueError` for an entry that is neither.
    """

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver = system_resolver) -> None:
        self._resolver = resolver
        self._allowed_hosts: set[str] = set()
        self._allowed_nets: list[IPNetwork] = []
        for entry in allow:
            entry = entry.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                self._allowed_nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not _HOSTNAME.match(_ascii_host(entry)):
                    raise ValueError(
                        f"allow_hosts entry {entry!r} is neither a host name nor an IP/CIDR"
                    ) from None
                self._allowed_hosts.add(_ascii_host(entry))

    def _allowed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self._allowed_nets)

    async def check(self, url: str) -> Target:
        """The url pinned to a permitted address; `BlockedURL` saying why when it is not."""
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise BlockedURL(f"only http and https urls can be read, not {scheme or 'a relative url'!r}")
        raw = (parts.hostname or "").rstrip(".")
        if not raw:
            raise BlockedURL("the url has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise BlockedURL("the url has an invalid port") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query

        literal = parse_ip(raw)
        if literal is not None:
            host = str(literal)
            addresses: Sequence[IPAddress] = [literal]
        else:
            host = _ascii_host(raw)
            last = host.rsplit(".", 1)[-1]
            if _NUMERIC_LABEL.match(last) or not _HOSTNAME.match(host):
                raise BlockedURL(f"invalid host {raw!r}")
            addresses = await self._resolver(host, port)
            if not addresses:
                raise BlockedURL(f"{host} does not resolve to any address")

        chosen = addresses[0]
        if host not in self._allowed_hosts:
            # Every answer must pass: the connection may not take the first one.
            for address in addresses:
                if self._allowed(address):
                    continue
                why = refusal(address)
                if why is not None:
                    shown = host if literal is not None else f"{host} ({address})"
                    raise BlockedURL(f"refused to fetch {shown}: a {why} address, not a public one")
        shown_url = f"{scheme}://{_netloc(host, port, scheme)}{path}"
        return Target(url=shown_url, scheme=scheme, host=host, port=port, address=chosen, path=path)


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url.strip())
    except ValueError as exc:
        raise BlockedURL(f"invalid url: {exc}") from None


def _netloc(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
