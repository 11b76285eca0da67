"""Retry timing: full-jitter exponential backoff and the server's `Retry-After`."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_delay(
    attempt: int, base: float, cap: float, *, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt + 1` (attempt counts from 0).

    Full jitter (uniform in [0, min(cap, base·2^attempt)]) keeps parallel agents that failed
    together from retrying together.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return rand() * ceiling


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds from either of its forms (delta-seconds or an HTTP date).

    Returns None when absent or unreadable; a date in the past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; a naive result means the zone was written as -0000.
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
