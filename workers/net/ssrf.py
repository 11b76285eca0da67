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
benchmark ranges. An IPv6 address that carries an IPv4 one (mapped, translated, NAT64 and its
local-use prefix, 6to4, Teredo, ISATAP, IPv4-compatible) is judged by the IPv4 address it
carries, since that is the host it reaches; the deprecated IPv4-compatible form is refused even
around a public address. Refusals are sentences naming the address and why.
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

from workers.errors import BlockedURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolves a host name to its addresses (the port only helps getaddrinfo pick socket types).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Why each range is refused, in the words the refusal uses.
_BLOCKED_V4: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified / 'this network'", _nets("0.0.0.0/8")),
    ("loopback", _nets("127.0.0.0/8")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("carrier-grade NAT", _nets("100.64.0.0/10")),
    ("link-local (cloud metadata)", _nets("169.254.0.0/16")),
    ("IETF protocol assignment", _nets("192.0.0.0/24")),
    ("documentation", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("6to4 relay anycast", _nets("192.88.99.0/24")),
    ("benchmarking", _nets("198.18.0.0/15")),
    ("multicast", _nets("224.0.0.0/4")),
    ("reserved / broadcast", _nets("240.0.0.0/4")),
)
_BLOCKED_V6: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("::/128")),
    ("loopback", _nets("::1/128")),
    ("discard-only", _nets("100::/64")),
    ("IETF protocol assignment", _nets("2001::/23")),
    ("documentation", _nets("2001:db8::/32", "3fff::/20")),
    ("unique local (private; incl. metadata fd00:ec2::254)", _nets("fc00::/7")),
    ("link-local", _nets("fe80::/10")),
    ("site-local (deprecated)", _nets("fec0::/10")),
    ("multicast", _nets("ff00::/8")),
)


def _low32(address: int) -> int:
    return address & 0xFFFFFFFF


def _teredo_client(address: int) -> int:
    # RFC 4380: the client's IPv4 address is stored bit-inverted in the last 32 bits.
    return ~address & 0xFFFFFFFF


def _sixtofour(address: int) -> int:
    return (address >> 80) & 0xFFFFFFFF


# IPv6 forms that carry an IPv4 address, with where it sits. Such an address reaches (or is
# treated by stacks as) that IPv4 host, so it is judged by the host it embeds. `routable`:
# whether the form itself can reach a public host at all; the IPv4-compatible form is
# deprecated and routed nowhere, so it is refused even around a public address.
@dataclass(frozen=True, slots=True)
class _Embedding:
    form: str
    network: IPNetwork
    extract: Callable[[int], int]
    routable: bool = True


_EMBEDDINGS: tuple[_Embedding, ...] = (
    _Embedding("IPv4-mapped", ipaddress.ip_network("::ffff:0:0/96"), _low32),
    _Embedding("IPv4-translated", ipaddress.ip_network("::ffff:0:0:0/96"), _low32),
    _Embedding("NAT64", ipaddress.ip_network("64:ff9b::/96"), _low32),
    _Embedding("local-use NAT64", ipaddress.ip_network("64:ff9b:1::/48"), _low32),
    _Embedding("6to4", ipaddress.ip_network("2002::/16"), _sixtofour),
    _Embedding("Teredo", ipaddress.ip_network("2001::/32"), _teredo_client),
    _Embedding("IPv4-compatible", ipaddress.ip_network("::/96"), _low32, routable=False),
)
# ISATAP keeps the IPv4 address in the interface id (`…:0:5efe:a.b.c.d` or `…:200:5efe:…`)
# under any prefix.
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def _embedded(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """(form, embedded IPv4 address, routable) for an IPv6 address that carries one."""
    value = int(address)
    if address in _BLOCKED_V6[0][1][0] or address in _BLOCKED_V6[1][1][0]:
        return None  # :: and ::1 are themselves, not IPv4-compatible addresses
    for embedding in _EMBEDDINGS:
        if address in embedding.network:
            return embedding.form, ipaddress.IPv4Address(embedding.extract(value)), embedding.routable
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        return "ISATAP", ipaddress.IPv4Address(_low32(value)), True
    return None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _teredo_server(address: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address((address >> 64) & 0xFFFFFFFF)


def refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public address, as a noun phrase ("a private address"), or None
    when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = _embedded(address)
        if carried is not None:
            form, embedded, routable = carried
            # Teredo also names its relay server; both ends must be public.
            inner = [embedded, _teredo_server(int(address))] if form == "Teredo" else [embedded]
            for ipv4 in inner:
                why = refusal(ipv4)
                if why is not None:
                    return f"{_article(form)} {form} form of {ipv4}, which is {why}"
            if not routable:
                return f"{_article(form)} {form} address (deprecated, routed nowhere)"
            return None
        table = _BLOCKED_V6
    else:
        table = _BLOCKED_V4
    for why, networks in table:
        if any(address in net for net in networks):
            return f"{_article(why)} {why} address"
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
        raise BlockedURL(f"Invalid host name {host!r}: {exc}.") from None


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
        raise BlockedURL(f"Cannot resolve {host}: {exc.strerror or exc}.") from None
    out: dict[IPAddress, None] = {}
    for *_, sockaddr in infos:
        parsed = parse_ip(str(sockaddr[0]))
        if parsed is not None:
            out.setdefault(parsed, None)
    return list(out)


_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>[0-9]+))?$")


