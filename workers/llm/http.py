"""A small keep-alive HTTP/1.1 client for the model endpoints: asyncio protocols, httptools parsing.

The model call is the engine's floor: per call, httpx costs three to six times what this does
(`bench/bench_http_client.py`). It does only what a chat-completions call needs: one request at a
time per connection, a body sent whole, the response read as it arrives (chunked, by
Content-Length, or to the close), idle connections kept per origin and reused, TLS verified
against certifi's roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`, as httpx reads them), through
the environment's forward proxy when there is one (`workers.llm.proxy`). No redirects,
compression or HTTP/2.

A transport failure raises `RetryableError`; `charged` says whether the server had answered
(after that, it may have spent tokens). A connection goes back to the pool only once its
response was read to the end and both sides keep it alive; anything else closes it, so a
cancelled call hangs up on the server, which then stops generating. The body is kept as it
arrives, with no back-pressure: a model's reply is bounded by its `max_tokens`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, Self
from urllib.parse import urlsplit

import certifi
import httptools

from workers.errors import RetryableError
from workers.llm.proxy import Proxies, open_tunnel

# Idle connections kept per origin; the limiter caps how many are ever in use.
MAX_IDLE = 64
_TIMER_SLACK = 0.001  # seconds
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it (httptools calls the `on_*` methods)."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.lost = False
        self.failure: str | None = None
        self._loop = asyncio.get_running_loop()
        # One silence timer per response, not one per read (a streamed reply is read in many
        # pieces, and a timer apiece was a tenth of a call's cost): it checks, when it fires,
        # whether the wait then pending began `timeout` seconds ago, and re-arms if not.
        self._timer: asyncio.TimerHandle | None = None
        self._wait_began = 0.0
        self._timeout = 0.0
        self.reset()

    def reset(self) -> None:
        """Ready for the next response on this connection."""
        self.disarm()
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of this response
        self.unsolicited = False
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.failure = "the server switched protocols"
        except httptools.HttpParserError as exc:
            self.failure = f"malformed HTTP response: {exc}"
        if self.failure is not None:
            self.transport.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and not self.complete and exc is None and self._delimited_by_close():
            self.complete = True
        self._wake()

    # -- httptools callbacks -------------------------------------------------------------------
    # Bytes after the response's end (nothing was asked for them: a server's 408 before it
    # closes an idle connection) are not this response's: they only make the connection unusable.
    def on_message_begin(self) -> None:
        if self.complete:
            self.unsolicited = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.unsolicited:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if not self.unsolicited:
            self.status = self.parser.get_status_code()
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self.unsolicited:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.unsolicited:
            return
        # Asked now: once the message is done the parser forgets what the headers said.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    # -- the reading side ----------------------------------------------------------------------
    def _delimited_by_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something arrives or the connection ends; `TimeoutError` after `timeout`
        seconds of silence."""
        self.waiter = waiter = self._loop.create_future()
        self._wait_began, self._timeout = self._loop.time(), timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._wait_began + timeout, self._on_timer)
        try:
            await waiter
        finally:
            self.waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nothing is waiting: the next wait arms a new timer
        deadline = self._wait_began + self._timeout
        # A loop may run a timer up to its clock's resolution early (uvloop's is 1 ms).
        if self._loop.time() >= deadline - _TIMER_SLACK:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.disarm()
        self.transport.close()

    def check(self) -> None:
        if self.failure is not None:
            raise RetryableError(self.failure, charged=self.headers_done)
        if self.lost and not self.complete:
            if self.headers_done:
                raise RetryableError("connection dropped mid-response", charged=True)
            raise RetryableError("server disconnected without sending a response")

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.unsolicited
            and not self.lost
            and self.failure is None
        )


class Response:
    """A response whose headers arrived; the body is read with `read` or `iter_bytes`."""

    def __init__(self, conn: _Connection, read_timeout: float) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self.status = conn.status
        self.headers = conn.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; `RetryableError` on silence for `read_timeout` seconds or a
        connection lost before the body's end."""
        conn = self._conn
        while True:
            if conn.body:
                parts, conn.body = conn.body, []
                yield parts[0] if len(parts) == 1 else b"".join(parts)
                continue
            if conn.complete:
                return
            conn.check()
            try:
                await conn.wait(self._read_timeout)
            except TimeoutError:
                raise RetryableError(
                    f"ReadTimeout: no data for {self._read_timeout:g}s", charged=True
                ) from None

    async def read(self) -> bytes:
        return b"".join([part async for part in self.iter_bytes()])


