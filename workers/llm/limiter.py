"""Per-endpoint admission: a concurrency cap and an optional requests-per-minute pace.

`Limiter` is the seam: the client asks for a slot around every HTTP attempt and knows nothing
else. `LocalLimiter` enforces the limits inside one process; a limiter shared across worker
processes (Redis) implements the same one method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio


class Limiter(Protocol):
    def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AbstractAsyncContextManager[None]:
        """Hold one of `max_concurrency` in-flight places for `endpoint_key`, admitted no faster
        than `rpm` per minute (`rpm` 0 means unpaced)."""
        ...


class _Pace:
    """A GCRA token bucket: admits one request per `60/rpm` seconds, with bursts of `burst`.

    Only the theoretical arrival time is stored, so there is nothing to refill in the background.
    """

    def __init__(self) -> None:
        self._tat = 0.0

    def reserve(self, rpm: int, burst: int) -> float:
        """Book the next admission and return how long to wait for it."""
        interval = 60.0 / rpm
        now = anyio.current_time()
        tat = max(self._tat, now)
        self._tat = tat + interval
        return max(0.0, tat - (burst - 1) * interval - now)


class LocalLimiter:
    """Limits for one process: an anyio capacity limiter and a pace per endpoint key.

    `burst` is how many requests may start back to back before the pace applies; 1 spaces every
    request evenly, the safest reading of a provider's per-minute limit.
    """

    def __init__(self, *, burst: int = 1) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._caps: dict[str, anyio.CapacityLimiter] = {}
        self._paces: dict[str, _Pace] = {}

    @asynccontextmanager
    async def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AsyncIterator[None]:
        cap = self._caps.get(endpoint_key)
        if cap is None:
            cap = self._caps[endpoint_key] = anyio.CapacityLimiter(max_concurrency)
        elif cap.total_tokens != max_concurrency:
            # Settings are the source of truth; a changed cap applies from the next admission.
            cap.total_tokens = max_concurrency
        # A fresh borrower per slot: one task may legitimately hold two slots (nested calls).
        borrower = object()
        await cap.acquire_on_behalf_of(borrower)
        try:
            if rpm > 0:
                # Paced while holding the place, so a burst never overshoots the concurrency cap.
                # A caller cancelled mid-wait forfeits its booking, which errs on the slow side.
                wait = self._paces.setdefault(endpoint_key, _Pace()).reserve(rpm, self._burst)
                if wait > 0:
                    await anyio.sleep(wait)
            yield
        finally:
            cap.release_on_behalf_of(borrower)
