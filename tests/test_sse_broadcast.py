"""One broadcaster per job per API process, on real Redis and a real uvicorn: every client of a
job gets the identical stream from one reader of the log; a client that never reads is dropped
without holding up the others; a Redis outage ends open streams with a `retry:` hint, and they
resume after the restart with nothing lost.

The API process runs no engine (Redis backend, no worker): the test writes the job's events
into Redis itself, through a backend of its own, so it controls how many and how large.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as redis_asyncio

from tests.redis_server import RedisServer, redis_servers  # noqa: F401  (fixture)
from tests.server import SSEStream, api_settings, live_server, open_stream, parse_sse
from workers.backend.redis import RedisBackend
from workers.events import EventType, NewEvent

pytestmark = pytest.mark.anyio

QUESTION = "Who founded Aldmere?"
UNLIMITED = httpx.Limits(max_connections=None, max_keepalive_connections=None)


def redis_api(corpus: Path, server: RedisServer, prefix: str, **server_settings: Any) -> Any:
    return api_settings(
        corpus,
        backend="redis",
        redis_url=server.url,
        redis_prefix=prefix,
        server={"sse_keepalive": 1.0, **server_settings},
    )


async def create_job(client: httpx.AsyncClient) -> str:
    created = await client.post("/v1/research", json={"query": QUESTION, "agents": 1})
    assert created.status_code == 202, created.text
    job_id: str = created.json()["id"]
    return job_id


async def append(backend: RedisBackend, job_id: str, start: int, count: int, size: int = 64) -> None:
    """Events `start .. start+count-1` of a pretend agent, each carrying `size` bytes."""
    for n in range(start, start + count):
        event = NewEvent(type=EventType.report_updated, agent=0, round=n, data={"n": n, "pad": "x" * size})
        assert await backend.append_event(job_id, event.model_copy(update={"key": f"test:{n}"})) is not None


class Watchers:
    """`count` clients streaming one job; `reached(seq)` waits until all have seen it."""

    def __init__(self, client: httpx.AsyncClient, path: str, count: int) -> None:
        self.client = client
        self.path = path
        self.streams = [SSEStream() for _ in range(count)]
        self._progress = anyio.Event()

    async def watch(self, stream: SSEStream, headers: dict[str, str] | None = None) -> None:
        async with open_stream(self.client, self.path, headers=headers) as response:
            async for _ in parse_sse(response, stream):
                self._kick()
        self._kick()

    def _kick(self) -> None:
        progress, self._progress = self._progress, anyio.Event()
        progress.set()

    def last_seq(self, stream: SSEStream) -> int:
        return int(stream.messages[-1].id or 0) if stream.messages else 0

    async def reached(self, seq: int) -> None:
        while not all(self.last_seq(s) >= seq or s.ended for s in self.streams):
            await self._progress.wait()


async def xread_calls(client: redis_asyncio.Redis) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


async def test_many_clients_share_one_reader_and_get_identical_streams(
    mini_corpus: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=False)  # private: its command counts are ours alone
    prefix = f"t{os.urandom(4).hex()}"
    clients, events = 40, 30
    probe = redis_asyncio.Redis.from_url(server.url)
    writer = RedisBackend(server.url, prefix=prefix)
    try:
        with live_server(redis_api(mini_corpus, server, prefix)) as api:
            async with api.client(limits=UNLIMITED) as client:
                job_id = await create_job(client)
                watchers = Watchers(client, f"/v1/research/{job_id}/events", clients)
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for stream in watchers.streams:
                            tg.start_soon(watchers.watch, stream)
                        await watchers.reached(1)
                        await probe.config_resetstat()
                        # One event at a time, each delivered to every client before the next:
                        # every one is a separate wake-up of the job's reader(s).
                        for n in range(events):
                            await append(writer, job_id, n, 1)
                            await watchers.reached(2 + n)
                        reads = await xread_calls(probe)
                        assert (await client.post(f"/v1/research/{job_id}/cancel")).status_code in (200, 202)
    finally:
        await writer.close()
        await probe.aclose()

    reference = [m.data for m in watchers.streams[0].messages]
    assert len(reference) == events + 2
    assert [e["seq"] for e in watchers.streams[0].events] == list(range(1, events + 3))
    assert watchers.streams[0].events[-1]["type"] == "job.cancelled"
    assert all(s.ended and [m.data for m in s.messages] == reference for s in watchers.streams)
    # One reader for the job: about one XREAD per event (plus idle re-blocks), where a reader
    # per client would make at least clients × events = 1200.
    assert reads <= 2 * events + 10, reads


def _open_slow_client(port: int, path: str, http: str = "1.1") -> socket.socket:
    """A raw HTTP client with a tiny receive buffer that never reads (until told to). Over
    HTTP/1.0 the server closes the connection when the stream ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    request = f"GET {path} HTTP/{http}\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def _drain(sock: socket.socket) -> bytes:
    """Everything the server sent, up to its closing the connection."""
    sock.settimeout(30.0)
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def _ids(raw: bytes) -> list[int]:
    return [int(line[4:]) for line in raw.split(b"\n") if line.startswith(b"id: ")]


# 2000 events of 4 KiB (8 MiB) overflow any socket buffers the slow client has (the kernel's
# send buffer tops out at a few MiB), so the server's writes to it stall.
TOTAL, BATCH, SIZE = 2000, 50, 4096