class HTTPClient:
    """Keep-alive connections per origin. Use as `async with`, or call `aclose()` when done."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, proxies: Proxies | None = None) -> None:
        self._ssl = ssl_context
        # Read from the environment once, when the client is built (a bad proxy URL fails here).
        self._proxies = Proxies() if proxies is None else proxies
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        read_timeout: float,
    ) -> AsyncIterator[Response]:
        """Send one request and yield its response once the headers arrived. `read_timeout`
        bounds every wait for the server (the headers, then each piece of the body); the
        caller bounds the whole."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]
        origin = (parts.scheme, host, port)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        authority = host if port == _DEFAULT_PORTS[parts.scheme] else f"{host}:{port}"
        if ":" in host:
            authority = f"[{host}]" if port == _DEFAULT_PORTS[parts.scheme] else f"[{host}]:{port}"
        proxy = self._proxies.for_origin(parts.scheme, host, port) if self._proxies else None
        extra: list[str] = []
        if proxy is not None and parts.scheme == "http":
            # Sent to the proxy itself, which wants the whole URL (an https origin is tunnelled).
            target = f"http://{authority}{target}"
            if proxy.authorization is not None:
                extra.append(f"Proxy-Authorization: {proxy.authorization}")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}", "Accept-Encoding: identity", *extra]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        conn = await self._send(
            origin, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, read_timeout
        )
        try:
            yield Response(conn, read_timeout)
        finally:
            if conn.reusable and len(idle := self._idle.setdefault(origin, [])) < MAX_IDLE:
                conn.reset()
                idle.append(conn)
            else:
                conn.close()

    async def _send(self, origin: tuple[str, str, int], request: bytes, read_timeout: float) -> _Connection:
        """Write the request and wait for the response's headers. A kept-alive connection the
        server closed just as the request went out (not a byte came back) is replaced by a new
        one, once: the race every keep-alive client meets when a server times idle ones out."""
        conn = self._idle_connection(origin)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin)
            conn.transport.write(request)
            try:
                while not conn.headers_done:
                    conn.check()
                    try:
                        await conn.wait(read_timeout)
                    except TimeoutError:
                        raise RetryableError(
                            f"ReadTimeout: no response for {read_timeout:g}s", charged=True
                        ) from None
                return conn
            except RetryableError:
                conn.close()
                if not (reused and conn.lost and not conn.received):
                    raise
            except BaseException:
                conn.close()
                raise
            conn, reused = None, False

    def _idle_connection(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            # A server closes idle connections on its own timer (some say so first, with a 408):
            # skip the ones it already did.
            if not conn.lost and not conn.received and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        context = (self._ssl or default_ssl_context()) if scheme == "https" else None
        loop = asyncio.get_running_loop()
        proxy = self._proxies.for_origin(scheme, host, port) if self._proxies else None
        if proxy is not None and context is None:
            host, port = proxy.host, proxy.port  # a plain request, sent to the proxy
        elif proxy is not None and context is not None:
            raw = await open_tunnel(proxy, host, port)
            conn = _Connection()
            try:
                # TLS with the endpoint inside the tunnel: certificate checked against its name.
                tls = await loop.start_tls(raw, conn, context, server_hostname=host)
            except (OSError, ssl.SSLError) as exc:
                raw.close()
                raise RetryableError(f"ConnectError: {exc or type(exc).__name__}") from exc
            except BaseException:
                raw.close()
                raise
            if tls is None:  # the loop gave no TLS transport back: nothing to talk over
                raw.close()
                raise RetryableError("ConnectError: TLS through the proxy tunnel did not start")
            conn.connection_made(tls)
            return conn
        try:
            _, conn = await loop.create_connection(
                _Connection, host, port, ssl=context, server_hostname=host if context else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise RetryableError(f"ConnectError: {exc or type(exc).__name__}") from exc
        return conn

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def default_ssl_context() -> ssl.SSLContext:
    """Verified TLS against `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else certifi's roots."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@cache
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # Loading the roots takes milliseconds: once per process, not per connection.
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())
