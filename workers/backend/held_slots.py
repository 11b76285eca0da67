"""What the limiters shared across processes (`RedisLimiter`, `SQLiteLimiter`) have in common.

A slot is a holder record with an expiry in the shared store: admitted when fewer than
`max_concurrency` live holders remain, kept alive by a keeper task every `hold_seconds / 3`
while the call runs, dropped after it (or left to lapse, if the drop fails or the process
dies). Pace is a booked admission time the caller sleeps until, still holding its slot. A
subclass says how its store does the four steps; waiting for a free slot, waiting out a store
outage (`patience`) and the keeper's lifecycle are here.
"""

from __future__ import annotations

import logging
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from workers.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_POLL_MIN = 0.005
_POLL_MAX = 0.25
_OUTAGE_DELAY_MAX = 2.0


class HeldSlots(ABC):
    def __init__(self, *, hold_seconds: float, burst: int, patience: float) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if hold_seconds <= 0:
            raise ValueError("hold_seconds must be positive")
        self._hold = hold_seconds
        self._burst = burst
        self._patience = patience
        self._held: dict[str, str] = {}  # token -> endpoint key
        self._task_group: TaskGroup | None = None

    # -- what a store does ------------------------------------------------------------------------
    @abstractmethod
    async def _try_acquire(self, endpoint: str, token: str, max_concurrency: int) -> bool:
        """Drop lapsed holders, then add `token` if fewer than `max_concurrency` remain."""

    @abstractmethod
    async def _reserve(self, endpoint: str, rpm: int) -> float:
        """Book the endpoint's next admission at `rpm`; the seconds to wait for it."""

    @abstractmethod
    async def _release(self, endpoint: str, token: str) -> None: ...

    @abstractmethod
    async def _extend(self, held: list[tuple[str, str]]) -> int:
        """Extend these (token, endpoint) holders by a hold period; how many were still there."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
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
        # The block's own exception is not handed to the task group: it would come back
        # wrapped in an ExceptionGroup, and callers expect it unchanged.
        await task_group.__aexit__(None, None, None)

    # -- the Limiter protocol ---------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AsyncIterator[None]:
        if self._task_group is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use `async with limiter:`")
        token = os.urandom(8).hex()
        delay = _POLL_MIN
        while not await self._patiently(self._try_acquire, endpoint_key, token, max_concurrency):
            # Jittered, so waiters in many processes do not poll in lockstep.
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _POLL_MAX)
        self._held[token] = endpoint_key
        try:
            if rpm > 0:
                # Paced while holding the place, so a burst never overshoots the cap. A caller
                # cancelled mid-wait forfeits its booking, which errs on the slow side.
                wait = await self._patiently(self._reserve, endpoint_key, rpm)
                if wait > 0:
                    await anyio.sleep(wait)
            yield
        finally:
            self._held.pop(token, None)
            with anyio.CancelScope(shield=True):
                try:
                    await self._release(endpoint_key, token)
                except BackendUnavailable as exc:
                    # Nothing is lost: the holder expires by itself within `hold_seconds`.
                    log.warning(
                        "could not release an LLM slot (%s); it frees itself when its hold lapses", exc
                    )

    # -- internals --------------------------------------------------------------------------------
    async def _patiently(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """`fn(*args)`, waiting out a store outage (with backoff) for up to `patience` seconds.
        Only admission waits: a release that fails is logged and its hold lapses by itself."""
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

    async def _keep_alive(self) -> None:
        """Extend every slot this process holds, a few times per hold period."""
        while True:
            await anyio.sleep(self._hold / 3)
            held = list(self._held.items())
            if not held:
                continue
            try:
                extended = await self._extend(held)
            except BackendUnavailable as exc:
                log.warning("could not extend LLM slots (%s); retrying in %.1fs", exc, self._hold / 3)
                continue
            lapsed = sum(1 for token, _ in held if token in self._held) - extended
            if lapsed > 0:
                log.warning(
                    "%d LLM slot(s) lapsed before they were extended (stalled for over %.0fs?)",
                    lapsed,
                    self._hold,
                )
