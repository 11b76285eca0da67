"""Tenant-facing extras under /v1: stream tokens for browsers, usage, run-time quota changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.auth import KeyringDep, PrincipalDep, StreamTokensDep
from app.deps import BackendDep
from app.errors import ERROR_RESPONSES
from app.quotas import count_jobs, effective_quotas, store_override, tokens_today
from app.routes.research import JobId, visible_job
from app.schemas import ErrorResponse, json_integers
from workers.backend.base import Backend
from workers.errors import Forbidden
from workers.models import JobStatus
from workers.settings import TenantQuotas
from workers.tenancy import COUNTER_TTL, jobs_key, utc_day

router = APIRouter(prefix="/v1", tags=["tenants"], responses=ERROR_RESPONSES)

# Counting stops here: enough for a usage view, bounded for a tenant with a huge backlog.
_COUNT_CAP = 10_000
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such job."}}


class QuotasBody(TenantQuotas):
    """A tenant's quotas, as sent to `PUT /v1/tenants/{tenant}/quotas`; 0 = no limit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _json_integers(cls, data: Any) -> Any:
        return json_integers(cls, data)


class StreamToken(BaseModel):
    token: str = Field(description="Pass as `?token=` to the job's event stream.")
    expires_at: int = Field(description="Unix time after which the token is refused (401).")
    events_url: str = Field(description="The event stream's path with the token, ready for EventSource.")


class UsageView(BaseModel):
    tenant: str | None = Field(description="The tenant; null on a server without API keys.")
    day: str = Field(description="The UTC day the day counters are for (YYYY-MM-DD).")
    tokens_today: int
    jobs_today: int
    running_jobs: int
    queued_jobs: int
    quotas: TenantQuotas = Field(description="The quotas in force (0 = no limit).")


@router.post(
    "/research/{job_id}/stream-token",
    response_model=StreamToken,
    summary="Mint a short-lived token to stream one job's events without an Authorization header",
    responses=_NOT_FOUND,
)
async def stream_token(
    job_id: JobId, backend: BackendDep, principal: PrincipalDep, tokens: StreamTokensDep
) -> StreamToken:
    record = await visible_job(backend, job_id, principal)
    claim = tokens.mint(record.id, principal.tenant, admin=principal.admin)
    token = tokens.encode(claim)
    return StreamToken(
        token=token, expires_at=claim.expires_at, events_url=f"/v1/research/{record.id}/events?token={token}"
    )


async def _usage(backend: Backend, tenant: str | None, quotas: TenantQuotas) -> UsageView:
    day = utc_day()
    return UsageView(
        tenant=tenant,
        day=day,
        tokens_today=await tokens_today(backend, tenant),
        jobs_today=await backend.counter_add(jobs_key(tenant, day), 0, COUNTER_TTL),
        running_jobs=await count_jobs(
            backend, tenant, (JobStatus.running, JobStatus.synthesizing), _COUNT_CAP
        ),
        queued_jobs=await count_jobs(backend, tenant, (JobStatus.queued,), _COUNT_CAP),
        quotas=quotas,
    )


TenantName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


@router.get("/usage", response_model=UsageView, summary="The caller's tenant: usage today and quotas")
async def usage(
    backend: BackendDep,
    principal: PrincipalDep,
    keyring: KeyringDep,
    tenant: Annotated[
        str | None,
        Query(
            min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", description="Admins: another tenant."
        ),
    ] = None,
) -> UsageView:
    name = principal.tenant
    if tenant is not None and tenant != name:
        if not principal.admin:
            raise Forbidden("only an admin key may read another tenant's usage")
        name = tenant
    quotas = await effective_quotas(backend, name, keyring.configured_quotas(name))
    return await _usage(backend, name, quotas)


@router.put(
    "/tenants/{tenant}/quotas",
    response_model=UsageView,
    summary="Admins: change a tenant's quotas at run time (every API process, no restart)",
    responses={403: {"model": ErrorResponse, "description": "Not an admin key."}},
)
async def set_quotas(
    tenant: TenantName, quotas: QuotasBody, backend: BackendDep, principal: PrincipalDep
) -> UsageView:
    if principal.role != "admin":
        raise Forbidden("only an admin key may change quotas")
    await store_override(backend, tenant, quotas)
    return await _usage(backend, tenant, quotas)
