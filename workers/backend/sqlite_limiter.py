"""`Limiter` shared by every process on one sqlite file: a per-endpoint concurrency cap and pace.

The same design as `RedisLimiter`, on the backend's file and database thread:

- Concurrency: a row per holder (`endpoint, token, expires_at`). Admission deletes lapsed
  holders and adds one if fewer than `max_concurrency` remain, in one transaction. The
  limiter's keeper task extends its live holders every `hold_seconds / 3`, so a call may run as
  long as it needs while a killed process's places free themselves within `hold_seconds`.
- Pace: GCRA, one stored theoretical arrival time per endpoint; a caller books the next
  admission and sleeps until it, still holding its place, so a burst never overshoots the cap.

The processes share one machine, so the wall clock is shared too. Waiting for a place polls
with capped, jittered exponential backoff. `BackendUnavailable` (a locked or full file) is
raised at once unless `patience` is set: then admission waits up to that many seconds.

Use it as `async with SQLiteLimiter(...)`: the keeper task lives between enter and exit.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from workers.backend.sqlite import SQLiteBackend
from workers.backend.sqlite_db import Database
from workers.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_POLL_MIN = 0.005
_POLL_MAX = 0.25
_OUTAGE_DELAY_MAX = 2.0


class SQLiteLimiter:
    def __init__(
        self, db: Database, *, hold_seconds: float = 30.0, burst: int = 1, patience: float = 0.0
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if hold_seconds <= 0:
            raise ValueError("hold_seconds must be positive")
        self._db = db
        self._hold = hold_seconds
        self._burst = burst
        self._patience = patience
        self._held: dict[str, str] = {}  # token -> endpoint
        self._task_group: TaskGroup | None = None

    @classmethod
    def from_backend(
        cls, backend: SQLiteBackend, *, hold_seconds: float = 30.0, burst: int = 1, patience: float = 0.0
    ) -> SQLiteLimiter:
        return cls(backend.database, hold_seconds=hold_seconds, burst=burst, patience=patience)

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("SQLiteLimiter is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._keep_alive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        task_group.cancel_scope.cancel()
        # The block's own exception is not handed to the task group (see RedisLimiter).
        await task_group.__aexit__(None, None, None)

    # -- the Limiter protocol ---------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AsyncIterator[None]:
        if self._task_group is None:
            raise RuntimeError("SQLiteLimiter is not running: use `async with limiter:`")
        token = os.urandom(8).hex()
        await self._acquire(endpoint_key, token, max_concurrency)
        self._held[token] = endpoint_key
        try:
            if rpm > 0:
                wait = await self._patiently(self._reserve, endpoint_key, rpm)
                if wait > 0:
                    await anyio.sleep(wait)
            yield
        finally:
            self._held.pop(token, None)
            with anyio.CancelScope(shield=True):
                await self._release(endpoint_key, token)

    # -- internals --------------------------------------------------------------------------------
    async def _patiently(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        give_up = time.monotonic() + self._patience
        delay = 0.05
        while True:
            try:
                return await fn(*args)
            except BackendUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("LLM limiter: %s; retrying in %.2fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, _OUTAGE_DELAY_MAX)

    async def _try_acquire(self, endpoint: str, token: str, max_concurrency: int) -> bool:
        def admit(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute("DELETE FROM limiter_slots WHERE endpoint = ? AND expires_at <= ?", (endpoint, now))
            (held,) = conn.execute(
                "SELECT count(*) FROM limiter_slots WHERE endpoint = ?", (endpoint,)
            ).fetchone()
            if held >= max_concurrency:
                return False
            conn.execute(
                "INSERT INTO limiter_slots (endpoint, token, expires_at) VALUES (?, ?, ?)",
                (endpoint, token, now + self._hold),
            )
            return True

        return await self._db.write(admit)

    async def _acquire(self, endpoint: str, token: str, max_concurrency: int) -> None:
        delay = _POLL_MIN
        while not await self._patiently(self._try_acquire, endpoint, token, max_concurrency):
            # Jittered, so waiters in several processes do not poll in lockstep.
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _POLL_MAX)

    async def _reserve(self, endpoint: str, rpm: int) -> float:
        interval = 60.0 / rpm
        burst = self._burst

        def book(conn: sqlite3.Connection) -> float:
            now = time.time()
            row = conn.execute("SELECT tat FROM limiter_pace WHERE endpoint = ?", (endpoint,)).fetchone()
            tat = max(float(row[0]) if row else 0.0, now)
            conn.execute(
                "INSERT INTO limiter_pace (endpoint, tat) VALUES (?, ?) "
                "ON CONFLICT (endpoint) DO UPDATE SET tat = excluded.tat",
                (endpoint, tat + interval),
            )
            return max(0.0, tat - (burst - 1) * interval - now)

        return await self._db.write(book)

    async def _release(self, endpoint: str, token: str) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM limiter_slots WHERE endpoint = ? AND token = ?", (endpoint, token))

        try:
            await self._db.write(drop)
        except BackendUnavailable as exc:
            log.warning("could not release an LLM slot (%s); it frees itself when its hold lapses", exc)

    async def _keep_alive(self) -> None:
        """Extend every place this process holds, a few times per hold period."""
        while True:
            await anyio.sleep(self._hold / 3)
            held = list(self._held.items())
            if not held:
                continue

            def extend(conn: sqlite3.Connection, held: list[tuple[str, str]] = held) -> int:
                until = time.time() + self._hold
                found = 0
                for token, endpoint in held:
                    cur = conn.execute(
                        "UPDATE limiter_slots SET expires_at = ? WHERE endpoint = ? AND token = ?",
                        (until, endpoint, token),
                    )
                    found += cur.rowcount
                return found

            try:
                extended = await self._db.write(extend)
            except BackendUnavailable as exc:
                log.warning("could not extend LLM slots (%s); retrying in %.1fs", exc, self._hold / 3)
                continue
            if extended < len(held):
                log.warning("%d LLM slot(s) lapsed before they were extended", len(held) - extended)
