"""HTTP clients for the LLM endpoints, sharded so each connection pool stays small.

httpcore scans its whole pool on every request and keeps only so many idle connections, so
one pool holding hundreds of in-flight calls spends its time scanning and reconnecting. A new
shard of at most `SHARD_SIZE` connections opens when every shard is full; a call takes the
least busy shard. The concurrency cap itself stays with the limiter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

SHARD_SIZE = 8


class _Shard:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0


class ClientPool:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._shards: list[_Shard] = []

    def _new_shard(self) -> _Shard:
        client = httpx.AsyncClient(
            transport=self._transport,
            # Keep-alive equal to the shard's size: a shard never closes a connection it will
            # want again a second later.
            limits=httpx.Limits(max_connections=SHARD_SIZE, max_keepalive_connections=SHARD_SIZE),
            follow_redirects=False,
        )
        shard = _Shard(client)
        self._shards.append(shard)
        return shard

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        shard = min(self._shards, key=lambda s: s.busy, default=None)
        if shard is None or shard.busy >= SHARD_SIZE:
            shard = self._new_shard()
        shard.busy += 1
        try:
            yield shard.client
        finally:
            shard.busy -= 1

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()
