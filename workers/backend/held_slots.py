"""What the limiters shared across processes (`RedisLimiter`, `SQLiteLimiter`) have in common.

A slot is a holder record with an expiry in the shared store: admitted when fewer than
`max_concurrency` live holders remain, kept alive by a keeper task every `hold_seconds / 3`
while the call runs. Pace is a booked admission time the caller sleeps until, still holding
its slot. A subclass says how its store does the steps; waiting for a free slot, waiting out
a store outage (`patience`), reuse and the background tasks are here.

Reuse: an agent calls the model again a few ms after its last call ended (parse, act,
checkpoint), and a store call costs about as much CPU as the rest of the round. So a released
holder record is not dropped at once: it stays in the process's idle pool for `LINGER`
seconds, still counted as a holder and still kept alive, and the next `slot()` for that
endpoint in this process takes it without a store call. A sweeper gives back records idle
for longer, several in one store call. The cap stays exact (an idle record is a holder like
any other), but what a waiter in another process sees changes: it may wait up to `LINGER`
longer for a slot a now-idle process holds, and a process that calls an endpoint back to back
keeps its slots until it pauses. Pace is still booked per call. A record is given back at
exit, and left to lapse by itself (within `hold_seconds`) if the store fails to take it back
or the process dies.

Fairness: a caller the store refuses joins the endpoint's queue in the store, and a freed slot
goes to the queue's head, not to whoever asks first (a caller asking again at once would
otherwise win it over a waiter polling with backoff, every time). The waiters near the head
ask every `_HEAD_POLL` seconds, so a freed slot does not idle for a backed-off interval. A
waiter that stops asking leaves the queue within `QUEUE_TTL`. While it holds slots, a process
looks at its endpoints' queues every `linger` seconds: when a waiter it does not own is there,
it stops reusing (released slots go back to the store at once, the idle ones with them) until
the queue is empty, so a busy process cannot keep its slots from the others for ever.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
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

# How long a released slot stays this process's, for its next call to the same endpoint. Long
# enough to span one agent's gap between two model calls (parse, tools, checkpoint: a few ms to
# a local search's ~100 ms), short enough that a slot an idle process holds frees soon for
# waiters elsewhere, who poll at most every `_POLL_MAX` anyway.
LINGER = 0.2
# Records whose linger ends this soon after the sweep's go back with it, in the same store call.
_SWEEP_SLACK = 0.05
# How long a waiter stays in an endpoint's queue after its last ask: well over the longest
# poll interval, short enough that one that vanished (a killed process) holds nobody up long.
QUEUE_TTL = 2.0
# The waiters near the queue's head (the first `_HEAD_WAITERS`, and no more than the cap) ask
# this often, so a freed slot is not left idle for a backed-off poll interval; the others back
# off as before, which bounds the polling a long queue costs the store.
_HEAD_POLL = 0.02
_HEAD_WAITERS = 8
ADMITTED = -1


@dataclass(slots=True)
class _Holder:
    endpoint: str
    live_until: float  # anyio clock: the store keeps the record at least until then
    idle_since: float | None = None  # None while a call uses it


class HeldSlots(ABC):
    def __init__(self, *, hold_seconds: float, burst: int, patience: float, linger: float = LINGER) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if hold_seconds <= 0:
            raise ValueError("hold_seconds must be positive")
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._hold = hold_seconds
        self._burst = burst
        self._patience = patience
        self._linger = linger
        self._holders: dict[str, _Holder] = {}  # token -> every record this process keeps alive
        self._idle: dict[str, list[str]] = {}  # endpoint key -> idle tokens, oldest first
        self._parked: dict[str, anyio.Event] = {}  # endpoint key -> set when a token goes idle
        self._swept: anyio.Event | None = None  # set when the sweeper has something to do
        self._waiting: dict[str, set[str]] = {}  # endpoint key -> this process's queued tokens
        self._contended: set[str] = set()  # endpoints whose queue holds others' waiters
        self._task_group: TaskGroup | None = None

    # -- what a store does ------------------------------------------------------------------------
    @abstractmethod
    async def _try_acquire(self, endpoint: str, token: str, max_concurrency: int) -> int:
        """Drop lapsed holders and queued waiters, then add `token` as a holder if fewer than
        `max_concurrency` remain and no more waiters are queued ahead of it than the places
        left (it leaves the queue then), and return `ADMITTED`; else queue it (keeping its
        place) for `QUEUE_TTL` and return how many waiters are ahead of it."""

    @abstractmethod
    async def _leave(self, endpoint: str, token: str) -> None:
        """Take `token` out of the endpoint's queue (it stopped waiting)."""

    @abstractmethod
    async def _queued(self, endpoints: list[str]) -> dict[str, int]:
        """How many waiters each endpoint's queue holds."""

    @abstractmethod
    async def _reserve(self, endpoint: str, rpm: int) -> float:
        """Book the endpoint's next admission at `rpm`; the seconds to wait for it."""

    @abstractmethod
    async def _release_many(self, held: list[tuple[str, str]]) -> None:
        """Drop these (token, endpoint) holders, in as few store calls as the store allows."""

    @abstractmethod
    async def _extend(self, held: list[tuple[str, str]]) -> Collection[str]:
        """Extend these (token, endpoint) holders by a hold period; the tokens still there."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._swept = anyio.Event()
        task_group.start_soon(self._keep_alive)
        task_group.start_soon(self._sweep)
        task_group.start_soon(self._watch_queues)
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
        idle = self._take_idle(math.inf)
        if idle:
            with anyio.CancelScope(shield=True):
                await self._give_back(idle)

    # -- the Limiter protocol ---------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AsyncIterator[None]:
        if self._task_group is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use `async with limiter:`")
        token = self._reuse(endpoint_key)
        if token is None:
            token = await self._acquire(endpoint_key, max_concurrency)
        try:
            if rpm > 0:
                # Paced while holding the place, so a burst never overshoots the cap. A caller
                # cancelled mid-wait forfeits its booking, which errs on the slow side.
                wait = await self._patiently(self._reserve, endpoint_key, rpm)
                if wait > 0:
                    await anyio.sleep(wait)
            yield
        finally:
            # Parking takes no await, so a caller cancelled here cannot lose the token.
            if not self._park(token):
                holder = self._holders.pop(token, None)
                if holder is not None:
                    with anyio.CancelScope(shield=True):
                        await self._give_back([(token, holder.endpoint)])

    # -- internals --------------------------------------------------------------------------------
    async def _acquire(self, endpoint_key: str, max_concurrency: int) -> str:
        token = os.urandom(8).hex()
        delay = _POLL_MIN
        queued = False
        try:
            while True:
                asked = anyio.current_time()
                try:
                    ahead = await self._patiently(self._try_acquire, endpoint_key, token, max_concurrency)
                except BaseException:
                    queued = True  # the store may have queued it before the call failed
                    raise
                if ahead == ADMITTED:
                    if queued:  # admission took it out of the store's queue
                        queued = False
                        self._forget_waiter(endpoint_key, token)
                    self._holders[token] = _Holder(endpoint_key, asked + self._hold)
                    return token
                if not queued:
                    queued = True
                    self._waiting.setdefault(endpoint_key, set()).add(token)
                # Woken early when a call in this process parks its token, so local waiters take
                # it before any store poll. Jittered, so many processes do not poll in lockstep.
                parked = self._parked.setdefault(endpoint_key, anyio.Event())
                pause = min(delay, _HEAD_POLL) if ahead < min(max_concurrency, _HEAD_WAITERS) else delay
                with anyio.move_on_after(pause * random.uniform(0.5, 1.0)):
                    await parked.wait()
                delay = min(delay * 2, _POLL_MAX)
                reused = self._reuse(endpoint_key)
                if reused is not None:
                    return reused
        finally:
            if queued:
                await self._stop_waiting(endpoint_key, token)

    def _forget_waiter(self, endpoint_key: str, token: str) -> None:
        mine = self._waiting.get(endpoint_key)
        if mine is not None:
            mine.discard(token)
            if not mine:
                del self._waiting[endpoint_key]

    async def _stop_waiting(self, endpoint_key: str, token: str) -> None:
        self._forget_waiter(endpoint_key, token)
        # Shielded: a cancelled waiter still leaves the queue (or the others wait out its TTL).
        with anyio.CancelScope(shield=True):
            try:
                await self._leave(endpoint_key, token)
            except BackendUnavailable as exc:
                log.warning("could not leave the LLM limiter's queue (%s); it lapses by itself", exc)

    def _reuse(self, endpoint_key: str) -> str | None:
        """An idle token of this endpoint the store surely still holds (the newest first), now in use."""
        pool = self._idle.get(endpoint_key)
        if not pool:
            return None
        # At least one keeper period left: a record the store may have let lapse (a process
        # stalled past its hold) is never reused, or the cap would be overshot. The sweeper
        # gives such a record back.
        fresh_after = anyio.current_time() + self._hold / 3
        for i in range(len(pool) - 1, -1, -1):
            holder = self._holders[pool[i]]
            if holder.live_until > fresh_after:
                token = pool.pop(i)
                holder.idle_since = None
                return token
        return None

    def _park(self, token: str) -> bool:
        """Put a token no call uses any more in its endpoint's idle pool; False when not running."""
        holder = self._holders.get(token)
        if (
            holder is None
            or self._task_group is None
            or self._linger == 0
            or holder.endpoint in self._contended
        ):
            return False
        holder.idle_since = anyio.current_time()
        self._idle.setdefault(holder.endpoint, []).append(token)
        parked = self._parked.pop(holder.endpoint, None)
        if parked is not None:
            parked.set()
        if self._swept is not None:
            self._swept.set()
        return True

    def _take_idle(self, since: float) -> list[tuple[str, str]]:
        """Take the tokens idle since `since` or earlier out of the pools and this process's holders."""
        taken: list[tuple[str, str]] = []
        for endpoint, pool in list(self._idle.items()):
            kept = []
            for token in pool:
                holder = self._holders[token]
                if holder.idle_since is not None and holder.idle_since <= since:
                    del self._holders[token]
                    taken.append((token, endpoint))
                else:
                    kept.append(token)
            if kept:
                self._idle[endpoint] = kept
            else:
                del self._idle[endpoint]
        return taken

    async def _give_back(self, held: list[tuple[str, str]]) -> None:
        try:
            await self._release_many(held)
        except BackendUnavailable as exc:
            # Nothing is lost: a holder expires by itself within `hold_seconds`.
            log.warning(
                "could not release %d LLM slot(s) (%s); they free themselves when their hold lapses",
                len(held),
                exc,
            )

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

    async def _sweep(self) -> None:
        """Give back the tokens idle for longer than the linger."""
        while True:
            linger = self._linger
            released = self._take_idle(anyio.current_time() + _SWEEP_SLACK - linger)
            if released:
                # Shielded, so the limiter's exit waits for the records to be dropped.
                with anyio.CancelScope(shield=True):
                    await self._give_back(released)
                continue
            ends = [self._holders[t].idle_since for pool in self._idle.values() for t in pool]
            next_at = min((since + linger for since in ends if since is not None), default=math.inf)
            if next_at == math.inf:
                swept = self._swept = anyio.Event()
                await swept.wait()
            else:
                await anyio.sleep_until(next_at)

    async def _watch_queues(self) -> None:
        """Every `linger` seconds while this process holds slots: which of their endpoints have
        waiters elsewhere. Their idle slots go back at once, and reuse stops until none wait."""
        if self._linger == 0:
            return  # nothing is ever kept for reuse
        while True:
            await anyio.sleep(self._linger)
            endpoints = sorted({holder.endpoint for holder in self._holders.values()} | self._contended)
            if not endpoints:
                continue
            try:
                counts = await self._queued(endpoints)
            except BackendUnavailable as exc:
                log.warning("could not read the LLM limiter's queues (%s)", exc)
                continue
            self._contended = {
                endpoint
                for endpoint in endpoints
                if counts.get(endpoint, 0) > len(self._waiting.get(endpoint, ()))
            }
            idle = [
                (token, endpoint)
                for endpoint in self._contended
                for token in self._idle.pop(endpoint, [])
                if self._holders.pop(token, None) is not None
            ]
            if idle:
                with anyio.CancelScope(shield=True):
                    await self._give_back(idle)

    async def _keep_alive(self) -> None:
        """Extend every slot this process holds, in use or idle, a few times per hold period."""
        while True:
            await anyio.sleep(self._hold / 3)
            held = [(token, holder.endpoint) for token, holder in self._holders.items()]
            if not held:
                continue
            asked = anyio.current_time()
            try:
                found = set(await self._extend(held))
            except BackendUnavailable as exc:
                log.warning("could not extend LLM slots (%s); retrying in %.1fs", exc, self._hold / 3)
                continue
            lapsed = 0
            for token, _ in held:
                holder = self._holders.get(token)
                if holder is None:
                    continue  # given back meanwhile
                if token in found:
                    holder.live_until = asked + self._hold
                elif holder.idle_since is None:
                    lapsed += 1
            if lapsed > 0:
                log.warning(
                    "%d LLM slot(s) lapsed before they were extended (stalled for over %.0fs?)",
                    lapsed,
                    self._hold,
                )
