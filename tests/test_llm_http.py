"""The model endpoints' own HTTP/1.1 client (`workers/llm/http.py`) against a loopback server that
sends exactly the bytes a test scripts: body framings, keep-alive reuse, drops and stalls, on
asyncio's and uvloop's event loops; and TLS through the whole LLM client."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme

from tests.fake_openai import FakeOpenAI, Step
from workers.errors import RetryableError
from workers.llm import OpenAIChatModel
from workers.llm.http import HTTPClient
from workers.llm.types import ChatMessage
from workers.settings import LLMSettings

Reply = bytes | Callable[[anyio.abc.SocketStream], Awaitable[None]]
MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture(params=[pytest.param(False, id="asyncio"), pytest.param(True, id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return "asyncio", {"use_uvloop": request.param}


class RawServer:
    """Answers each request, in arrival order, with the next scripted reply: bytes sent as they
    are (the connection stays open for the next request unless the reply says `Connection:
    close`), or a function that writes what it likes; the connection closes after it."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = deque(replies)
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        async with stream:
            while True:
                try:
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    found = re.search(rb"content-length: *(\d+)", head, re.I)
                    length = int(found.group(1)) if found else 0
                    while len(buffer) < length:
                        buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                buffer = buffer[length:]
                self.requests.append(head)
                reply = self.replies.popleft()
                if not isinstance(reply, bytes):
                    await reply(stream)
                    return
                await stream.send(reply)
                if b"connection: close" in reply.lower():
                    return