async def _beside_a_slow_client(
    corpus: Path, server: RedisServer, *, buffer: int, watchers: int, http: str
) -> tuple[str, bytes, list[SSEStream]]:
    """A job of TOTAL events, then cancelled, streamed to `watchers` clients that keep up and
    pace the appends, and to one raw client that reads nothing until the job has ended: (the
    job's id, all the raw client then got, the other streams)."""
    prefix = f"t{os.urandom(4).hex()}"
    writer = RedisBackend(server.url, prefix=prefix)
    try:
        with live_server(redis_api(corpus, server, prefix, sse_client_buffer=buffer)) as api:
            async with api.client(limits=UNLIMITED) as client:
                job_id = await create_job(client)
                path = f"/v1/research/{job_id}/events"
                slow = _open_slow_client(api.port, path, http=http)
                fast = Watchers(client, path, watchers)
                with anyio.fail_after(120):
                    async with anyio.create_task_group() as tg:
                        for stream in fast.streams:
                            tg.start_soon(fast.watch, stream)
                        await fast.reached(1)
                        # Paced by the readers that keep up: they are never `buffer` behind,
                        # while the one that never reads falls ever further back.
                        for start in range(0, TOTAL, BATCH):
                            await append(writer, job_id, start, BATCH, SIZE)
                            await fast.reached(1 + start + BATCH)
                        assert (await client.post(f"/v1/research/{job_id}/cancel")).status_code in (200, 202)
                    raw = await anyio.to_thread.run_sync(_drain, slow)
    finally:
        await writer.close()
    for stream in fast.streams:
        assert stream.ended
        assert [e["seq"] for e in stream.events] == list(range(1, TOTAL + 3))
        assert stream.events[-1]["type"] == "job.cancelled"
    return job_id, raw, fast.streams


async def test_a_client_that_never_reads_is_dropped_without_holding_up_the_others(
    mini_corpus: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.broadcast")
    job_id, raw, _ = await _beside_a_slow_client(
        mini_corpus, redis_servers(appendonly=False), buffer=200, watchers=3, http="1.1"
    )
    # The slow client got a gapless prefix, then the server closed its connection.
    got = _ids(raw)
    assert got == list(range(1, len(got) + 1))
    assert len(got) < TOTAL
    drops = [r for r in caplog.records if "SSE client dropped" in r.getMessage()]
    assert len(drops) == 1 and getattr(drops[0], "job_id", None) == job_id


async def test_a_client_whose_socket_fills_gets_the_whole_stream_once_it_reads(
    mini_corpus: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broadcaster writes new events itself while a client's task is idle; when the socket
    is full that write cannot finish at once and is handed to the client's task. With a buffer
    larger than the job, the client is never dropped: once it reads, that write ends and the
    client catches up, getting every event once, in order."""
    caplog.set_level(logging.INFO, logger="app.broadcast")
    _, raw, _ = await _beside_a_slow_client(
        mini_corpus, redis_servers(appendonly=False), buffer=10 * TOTAL, watchers=2, http="1.0"
    )
    assert _ids(raw) == list(range(1, TOTAL + 3))
    assert b"event: job.cancelled" in raw
    assert not [r for r in caplog.records if "SSE client dropped" in r.getMessage()]


async def test_redis_outage_ends_the_stream_with_a_retry_hint_and_it_resumes_losslessly(
    mini_corpus: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=True)  # comes back with its data after a restart
    prefix = f"t{os.urandom(4).hex()}"
    writer = RedisBackend(server.url, prefix=prefix, connect_timeout=1.0)
    try:
        with live_server(redis_api(mini_corpus, server, prefix)) as api:
            async with api.client(limits=UNLIMITED) as client:
                job_id = await create_job(client)
                path = f"/v1/research/{job_id}/events"
                await append(writer, job_id, 0, 5)
                watchers = Watchers(client, path, 3)
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for stream in watchers.streams:
                            tg.start_soon(watchers.watch, stream)
                        await watchers.reached(6)
                        server.kill()
                    # Every stream ended by itself (the task group returned) with a hint.
                    for stream in watchers.streams:
                        assert stream.ended and stream.retry is not None
                        assert [e["seq"] for e in stream.events] == list(range(1, 7))

                    server.start()
                    await append(writer, job_id, 5, 5)
                    assert (await client.post(f"/v1/research/{job_id}/cancel")).status_code in (200, 202)
                    resumed = [await _resume(client, path, s) for s in watchers.streams]
                    whole = await _resume(client, path, SSEStream())
    finally:
        await writer.close()

    assert [e["seq"] for e in whole.events] == list(range(1, 13))
    assert whole.events[-1]["type"] == "job.cancelled"
    for before, after in zip(watchers.streams, resumed, strict=True):
        assert after.ended and after.retry is None
        assert before.events + after.events == whole.events


async def _resume(client: httpx.AsyncClient, path: str, before: SSEStream) -> SSEStream:
    """What a browser does after a cut: reconnect with the last id it saw."""
    headers = {"Last-Event-ID": before.messages[-1].id or "0"} if before.messages else None
    stream = SSEStream()
    async with open_stream(client, path, headers=headers) as response:
        async for _ in parse_sse(response, stream):
            pass
    return stream
