"""`Limiter` shared by every process on one Redis: a per-endpoint concurrency cap and pace.

- Concurrency: a sorted set of holders per endpoint (`token -> expiry`, Redis server time).
  Admission drops expired holders and adds one if fewer than `max_concurrency` remain, in one
  script. Live holders are extended every `hold_seconds / 3` by the limiter's keeper task, so
  a call may run as long as it needs, while a killed process's slots free themselves within
  `hold_seconds`.
- Pace: GCRA, as in `LocalLimiter`: one stored theoretical arrival time per endpoint. A caller
  books the next admission and sleeps until it, still holding its slot, so a burst never
  overshoots the concurrency cap.

Both use Redis' clock (`TIME`), so processes on machines with skewed clocks agree. Waiting
for a free slot polls with capped exponential backoff, from a queue: a refused caller is
queued in a sorted set by its first ask (with a second one of when it lapses unless it asks
again), and a freed slot goes to the queue's head, not to whoever asks first. Redis being unreachable raises
`BackendUnavailable` at once, unless `patience` is set: then admission waits for Redis up to
that many seconds (workers use it like their `RetryingBackend`, so that an agent about to call
the model does not fail because Redis is restarting).

A released slot stays this process's for `LINGER` seconds (see `workers.backend.held_slots`):
the next call to that endpoint takes it with no Redis call, and a waiter in another process
may wait up to that much longer for a slot an idle process holds; a process that sees others
queued stops keeping slots. The cap stays exact.

Use it as `async with RedisLimiter(...)`: the keeper and sweeper tasks live between enter and
exit, and exit gives back the idle slots.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from workers.backend.held_slots import LINGER, QUEUE_TTL, HeldSlots
from workers.backend.keys import RedisKeys
from workers.backend.redis import RedisBackend, unavailable_on_failure

_QUEUE_TTL_MS = int(QUEUE_TTL * 1000)

_NOW_MS = (
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)

# KEYS: holders, queue (by first ask), queue TTLs. ARGV: token, max concurrency, hold ms,
# queue TTL ms. Returns -1 when admitted, else the waiters ahead of the caller. A caller is
# admitted when a place is free for it after the waiters queued ahead of it (all of them, for
# a newcomer); else it is queued, and keeps its place while it asks again within the TTL.
# Every set expires a hold or TTL after its last change: every member's own expiry is sooner.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end
local ahead = redis.call('ZRANK', KEYS[2], ARGV[1])
if not ahead then ahead = redis.call('ZCARD', KEYS[2]) end
if tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1]) > ahead then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then redis.call('ZREM', KEYS[3], ARGV[1]) end
  return -1
end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return ahead
"""
)

# KEYS: holders. ARGV: token, hold ms. Extends a holder that is still there (0 if it lapsed).
_EXTEND = (
    _NOW_MS
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: pace. ARGV: interval µs, burst. Books the next admission; returns the wait in µs.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local booked = tat + interval
redis.call('SET', KEYS[1], string.format('%d', booked), 'PX', math.ceil((booked - now) / 1000) + 1000)
local wait = tat - (tonumber(ARGV[2]) - 1) * interval - now
if wait < 0 then wait = 0 end
return wait
"""


class RedisLimiter(HeldSlots):
    def __init__(
        self,
        client: Redis,
        keys: RedisKeys,
        *,
        hold_seconds: float = 30.0,
        burst: int = 1,
        where: str = "redis",
        patience: float = 0.0,
        linger: float = LINGER,
    ) -> None:
        super().__init__(hold_seconds=hold_seconds, burst=burst, patience=patience, linger=linger)
        self._client = client
        self._keys = keys
        self._hold_ms = max(1, int(hold_seconds * 1000))
        self._where = where
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_backend(
        cls,
        backend: RedisBackend,
        *,
        hold_seconds: float = 30.0,
        burst: int = 1,
        patience: float = 0.0,
        linger: float = LINGER,
    ) -> RedisLimiter:
        """Share the backend's connection pool and key prefix."""
        return cls(
            backend.client,
            backend.keys,
            hold_seconds=hold_seconds,
            burst=burst,
            where=backend.where,
            patience=patience,
            linger=linger,
        )

    # -- the store's steps ----------------------------------------------------------------------
    async def _script(self, source: str, keys: list[str], args: list[str | int]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        async with unavailable_on_failure(self._where):
            return await script(keys=keys, args=args)

    async def _try_acquire(self, endpoint: str, token: str, max_concurrency: int) -> int:
        keys = [
            self._keys.limiter_slots(endpoint),
            self._keys.limiter_queue(endpoint),
            self._keys.limiter_queue_ttl(endpoint),
        ]
        args: list[str | int] = [token, max_concurrency, self._hold_ms, _QUEUE_TTL_MS]
        return int(await self._script(_ACQUIRE, keys, args))

    async def _leave(self, endpoint: str, token: str) -> None:
        async with unavailable_on_failure(self._where), self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys.limiter_queue(endpoint), token)
            pipe.zrem(self._keys.limiter_queue_ttl(endpoint), token)
            await pipe.execute()

    async def _queued(self, endpoints: list[str]) -> dict[str, int]:
        async with unavailable_on_failure(self._where):
            if len(endpoints) == 1:
                return {endpoints[0]: int(await self._client.zcard(self._keys.limiter_queue(endpoints[0])))}
            async with self._client.pipeline(transaction=False) as pipe:
                for endpoint in endpoints:
                    pipe.zcard(self._keys.limiter_queue(endpoint))
                counts = await pipe.execute()
        return {endpoint: int(n) for endpoint, n in zip(endpoints, counts, strict=True)}

    async def _reserve(self, endpoint: str, rpm: int) -> float:
        interval_us = max(1, round(60_000_000 / rpm))
        pace = self._keys.limiter_pace(endpoint)
        wait_us = int(await self._script(_RESERVE, [pace], [interval_us, self._burst]))
        return wait_us / 1_000_000

    async def _release_many(self, held: list[tuple[str, str]]) -> None:
        by_endpoint: dict[str, list[str]] = {}
        for token, endpoint in held:
            by_endpoint.setdefault(endpoint, []).append(token)
        async with unavailable_on_failure(self._where):
            if len(by_endpoint) == 1:
                ((endpoint, tokens),) = by_endpoint.items()
                await self._client.zrem(self._keys.limiter_slots(endpoint), *tokens)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for endpoint, tokens in by_endpoint.items():
                    pipe.zrem(self._keys.limiter_slots(endpoint), *tokens)
                await pipe.execute()

    async def _extend(self, held: list[tuple[str, str]]) -> list[str]:
        found = []
        for token, endpoint in held:
            holders = self._keys.limiter_slots(endpoint)
            if int(await self._script(_EXTEND, [holders], [token, self._hold_ms])):
                found.append(token)
        return found
