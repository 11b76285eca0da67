"""Model calls through the environment's forward proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`):
an https endpoint through a CONNECT tunnel with TLS to the endpoint inside it, an http one sent
to the proxy with its absolute URL, against a local proxy that records what it was asked."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from tests.fake_openai import FakeOpenAI, Step
from workers.errors import LLMConfigError, RetryableError
from workers.llm import OpenAIChatModel
from workers.llm.proxy import Proxies
from workers.llm.types import ChatMessage
from workers.settings import LLMSettings

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param({}, id="asyncio"), pytest.param({"use_uvloop": True}, id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both event loops the service runs on: the tunnel's TLS upgrade (`start_tls`) differs."""
    return ("asyncio", request.param)


MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Capital of France?"}]
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


class FakeProxy:
    """A forward proxy on loopback: CONNECT tunnels, absolute-URL forwarding, or a 407."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.heads: list[str] = []  # the head of every request it was sent, as it came
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://agent:s%3Acret@127.0.0.1:{port}"
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.heads.append(head)
        method, target, _ = head.split("\r\n", 1)[0].split(" ")
        if self.refuse:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            # As a proxy forwards: origin-form to the endpoint, without the proxy's own header;
            # one request per connection, so it needs no parsing of bodies.
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
            lines = head.removesuffix("\r\n\r\n").split("\r\n")
            lines[0] = f"{method} {url.path}{'?' + url.query if url.query else ''} HTTP/1.1"
            kept = [
                line for line in lines if not line.lower().startswith(("proxy-authorization:", "connection:"))
            ]
            up_writer.write(("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
        self._pipe(reader, up_writer)
        self._pipe(up_reader, writer)

    def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def copy() -> None:
            with suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        task = asyncio.get_running_loop().create_task(copy())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def settings(fake: FakeOpenAI, **values: Any) -> LLMSettings:
    return LLMSettings.model_validate(
        {"base_url": fake.base_url("main"), "model": "m", "max_retries": 1, "retry_base_delay": 0.01} | values
    )


EXPECTED_AUTH = "Proxy-Authorization: Basic " + base64.b64encode(b"agent:s:cret").decode()


@asynccontextmanager
async def https_behind_proxy(
    ca: trustme.CA, env: pytest.MonkeyPatch, proxy: FakeProxy, *, certified_for: str = "127.0.0.1"
) -> AsyncIterator[FakeOpenAI]:
    """An https endpoint whose certificate (for `certified_for`) the client trusts, with
    `proxy` running as the environment's HTTPS_PROXY."""
    with (
        ca.issue_cert(certified_for).private_key_and_cert_chain_pem.tempfile() as pem,
        ca.cert_pem.tempfile() as roots,
        FakeOpenAI(certfile=pem) as fake,
    ):
        env.setenv("SSL_CERT_FILE", roots)
        async with proxy.running() as url:
            env.setenv("HTTPS_PROXY", url)
            yield fake


