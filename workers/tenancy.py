"""Per-tenant usage counters kept in the backend, shared by API processes and workers.

Counters are per UTC day and expire two days after they start: the API reads them for
`GET /v1/usage` and the tokens-per-day quota; the runner adds a job's tokens when it ends.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from workers.backend.base import Backend
from workers.models import JobRecord

log = logging.getLogger(__name__)

COUNTER_TTL = 2 * 86400
# The counters of jobs without an owner (a server without API keys).
OPEN_TENANT = "-"


def utc_day(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, tz=UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float | None = None) -> int:
    now = time.time() if now is None else now
    return max(1, 86400 - int(now) % 86400)


def tokens_key(tenant: str | None, day: str) -> str:
    return f"usage:{tenant or OPEN_TENANT}:{day}:tokens"


def jobs_key(tenant: str | None, day: str) -> str:
    return f"usage:{tenant or OPEN_TENANT}:{day}:jobs"


async def count_job_tokens(backend: Backend, record: JobRecord) -> None:
    """Add an ended job's tokens to its tenant's day. Called once, where the job ends."""
    tokens = record.usage.total_tokens
    if tokens <= 0:
        return
    day = utc_day(record.finished_at)
    await backend.counter_add(tokens_key(record.owner, day), tokens, COUNTER_TTL)
    log.debug("counted %d tokens for tenant %s", tokens, record.owner, extra={"job_id": record.id})
