"""HTTP client candidates for the model call (issue 14, item 3). Prints figures; asserts nothing.

Each candidate makes N chat-completion calls to the simulated model (its own process, zero
latency) with the body of one engine research round, streamed and not, one at a time and 16 at
once, over kept-alive connections. The figure is this process's CPU per call (time.process_time):
what the client costs the engine. Every candidate does the same reading work: the body's SSE
events split and each chunk JSON-decoded.

    httpx (before)    the sharded httpx pool and the call as the client made them before
    httpx tuned       one AsyncClient, http1, trust_env off, body pre-encoded, raw bytes read
    aiohttp           ClientSession over a TCPConnector (skipped when aiohttp is not installed)
    own (adopted)     workers/llm/http.py: asyncio.Protocol keep-alive HTTP/1.1, httptools parsing

Run: .venv/bin/python -m bench.bench_http_client [N]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from bench._common import corpus_file, request_body, round_messages, settings_for, sim_process
from workers.llm.http import HTTPClient
from workers.llm.sse import SSEDecoder, iter_sse_data

Call = Callable[[dict[str, Any]], Awaitable[int]]


def _events(data: bytes) -> int:
    """Decode every SSE data line of a body: the reading work each candidate shares."""
    n = 0
    for line in data.split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            json.loads(line[6:])
            n += 1
    return n


# -- candidates --------------------------------------------------------------------------------


@asynccontextmanager
async def httpx_current(url: str) -> AsyncIterator[Call]:
    pool = ClientPool()
    headers_stream = {"Accept": "text/event-stream"}
    headers_json = {"Accept": "application/json"}

    async def call(body: dict[str, Any]) -> int:
        headers = headers_stream if body["stream"] else headers_json
        async with (
            pool.client() as client,
            client.stream(
                "POST", url, json=body, headers=headers, timeout=httpx.Timeout(600, read=60)
            ) as response,
        ):
            if body["stream"]:
                n = 0
                async for data in iter_sse_data(response.aiter_lines()):
                    if data != "[DONE]":
                        json.loads(data)
                        n += 1
                return n
            await response.aread()
            json.loads(response.text)
            return 1

    try:
        yield call
    finally:
        await pool.aclose()


@asynccontextmanager
async def httpx_tuned(url: str) -> AsyncIterator[Call]:
    client = httpx.AsyncClient(
        http1=True,
        http2=False,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(600, read=60),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )
    headers = {"Content-Type": "application/json"}

    async def call(body: dict[str, Any]) -> int:
        content = json.dumps(body).encode()
        async with client.stream("POST", url, content=content, headers=headers) as response:
            data = b"".join([part async for part in response.aiter_raw()])
        return _events(data) if body["stream"] else (json.loads(data) and 1)

    try:
        yield call
    finally:
        await client.aclose()


@asynccontextmanager
async def aiohttp_session(url: str) -> AsyncIterator[Call]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=None),
        timeout=aiohttp.ClientTimeout(total=600, sock_read=60),
        trust_env=False,
        auto_decompress=False,
    )
    headers = {"Content-Type": "application/json"}

    async def call(body: dict[str, Any]) -> int:
        async with session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
            data = b"".join([part async for part in response.content.iter_any()])
        return _events(data) if body["stream"] else (json.loads(data) and 1)

    try:
        yield call
    finally:
        await session.close()


@asynccontextmanager
async def own_client(url: str) -> AsyncIterator[Call]:
    """The adopted client (workers/llm/http.py) read as `EndpointModel` reads it."""
    http = HTTPClient()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}

    async def call(body: dict[str, Any]) -> int:
        content = json.dumps(body).encode()
        async with http.request("POST", url, body=content, headers=headers, read_timeout=60) as response:
            if not body["stream"]:
                json.loads(await response.read())
                return 1
            decoder, n = SSEDecoder(), 0
            async for piece in response.iter_bytes():
                for data in decoder.feed(piece):
                    if data != "[DONE]":
                        json.loads(data)
                        n += 1
            return n

    try:
        yield call
    finally:
        await http.aclose()


class _Shard:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0


class ClientPool:
    """The client's httpx pool before the own client replaced it (was workers/llm/pool.py):
    shards of at most 8 connections, a call on the least busy."""

    def __init__(self) -> None:
        self._shards: list[_Shard] = []

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        shard = min(self._shards, key=lambda s: s.busy, default=None)
        if shard is None or shard.busy >= 8:
            limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
            shard = _Shard(httpx.AsyncClient(limits=limits, follow_redirects=False))
            self._shards.append(shard)
        shard.busy += 1
        try:
            yield shard.client
        finally:
            shard.busy -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.client.aclose()


CANDIDATES: dict[str, Callable[[str], Any]] = {
    "httpx (before)": httpx_current,
    "httpx tuned": httpx_tuned,
    "aiohttp": aiohttp_session,
    "own (adopted)": own_client,
}


async def measure(make: Callable[[str], Any], url: str, body: dict[str, Any], n: int, width: int) -> float:
    """CPU µs per call for `n` calls, `width` at a time, after a warm-up."""
    async with make(url) as call:
        for _ in range(width):
            await call(body)
        cpu = time.process_time()
        async with anyio.create_task_group() as tg:
            for w in range(width):
                tg.start_soon(_loop, call, body, n // width + (w < n % width))
        return 1e6 * (time.process_time() - cpu) / n


async def _loop(call: Call, body: dict[str, Any], count: int) -> None:
    for _ in range(count):
        await call(body)


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with corpus_file() as corpus, sim_process("--min-rounds", "12") as sim:
        messages = await round_messages(settings_for(corpus, sim))
        url = f"{sim}/v1/chat/completions"
        size = len(json.dumps(request_body(messages, stream=True)))
        print(f"HTTP client CPU per model call, {n} calls each, a {size}-byte round body, sim at 0 latency")
        print(f"{'candidate':<18}{'stream x1':>12}{'stream x16':>12}{'json x1':>12}{'json x16':>12}  (µs)")
        for name, make in CANDIDATES.items():
            if name == "aiohttp":
                try:
                    import aiohttp  # noqa: F401
                except ImportError:
                    print(f"{name:<18}(not installed)")
                    continue
            figures = [
                await measure(make, url, request_body(messages, stream=stream), n, width)
                for stream in (True, False)
                for width in (1, 16)
            ]
            print(f"{name:<18}" + "".join(f"{f:>12.0f}" for f in figures))


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