async def test_an_https_endpoint_is_reached_through_a_connect_tunnel(
    ca: trustme.CA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = FakeProxy()
    async with https_behind_proxy(ca, no_proxy_env, proxy) as fake:
        fake.script("main", Step(content="Paris, tunnelled."), Step(content="Again."))
        async with OpenAIChatModel.from_settings(settings(fake)) as model:
            first = await model.chat("research", MESSAGES)
            tunnels = len(proxy.heads)  # the call's, and the context-window lookup's
            second = await model.chat("research", MESSAGES)
        endpoint = urlsplit(fake.base_url("main"))
    assert (first.content, second.content) == ("Paris, tunnelled.", "Again.")
    # The second call went through a kept-alive tunnel; the proxy saw only CONNECTs, never a request.
    assert tunnels >= 1 and len(proxy.heads) == tunnels, proxy.heads
    for head in proxy.heads:
        assert head.startswith(f"CONNECT 127.0.0.1:{endpoint.port} HTTP/1.1\r\n")
        assert EXPECTED_AUTH in head.split("\r\n")
        assert "chat/completions" not in head


async def test_the_endpoints_certificate_is_checked_inside_the_tunnel(
    ca: trustme.CA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = FakeProxy()
    async with https_behind_proxy(ca, no_proxy_env, proxy, certified_for="impostor.example") as fake:
        async with OpenAIChatModel.from_settings(settings(fake)) as model:
            with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await model.chat("research", MESSAGES)
        assert fake.count("main") == 0
    assert proxy.heads and all(head.startswith("CONNECT ") for head in proxy.heads)


async def test_an_http_endpoint_is_sent_to_the_proxy_with_its_absolute_url(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    proxy = FakeProxy()
    with FakeOpenAI() as fake:
        fake.script("main", Step(content="Paris, forwarded."))
        async with proxy.running() as url:
            no_proxy_env.setenv("HTTP_PROXY", url)
            async with OpenAIChatModel.from_settings(settings(fake)) as model:
                result = await model.chat("research", MESSAGES)
        base = fake.base_url("main")
    assert result.content == "Paris, forwarded."
    [head] = [head for head in proxy.heads if head.startswith("POST ")]
    assert head.startswith(f"POST {base}/chat/completions HTTP/1.1\r\n"), head
    assert EXPECTED_AUTH in head.split("\r\n")


async def test_no_proxy_hosts_go_direct(no_proxy_env: pytest.MonkeyPatch) -> None:
    proxy = FakeProxy()
    with FakeOpenAI() as fake:
        fake.script("main", Step(content="Paris, direct."))
        async with proxy.running() as url:
            no_proxy_env.setenv("HTTP_PROXY", url)
            no_proxy_env.setenv("NO_PROXY", "example.org,127.0.0.1")
            async with OpenAIChatModel.from_settings(settings(fake)) as model:
                result = await model.chat("research", MESSAGES)
    assert result.content == "Paris, direct."
    assert proxy.heads == []


async def test_a_proxy_that_wants_other_credentials_is_a_configuration_error(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    proxy = FakeProxy(refuse=True)
    with FakeOpenAI(certfile=None) as fake:
        async with proxy.running() as url:
            no_proxy_env.setenv("HTTPS_PROXY", url)
            https = settings(fake, base_url=fake.base_url("main").replace("http://", "https://"))
            async with OpenAIChatModel.from_settings(https) as model:
                with pytest.raises(LLMConfigError, match=r"407.*credentials in HTTPS_PROXY"):
                    await model.chat("research", MESSAGES)
        assert fake.count("main") == 0
    assert len(proxy.heads) == 1  # not retried: other credentials will not come by themselves


def test_proxy_settings_are_read_as_curl_reads_them() -> None:
    proxies = Proxies({"https_proxy": "proxy.corp:3128", "NO_PROXY": ".internal,10.1.2.3"})
    tunnel = proxies.for_origin("https", "openrouter.ai", 443)
    assert tunnel is not None and (tunnel.host, tunnel.port, tunnel.authorization) == (
        "proxy.corp",
        3128,
        None,
    )
    assert proxies.for_origin("http", "openrouter.ai", 80) is None  # HTTPS_PROXY is for https only
    assert proxies.for_origin("https", "vllm.internal", 443) is None
    assert proxies.for_origin("https", "10.1.2.3", 8000) is None
    assert proxies.for_origin("https", "api.internal.example.com", 443) is not None  # a suffix only
    curl_like = Proxies(
        {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.org, 10.0.0.0/8, gpu:8443, ::1"}
    )
    assert curl_like.for_origin("https", "api.example.org", 443) is None
    assert curl_like.for_origin("https", "example.org", 443) is None
    assert curl_like.for_origin("https", "badexample.org", 443) is not None
    assert curl_like.for_origin("https", "10.200.0.5", 443) is None
    assert curl_like.for_origin("https", "11.0.0.1", 443) is not None
    assert curl_like.for_origin("https", "gpu", 8443) is None
    assert curl_like.for_origin("https", "gpu", 443) is not None
    assert curl_like.for_origin("https", "::1", 443) is None
    assert Proxies({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}).for_origin("https", "a.b", 443) is None
    everything = Proxies({"ALL_PROXY": "http://p:8080"})
    assert everything.for_origin("http", "a.example", 80) is not None
    assert everything.for_origin("https", "a.example", 443) is not None
    assert not Proxies({})
    with pytest.raises(LLMConfigError, match="only http:// proxies"):
        Proxies({"HTTPS_PROXY": "socks5://p:1080"})
