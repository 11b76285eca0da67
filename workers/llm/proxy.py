"""Forward proxies for the model client, from the environment as curl and httpx read it.

`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (either case) name an `http://` proxy, with
optional `user:password@` for Basic proxy authentication; `NO_PROXY` lists hosts (and domain
suffixes) that go direct. An `https://` origin goes through a `CONNECT` tunnel, with TLS to the
origin inside it, so the proxy never sees the request or the API key; an `http://` origin is
sent to the proxy with its absolute URL. A proxy the client cannot use (another scheme, no
host) is a configuration error, raised when the client is built rather than at the first call.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from workers.errors import LLMConfigError, RetryableError

# The variables read (in either case).
VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# A proxy's answer to CONNECT is a status line and a few headers; more is not a proxy.
_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header's value, when the URL has a user

    @classmethod
    def parse(cls, url: str, variable: str) -> Proxy:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise LLMConfigError(
                f"{variable}={url!r}: only http:// proxies are supported for model endpoints"
            )
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        return cls(parts.hostname, parts.port or 80, authorization)


class Proxies:
    """Which proxy, if any, each origin goes through."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        found = (
            urllib.request.getproxies_environment()
            if environ is None
            else {k.lower().removesuffix("_proxy"): v for k, v in environ.items() if k.lower() in VARIABLES}
        )
        self._no_proxy = found.pop("no", "")
        self._by_scheme = {
            scheme: Proxy.parse(found.get(scheme) or found["all"], f"{scheme.upper()}_PROXY")
            for scheme in ("http", "https")
            if found.get(scheme) or found.get("all")
        }

        # Decided once per origin: every request asks, and NO_PROXY is parsed to answer.
        self._decided: dict[tuple[str, str, int], Proxy | None] = {}

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        origin = (scheme, host, port)
        if origin not in self._decided:
            proxy = self._by_scheme.get(scheme)
            self._decided[origin] = None if proxy is None or _bypassed(host, port, self._no_proxy) else proxy
        return self._decided[origin]


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, hosts and their subdomains (`example.org`, `.example.org`),
    `host:port`, and IP addresses or networks (`10.0.0.0/8`)."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if wanted and not wanted.isdigit():
            name, wanted = entry, ""
        if wanted and int(wanted) != port:
            continue
        name = name.strip("[]").lstrip(".")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT, and nothing more: the TLS layer takes over after."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.head += data
        if self.answered.done():
            return
        if b"\r\n\r\n" in self.head:
            self.answered.set_result(bytes(self.head))
        elif len(self.head) > _MAX_HEAD:
            self.answered.set_exception(RetryableError("the proxy's answer to CONNECT is not HTTP"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(
                RetryableError(f"the proxy closed the connection during CONNECT ({exc or 'no answer'})")
            )


async def open_tunnel(proxy: Proxy, host: str, port: int) -> Any:
    """A transport through `proxy` to `host:port`, once the proxy said yes to CONNECT.

    A 407 (the proxy wants other credentials) is a configuration error; any other refusal is
    an outage of the path to the endpoint, and retryable."""
    loop = asyncio.get_running_loop()
    try:
        transport, handshake = await loop.create_connection(_Handshake, proxy.host, proxy.port)
    except OSError as exc:
        raise RetryableError(f"ConnectError: proxy {proxy.host}:{proxy.port}: {exc}") from exc
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        head = await handshake.answered
    except BaseException:
        transport.close()
        raise
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    if not 200 <= status < 300 or not fields[0].startswith("HTTP/1."):
        transport.close()
        message = f"the proxy {proxy.host}:{proxy.port} refused CONNECT {authority}: {status_line[:200]!r}"
        if status == 407:
            raise LLMConfigError(message + " (check the credentials in HTTPS_PROXY)")
        raise RetryableError(message)
    if not head.endswith(b"\r\n\r\n") or head.count(b"\r\n\r\n") > 1:
        transport.close()
        raise RetryableError(f"the proxy {proxy.host}:{proxy.port} sent bytes after its answer to CONNECT")
    return transport