def _split_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `1.2.3.4/8:port`, `[v6]:port` or a bare IPv6 address / range."""
    bracketed = _BRACKETED.match(entry)
    if bracketed:
        host, port = bracketed["host"], bracketed["port"]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, None  # no colon, or a bare IPv6 address: no port
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"allow_hosts entry {entry!r} has an invalid port {port!r}")
    return host, int(port)


class AddressGuard:
    """Checks urls against the public-address rule and the allow-list.

    `allow` entries are host names (exact, case-insensitive) or IP addresses / CIDR ranges,
    each optionally with a port (`wiki.internal:8080`, `10.0.0.0/8:443`, `[fd00::1]:80`) that
    limits the entry to that port; `ValueError` for an entry that is none of these.
    """

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver = system_resolver) -> None:
        self._resolver = resolver
        # A port of None: any port.
        self._allowed_hosts: list[tuple[str, int | None]] = []
        self._allowed_nets: list[tuple[IPNetwork, int | None]] = []
        for raw in allow:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            host, port = _split_entry(entry)
            try:
                self._allowed_nets.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                if not _HOSTNAME.match(_ascii_host(host)):
                    raise ValueError(
                        f"allow_hosts entry {raw!r} is neither a host name nor an IP address or "
                        "range (each optionally with :port)"
                    ) from None
                self._allowed_hosts.append((_ascii_host(host), port))

    def _host_allowed(self, host: str, port: int) -> bool:
        return any(host == name and allowed in (None, port) for name, allowed in self._allowed_hosts)

    def _allowed(self, address: IPAddress, port: int) -> bool:
        return any(
            address.version == net.version and address in net and allowed in (None, port)
            for net, allowed in self._allowed_nets
        )

    async def check(self, url: str) -> Target:
        """The url pinned to a permitted address; `BlockedURL` saying why when it is not."""
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise BlockedURL(f"Only http and https urls can be read, not {scheme or 'a relative url'!r}.")
        raw = (parts.hostname or "").rstrip(".")
        if not raw:
            raise BlockedURL("The url has no host.")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise BlockedURL("The url has an invalid port.") from None
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
                raise BlockedURL(f"Invalid host {raw!r}.")
            addresses = await self._resolver(host, port)
            if not addresses:
                raise BlockedURL(f"{host} does not resolve to any address.")

        chosen = addresses[0]
        if not self._host_allowed(host, port):
            # Every answer must pass: the connection may not take the first one.
            for address in addresses:
                if self._allowed(address, port):
                    continue
                why = refusal(address)
                if why is not None:
                    shown = host if literal is not None else f"{host} ({address})"
                    raise BlockedURL(f"Refused to fetch {shown}: it is {why}, not a public one.")
        shown_url = f"{scheme}://{_netloc(host, port, scheme)}{path}"
        return Target(url=shown_url, scheme=scheme, host=host, port=port, address=chosen, path=path)


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url.strip())
    except ValueError as exc:
        raise BlockedURL(f"Invalid url: {exc}.") from None


def _netloc(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
