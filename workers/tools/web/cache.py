"""The shared tool cache with call coalescing: parallel agents asking the same thing cause one
upstream call.

A value (search hits or page text as JSON — never a rendered observation, whose source ids
belong to one job) lives in the backend cache under a normalised key. `SharedCache.get_or_make`
serves a key in this order:

1. the backend cache;
2. in this process, a call for the same key already in flight: wait for its value (if that call
   fails, every waiter gets its error; if it is cancelled, a waiter takes over);
3. across processes, `backend.try_lock(key)`: the holder makes the value and stores it; the
   others poll the cache until it appears, or the lock frees (they then try to take it), for at
   most `wait` seconds, after which a caller makes the value itself rather than wait longer.

`cached` in the answer is True when this call reached nothing upstream: the value came from the
backend cache or from another caller's call.

The cache only saves work: when the backend is unavailable a lookup counts as a miss, a lock as
taken by us and a store as done, so a Redis outage slows tools down but never fails them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio

from workers.backend.base import Backend
from workers.errors import BackendUnavailable

log = logging.getLogger(__name__)

# Between looks at the cache while another process makes the value: short at first, since most
# upstream calls take well under a second, and backing off to bound the load on the backend.
_POLL_FIRST = 0.02
_POLL_MAX = 0.5


@dataclass(frozen=True, slots=True)
class Made:
    """What a maker returns: the value, and seconds to cache it (0: do not cache, e.g. a
    degraded answer that a later call should try to improve)."""

    value: str
    ttl: int


Maker = Callable[[], Awaitable[Made]]


@dataclass
class CacheStats:
    hits: int = 0  # served from the backend cache
    coalesced: int = 0  # served by another caller's in-flight call
    made: int = 0  # went upstream


@dataclass
class _Flight:
    done: anyio.Event = field(default_factory=anyio.Event)
    value: str | None = None
    error: BaseException | None = None


def cache_key(kind: str, *parts: object) -> str:
    """`kind:<sha256 of the parts>`: fixed length whatever the query or url."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    return f"{kind}:{digest}"


class SharedCache:
    def __init__(self, backend: Backend, *, wait: float, store: bool = True, coalesce: bool = True) -> None:
        """`store=False` (a cache TTL of 0) keeps only the in-process coalescing;
        `coalesce=False` as well turns the whole thing off (the benchmark's baseline)."""
        self._backend = backend
        self._wait = wait
        self._store = store
        self._coalesce = coalesce
        self._flights: dict[str, _Flight] = {}
        self.stats = CacheStats()

    async def get_or_make(self, key: str, make: Maker) -> tuple[str, bool]:
        """The value for `key` and whether it came without an upstream call of our own."""
        if not self._coalesce:
            self.stats.made += 1
            return (await make()).value, False
        while True:
            value = await self._get(key) if self._store else None
            if value is not None:
                self.stats.hits += 1
                return value, True
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.value is not None:
                self.stats.coalesced += 1
                return flight.value, True
            if flight.error is not None:
                raise flight.error
            # The caller making it was cancelled: look again, and take over if nobody has.

        flight = _Flight()
        self._flights[key] = flight
        try:
            if self._store:
                value, cached = await self._across_processes(key, make)
            else:
                self.stats.made += 1
                value, cached = (await make()).value, False
            flight.value = value
            return value, cached
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    async def _across_processes(self, key: str, make: Maker) -> tuple[str, bool]:
        deadline = time.monotonic() + self._wait
        delay = _POLL_FIRST
        while True:
            if await self._lock(key):
                try:
                    # Stored between our cache miss and taking the lock?
                    value = await self._get(key)
                    if value is not None:
                        self.stats.hits += 1
                        return value, True
                    return await self._make_and_store(key, make), False
                finally:
                    # Even when cancelled: a lock left behind would stall other processes.
                    with anyio.CancelScope(shield=True):
                        await self._unlock(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.info("gave up waiting for another worker to fill %s; making it here", key)
                return await self._make_and_store(key, make), False
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
            value = await self._get(key)
            if value is not None:
                self.stats.coalesced += 1
                return value, True

    async def _make_and_store(self, key: str, make: Maker) -> str:
        self.stats.made += 1
        made = await make()
        if made.ttl > 0:
            try:
                await self._backend.cache_set(key, made.value, made.ttl)
            except BackendUnavailable as exc:
                log.warning("tool cache unavailable, %s not stored: %s", key, exc)
        return made.value

    async def _get(self, key: str) -> str | None:
        try:
            return await self._backend.cache_get(key)
        except BackendUnavailable as exc:
            log.warning("tool cache unavailable, %s treated as a miss: %s", key, exc)
            return None

    async def _lock(self, key: str) -> bool:
        try:
            return await self._backend.try_lock(key, self._wait)
        except BackendUnavailable as exc:
            log.warning("tool cache unavailable, %s made without a lock: %s", key, exc)
            return True

    async def _unlock(self, key: str) -> None:
        try:
            await self._backend.unlock(key)
        except BackendUnavailable as exc:
            # The lock expires by itself after `wait` seconds.
            log.warning("tool cache unavailable, lock on %s left to expire: %s", key, exc)


def normalise_text(text: str) -> str:
    """Queries and goals that differ only in case or spacing share a cache entry."""
    return " ".join(text.split()).casefold()


def normalise_url(url: str) -> str:
    """Scheme and host lowercased, default port and fragment dropped, empty path as "/"; the
    path and query are kept as written (servers may treat their case and order as meaningful)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port
    except ValueError:
        return url.strip()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"
