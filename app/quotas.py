"""Tenant quotas, checked when a job is submitted, across every API process.

The counts come from the backend (the tenant's queued and running jobs, its tokens today), and
the check and the job's creation run under a per-tenant backend lock, so two API processes
cannot both admit the job that fills a quota. Quotas come from the settings (a tenant's own,
else `server.default_quotas`) unless an admin has stored an override with
`PUT /v1/tenants/{tenant}/quotas`: that lives in the backend, so it takes effect at once on
every process, with no restart.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from workers.backend.base import Backend
from workers.errors import QuotaExceeded
from workers.models import JobStatus, ResearchRequest
from workers.settings import TenantQuotas
from workers.tenancy import COUNTER_TTL, seconds_to_midnight, tokens_key, utc_day

# Seconds the admission lock lives if its holder dies mid-check; checks take milliseconds.
_LOCK_TTL = 5.0
# A refused submit may retry when a running job could have ended; a guess, not a promise.
_RETRY_RUNNING = 10
_ACTIVE = (JobStatus.running, JobStatus.synthesizing)


def _override_key(tenant: str) -> str:
    return f"quota-override:{tenant}"


async def effective_quotas(backend: Backend, tenant: str | None, configured: TenantQuotas) -> TenantQuotas:
    if tenant is None:
        return configured
    raw = await backend.cache_get(_override_key(tenant))
    return TenantQuotas.model_validate_json(raw) if raw else configured


async def store_override(backend: Backend, tenant: str, quotas: TenantQuotas) -> None:
    await backend.cache_set(_override_key(tenant), quotas.model_dump_json(), 0)


async def count_jobs(backend: Backend, tenant: str | None, statuses: tuple[JobStatus, ...], cap: int) -> int:
    """The tenant's jobs in `statuses`, counted up to `cap` (enough to compare with a quota)."""
    total = 0
    for status in statuses:
        cursor: str | None = None
        while total < cap:
            page, cursor = await backend.list_jobs(status, cursor, min(100, cap - total), tenant)
            total += len(page)
            if cursor is None:
                break
    return total


async def tokens_today(backend: Backend, tenant: str | None) -> int:
    return await backend.counter_add(tokens_key(tenant, utc_day()), 0, COUNTER_TTL)


def check_request(request: ResearchRequest, quotas: TenantQuotas) -> None:
    size = request.agents * request.max_rounds
    if quotas.max_agent_rounds and size > quotas.max_agent_rounds:
        raise QuotaExceeded(
            "max_agent_rounds",
            f"quota max_agent_rounds: agents × max_rounds = {size} is over this tenant's "
            f"{quotas.max_agent_rounds}; ask for fewer agents or rounds",
            _RETRY_RUNNING,
        )


async def _check_counts(backend: Backend, tenant: str | None, quotas: TenantQuotas) -> None:
    if quotas.max_tokens_per_day:
        used = await tokens_today(backend, tenant)
        if used >= quotas.max_tokens_per_day:
            raise QuotaExceeded(
                "max_tokens_per_day",
                f"quota max_tokens_per_day: this tenant used {used} of its "
                f"{quotas.max_tokens_per_day} tokens today (UTC)",
                seconds_to_midnight(),
            )
    if quotas.max_queued_jobs:
        queued = await count_jobs(backend, tenant, (JobStatus.queued,), quotas.max_queued_jobs)
        if queued >= quotas.max_queued_jobs:
            raise QuotaExceeded(
                "max_queued_jobs",
                f"quota max_queued_jobs: this tenant has {queued} jobs waiting, its limit",
                _RETRY_RUNNING,
            )
    if quotas.max_running_jobs:
        running = await count_jobs(backend, tenant, _ACTIVE, quotas.max_running_jobs)
        if running >= quotas.max_running_jobs:
            raise QuotaExceeded(
                "max_running_jobs",
                f"quota max_running_jobs: this tenant has {running} jobs running, its limit",
                _RETRY_RUNNING,
            )


@asynccontextmanager
async def admission(
    backend: Backend, tenant: str | None, quotas: TenantQuotas, request: ResearchRequest
) -> AsyncIterator[None]:
    """Raise `QuotaExceeded` past a quota; otherwise hold the tenant's admission lock while the
    caller creates the job, so the next check on any process counts it."""
    check_request(request, quotas)
    if not (quotas.max_queued_jobs or quotas.max_running_jobs or quotas.max_tokens_per_day):
        yield
        return
    key = f"quota:{tenant}"
    deadline = time.monotonic() + _LOCK_TTL + 1
    # The lock expires by itself, so waiting at most its lifetime always ends with it taken.
    while not await backend.try_lock(key, _LOCK_TTL):
        if time.monotonic() > deadline:
            break
        await anyio.sleep(0.005)
    try:
        await _check_counts(backend, tenant, quotas)
        yield
    finally:
        await backend.unlock(key)
