"""An API process on Redis serves many event streams at once: each holds a Redis connection
during its blocking read, and a crowd of them must queue for connections, never fail."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import httpx
import pytest

from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.server import SSEStream, api_settings, live_server, open_stream, parse_sse

pytestmark = pytest.mark.anyio

STREAMS = 150  # more than redis-py's default pool of 100 connections


async def test_150_streams_on_one_api_process_all_get_every_event(
    mini_corpus: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # API only: no worker anywhere, so the job stays queued until it is cancelled.
    settings = api_settings(
        mini_corpus, backend="redis", redis_url=redis_server.url, redis_prefix=f"t{os.urandom(4).hex()}"
    )
    with live_server(settings) as server:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with server.client(limits=limits) as client:
            created = await client.post("/v1/research", json={"query": "Who founded Aldmere?", "agents": 1})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            streams = [SSEStream() for _ in range(STREAMS)]
            opened = anyio.Event()
            first_seen = 0

            async def watch(stream: SSEStream) -> None:
                nonlocal first_seen
                async with open_stream(client, f"/v1/research/{job_id}/events") as response:
                    async for _ in parse_sse(response, stream):
                        if len(stream.messages) == 1:
                            first_seen += 1
                            if first_seen == STREAMS:
                                opened.set()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for stream in streams:
                        tg.start_soon(watch, stream)
                    # Every stream is open and blocked on Redis; now end the job.
                    await opened.wait()
                    cancelled = await client.post(f"/v1/research/{job_id}/cancel")
                    assert cancelled.status_code in (200, 202), cancelled.text

    for stream in streams:
        assert stream.ended
        assert [e["type"] for e in stream.events] == ["job.queued", "job.cancelled"]