@asynccontextmanager
async def serving(server: RawServer) -> AsyncIterator[str]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def fixed(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in ("HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra))
    return f"{head}\r\n".encode() + body


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + (b"0\r\n\r\n" if end else b"")


async def post(http: HTTPClient, url: str, read_timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    with anyio.fail_after(10):
        async with http.request(
            "POST", f"{url}/v1/chat/completions", body=b"{}", read_timeout=read_timeout
        ) as response:
            return response.status, response.headers, await response.read()


@pytest.mark.anyio
async def test_fixed_and_chunked_bodies_share_one_kept_alive_connection() -> None:
    server = RawServer(
        fixed(b'{"a": 1}', "Content-Type: application/json"),
        chunked(b"data: one\n", b"\n", b"data: t", b"wo\n\n"),
        fixed(b"", "X-Empty: yes"),
    )
    async with serving(server) as url, HTTPClient() as http:
        first = await post(http, url)
        second = await post(http, url)
        third = await post(http, url)
    assert first == (200, {"content-length": "8", "content-type": "application/json"}, b'{"a": 1}')
    assert second[2] == b"data: one\n\ndata: two\n\n"
    assert third[1]["x-empty"] == "yes" and third[2] == b""
    assert server.connections == 1
    assert len(server.requests) == 3
    assert b"Content-Length: 2" in server.requests[0]
    assert re.search(rb"Host: 127\.0\.0\.1:\d+", server.requests[0])


@pytest.mark.anyio
async def test_a_body_delimited_by_the_close_is_read_and_the_connection_not_reused() -> None:
    async def to_the_close(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")

    server = RawServer(to_the_close, fixed(b"next"))
    async with serving(server) as url, HTTPClient() as http:
        assert (await post(http, url))[2] == b"all of it"
        assert (await post(http, url))[2] == b"next"
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_connection_dropped_mid_body_is_retryable_and_charged() -> None:
    async def drop(stream: anyio.abc.SocketStream) -> None:
        await stream.send(chunked(b"data: half", end=False))

    async with serving(RawServer(drop)) as url, HTTPClient() as http:
        with pytest.raises(RetryableError, match="dropped") as caught:
            await post(http, url)
    assert caught.value.charged


@pytest.mark.anyio
async def test_a_connection_closed_before_any_answer_is_retryable_and_not_charged() -> None:
    async def close(stream: anyio.abc.SocketStream) -> None:
        return None

    async with serving(RawServer(close)) as url, HTTPClient() as http:
        with pytest.raises(RetryableError, match="without sending a response") as caught:
            await post(http, url)
    assert not caught.value.charged


@pytest.mark.anyio
async def test_a_kept_alive_connection_closed_as_the_request_arrives_is_replaced_once() -> None:
    """The keep-alive race: the server times the idle connection out just as the next request
    goes out on it. The request goes again on a new connection, not back to the caller."""

    async def answer_then_close_on_the_next(stream: anyio.abc.SocketStream) -> None:
        await stream.send(fixed(b"first"))
        await stream.receive()  # the next request arrives, and is never answered

    server = RawServer(answer_then_close_on_the_next, fixed(b"second"))
    async with serving(server) as url, HTTPClient() as http:
        assert (await post(http, url))[2] == b"first"
        assert (await post(http, url))[2] == b"second"
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_response_sent_to_an_idle_connection_is_not_taken_for_the_next_one() -> None:
    """Some servers send a 408 on an idle connection before closing it: here right behind the
    answer, in the same write."""

    async def answer_then_408(stream: anyio.abc.SocketStream) -> None:
        await stream.send(fixed(b"first") + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        # The client hangs up on this connection instead of sending the next request on it.
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()

    server = RawServer(answer_then_408, fixed(b"second"))
    async with serving(server) as url, HTTPClient() as http:
        assert await post(http, url) == (200, {"content-length": "5"}, b"first")
        assert await post(http, url) == (200, {"content-length": "6"}, b"second")
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_stalled_body_ends_at_the_read_timeout() -> None:
    async def stall(stream: anyio.abc.SocketStream) -> None:
        await stream.send(chunked(b"data: first\n\n", end=False))
        await anyio.sleep_forever()

    async with serving(RawServer(stall)) as url, HTTPClient() as http:
        started = time.monotonic()
        with pytest.raises(RetryableError, match="ReadTimeout") as caught:
            await post(http, url, read_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert caught.value.charged


def trickle(pieces: int, gap: float, *, then_stall: bool) -> Reply:
    """A chunked reply sent a piece every `gap` seconds; then its end, or silence."""

    async def send(stream: anyio.abc.SocketStream) -> None:
        await stream.send(chunked(end=False))
        for i in range(pieces):
            await anyio.sleep(gap)
            piece = f"data: {i}\n\n".encode()
            await stream.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if then_stall:
            await anyio.sleep_forever()
        await stream.send(b"0\r\n\r\n")

    return send


@pytest.mark.anyio
async def test_a_body_that_keeps_coming_outlasts_the_read_timeout() -> None:
    # The timeout is on silence, not on the whole body: 8 pieces 0.1 s apart take twice the
    # 0.4 s read timeout, and each wait is short.
    async with serving(RawServer(trickle(8, 0.1, then_stall=False))) as url, HTTPClient() as http:
        started = time.monotonic()
        status, _, body = await post(http, url, read_timeout=0.4)
    assert time.monotonic() - started >= 0.8
    assert (status, body) == (200, b"".join(f"data: {i}\n\n".encode() for i in range(8)))


@pytest.mark.anyio
async def test_silence_after_some_pieces_ends_one_read_timeout_after_the_last() -> None:
    async with serving(RawServer(trickle(5, 0.1, then_stall=True))) as url, HTTPClient() as http:
        started = time.monotonic()
        with pytest.raises(RetryableError, match=r"ReadTimeout: no data for 0\.4s"):
            await post(http, url, read_timeout=0.4)
    assert 0.5 + 0.4 <= time.monotonic() - started < 5


@pytest.mark.anyio
async def test_garbage_instead_of_http_is_retryable() -> None:
    async with serving(RawServer(b"SSH-2.0-OpenSSH\r\n\r\n")) as url, HTTPClient() as http:
        with pytest.raises(RetryableError, match="malformed HTTP response"):
            await post(http, url)


@pytest.mark.anyio
async def test_a_refused_connection_is_retryable() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with HTTPClient() as http:
        with pytest.raises(RetryableError, match="ConnectError"):
            await post(http, f"http://127.0.0.1:{port}")


@pytest.mark.anyio
async def test_a_response_left_half_read_hangs_up() -> None:
    """The server sees the client close (and would stop generating) instead of a connection
    kept for reuse with half a response still in it."""
    hung_up = anyio.Event()

    async def half(stream: anyio.abc.SocketStream) -> None:
        await stream.send(chunked(b"data: a\n\n", end=False))
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        hung_up.set()

    server = RawServer(half, fixed(b"again"))
    async with serving(server) as url, HTTPClient() as http:
        async with http.request("POST", f"{url}/x", body=b"{}", read_timeout=5) as response:
            assert response.status == 200
        with anyio.fail_after(5):
            await hung_up.wait()
        assert (await post(http, url))[2] == b"again"


# -- TLS, through the LLM client ---------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test CA as the trusted roots, the way a user points the service at theirs."""
    with ca.cert_pem.tempfile() as pem:
        monkeypatch.setenv("SSL_CERT_FILE", pem)
        yield


def tls_settings(fake: FakeOpenAI, **values: Any) -> LLMSettings:
    return LLMSettings.model_validate(
        {"base_url": fake.base_url("main"), "model": "m", "max_retries": 1, "retry_base_delay": 0.01} | values
    )


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_an_https_endpoint_streams_over_verified_tls(
    ca: trustme.CA, trusting: None, stream: bool
) -> None:
    with (
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.tempfile() as pem,
        FakeOpenAI(certfile=pem) as fake,
    ):
        fake.script("main", Step(content="Paris, over TLS."), Step(content="Again."))
        parts: list[str] = []

        async def on_delta(text: str) -> None:
            parts.append(text)

        async with OpenAIChatModel.from_settings(tls_settings(fake, stream=stream)) as model:
            first = await model.chat("research", MESSAGES, on_delta=on_delta)
            second = await model.chat("research", MESSAGES)
        assert fake.base_url("main").startswith("https://")
    assert first.content == "Paris, over TLS." and second.content == "Again."
    assert ("".join(parts) == first.content) if stream else parts == []


@pytest.mark.anyio
async def test_a_certificate_for_another_name_is_refused(ca: trustme.CA, trusting: None) -> None:
    with (
        ca.issue_cert("impostor.example").private_key_and_cert_chain_pem.tempfile() as pem,
        FakeOpenAI(certfile=pem) as fake,
    ):
        async with OpenAIChatModel.from_settings(tls_settings(fake)) as model:
            with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await model.chat("research", MESSAGES)
        assert fake.count("main") == 0
