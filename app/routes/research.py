"""The job API under /v1: submit, inspect, list, cancel, delete, stream events.

Routes talk only to the backend and the `workers.jobs` operations, never to a runner, so they
behave the same whether the engine runs in this process or in worker processes elsewhere.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.auth import KeyringDep, Principal, PrincipalDep, StreamGrantDep, ensure_visible
from app.deps import BackendDep, EngineDep, LifecycleDep, MetricsDep, ResolverDep, SettingsDep
from app.errors import ERROR_RESPONSES, UNKNOWN_FILE_RESPONSE
from app.limits import limit_error, request_limit_errors
from app.quotas import admission, effective_quotas
from app.routes.files import visible_file
from app.schemas import (
    AgentView,
    ErrorResponse,
    JobLinks,
    JobList,
    JobSummary,
    JobView,
    ResearchCreate,
    ResultView,
    SourceView,
    UsageView,
    params,
    timings,
    webhook_view,
)
from app.sse import event_stream_response
from workers.backend.base import Backend
from workers.errors import BlockedURL, JobConflict, JobNotFound, QueueFull, QuotaExceeded, ShuttingDown
from workers.jobs import cancel_job, delete_job, submit_job
from workers.models import AgentStatus, AgentSummary, JobRecord, JobResult, JobStatus, ResearchRequest
from workers.runner import summarise
from workers.settings import Settings
from workers.tenancy import COUNTER_TTL, jobs_key, utc_day
from workers.webhooks import check_webhook_url

log = logging.getLogger(__name__)

# Every route authenticates itself (`PrincipalDep`); the event stream also takes a stream token.
router = APIRouter(prefix="/v1", tags=["research"], responses=ERROR_RESPONSES)

JobId = Annotated[str, Path(description="The job's id, as returned by `POST /v1/research`.")]

SSE_DESCRIPTION = (
    "A `text/event-stream`. Each message is one job event: `id:` its sequence number, `event:` "
    "its type (`job.queued`, `round.started`, `synthesis.delta`, `job.succeeded`, …) and `data:` "
    "the event as JSON (`job_id`, `seq`, `ts`, `type`, `agent`, `round`, `data`). The stream ends "
    "after the terminal event (`job.succeeded`, `job.failed` or `job.cancelled`); comment lines "
    "keep it alive while the job is quiet."
)
# One SSE message (Open API before 3.2: the event-stream `schema` describes each event).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "The event type, e.g. `round.started`."},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's `seq`."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["job_id", "seq", "ts", "type"],
                "properties": {
                    "job_id": {"type": "string"},
                    "seq": {"type": "integer", "minimum": 1},
                    "ts": {"type": "number"},
                    "type": {"type": "string"},
                    "agent": {"type": ["integer", "null"]},
                    "round": {"type": ["integer", "null"]},
                    "data": {"type": "object"},
                },
            },
        },
    },
    "required": ["event", "id", "data"],
}
SSE_CONTENT: dict[str, Any] = {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}
SSE_RESPONSE: dict[str, Any] = {"description": SSE_DESCRIPTION, "content": SSE_CONTENT}

# A cursor is a job id (`workers.backend.base.new_job_id`): anything else is a client's mistake.
CURSOR_PATTERN = r"^job_[0-9a-f]{22}$"
# Largest event sequence number a client may name (JSON-safe integer).
MAX_SEQ = 2**53


def wants_event_stream(accept: str | None) -> bool:
    """True when the Accept header names text/event-stream (with a non-zero q)."""
    for part in (accept or "").split(","):
        media, *options = (item.strip() for item in part.split(";"))
        if media.lower() != "text/event-stream":
            continue
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _check_server_limits(body: ResearchCreate, settings: Settings) -> None:
    """The limits a server may set stricter than the public schema, reported like schema errors."""
    errors = request_limit_errors(body, settings)
    if errors:
        raise RequestValidationError(errors)


def engine_request(body: ResearchCreate, settings: Settings) -> ResearchRequest:
    return ResearchRequest(
        query=body.query,
        agents=body.agents or settings.agent.default_agents,
        max_rounds=body.max_rounds or settings.agent.default_max_rounds,
        model=body.model,
        tools=list(body.tools) if body.tools is not None else None,
        max_tokens=body.max_tokens,
        max_seconds=body.max_seconds,
        angles=body.angles,
        webhook_url=str(body.webhook_url) if body.webhook_url is not None else None,
        metadata=body.metadata or {},
        mode=body.mode,
        files=list(dict.fromkeys(body.files or [])),
    )


async def job_view(backend: Backend, record: JobRecord) -> JobView:
    return JobView(
        id=record.id,
        status=record.status,
        simulated=record.simulated,
        cancel_requested=record.cancel_requested or await backend.is_cancelled(record.id),
        request=params(record),
        agents=[_agent_view(a) for a in await _agents(backend, record)],
        result=_result_view(record.result) if record.result is not None else None,
        usage=UsageView.of(record.usage),
        timings=timings(record, time.time()),
        error=record.error,
        attempts=record.attempts,
        webhook=webhook_view(record.webhook),
        links=JobLinks.of(record.id),
    )


async def _agents(backend: Backend, record: JobRecord) -> list[AgentSummary]:
    # The runner writes the record's summaries once the agents are done; until then the
    # checkpoints, saved after every round, are the live truth.
    if record.agents:
        return record.agents
    checkpoints = await backend.load_checkpoints(record.id)
    live = {s.agent: s for s in summarise(list(checkpoints.values()))}
    if not record.status.terminal:
        for index in range(record.request.agents):
            live.setdefault(index, AgentSummary(agent=index, status=AgentStatus.pending, rounds=0))
    return [live[index] for index in sorted(live)]


def _agent_view(summary: AgentSummary) -> AgentView:
    return AgentView(
        agent=summary.agent,
        status=summary.status,
        rounds=summary.rounds,
        answer=summary.answer,
        stop_reason=summary.stop_reason,
        error=summary.error,
        report_chars=summary.report_chars,
        usage=UsageView.of(summary.usage),
    )


def _result_view(result: JobResult) -> ResultView:
    return ResultView(
        answer=result.answer,
        report=result.report,
        sources=[SourceView(id=s.id, url=s.url, title=s.title) for s in result.sources],
        citations_removed=result.citations_removed,
        synthesis=result.synthesis,
        agents_used=result.agents_used,
        agents_failed=result.agents_failed,
        agent_reports=result.agent_reports,
        cut_short=result.cut_short,
        simulated=result.simulated,
        budget=result.budget,
        removed_citations=result.removed_citations,
    )


async def visible_job(backend: Backend, job_id: str, principal: Principal) -> JobRecord:
    """The job, if `principal` may see it; another tenant's job is `JobNotFound` like a missing one."""
    record = await backend.get_job(job_id)
    if record is None:
        raise JobNotFound(job_id)
    ensure_visible(principal, record.owner, JobNotFound(job_id))
    return record


@router.post(
    "/research",
    status_code=202,
    response_model=JobView,
    summary="Start a Heavy Mode research job",
    responses={
        200: {
            "model": JobView,
            "description": (
                "An `Idempotency-Key` replay: the job first made with this key and this body "
                "(header `Idempotent-Replayed: true`). With `stream` it is the event stream "
                "instead: " + SSE_DESCRIPTION
            ),
            "content": SSE_CONTENT,
        },
        202: {"description": "The job is queued. `Location` names it."},
        404: UNKNOWN_FILE_RESPONSE,
        409: {"model": ErrorResponse, "description": "The `Idempotency-Key` was used with a different body."},
        429: {
            "model": ErrorResponse,
            "description": (
                "The queue is full, or one of the tenant's quotas is reached (`error.quota` names "
                "it); `Retry-After` says when to retry."
            ),
        },
    },
)
async def create_research(
    body: ResearchCreate,
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    lifecycle: LifecycleDep,
    principal: PrincipalDep,
    keyring: KeyringDep,
    resolver: ResolverDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description=(
                "Makes retries safe: the same key with the same body returns the job the first "
                "request made (200, `Idempotent-Replayed: true`) instead of a new one; the same key "
                "with another body is refused (409). Keys are scoped to the API key."
            ),
        ),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    if lifecycle.stopping:
        raise ShuttingDown()
    _check_server_limits(body, settings)
    request = engine_request(body, settings)
    if request.webhook_url is not None:
        try:
            await check_webhook_url(settings.webhooks, request.webhook_url, resolver)
        except BlockedURL as exc:
            raise RequestValidationError([limit_error("webhook_url", "url_refused", str(exc))]) from None
    # A job may only name files its tenant may see (another tenant's is a 404, as unknown).
    for file_id in request.files:
        await visible_file(engine.backend, file_id, principal)
    tenant = principal.tenant
    # Idempotency keys are the tenant's own: another tenant's "same" key is another job.
    key = idempotency_key if tenant is None or idempotency_key is None else f"{tenant}:{idempotency_key}"
    quotas = await effective_quotas(engine.backend, tenant, keyring.configured_quotas(tenant))
    try:
        async with admission(engine.backend, tenant, quotas, request):
            record, created = await submit_job(
                engine.backend, request, simulated=engine.simulated, idempotency_key=key, owner=tenant
            )
    except QueueFull:
        metrics.jobs_submitted.labels("queue_full").inc()
        raise
    except QuotaExceeded as exc:
        metrics.jobs_submitted.labels("quota").inc()
        metrics.quota_refusals.labels(tenant or "-", exc.quota).inc()
        raise
    except JobConflict:
        metrics.jobs_submitted.labels("conflict").inc()
        raise
    metrics.jobs_submitted.labels("created" if created else "replayed").inc()
    if created:
        metrics.tenant_jobs.labels(tenant or "-").inc()
        await engine.backend.counter_add(jobs_key(tenant, utc_day()), 1, COUNTER_TTL)
    if not created:
        log.info("idempotent replay of key %r", idempotency_key, extra={"job_id": record.id})
    headers = {"Location": JobLinks.of(record.id).self}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if body.stream or wants_event_stream(accept):
        headers["X-Job-Id"] = record.id
        return event_stream_response(
            engine.backend,
            record.id,
            0,
            keepalive=settings.server.sse_keepalive,
            metrics=metrics,
            buffer=settings.server.sse_client_buffer,
            headers=headers,
        )
    view = await job_view(engine.backend, record)
    return JSONResponse(view.model_dump(mode="json"), status_code=202 if created else 200, headers=headers)


@router.get("/research", response_model=JobList, summary="List jobs, newest first")
async def list_research(
    backend: BackendDep,
    principal: PrincipalDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page.",
        ),
    ] = None,
) -> JobList:
    records, next_cursor = await backend.list_jobs(status, cursor, limit, principal.owner_filter)
    items = [
        JobSummary(
            id=r.id,
            status=r.status,
            query=r.request.query,
            simulated=r.simulated,
            timings=timings(r, time.time()),
            links=JobLinks.of(r.id),
        )
        for r in records
    ]
    return JobList(items=items, next_cursor=next_cursor)


@router.get(
    "/research/{job_id}",
    response_model=JobView,
    summary="A job: status, per-agent progress, result, usage, timings",
    responses={404: {"model": ErrorResponse, "description": "No such job."}},
)
async def get_research(job_id: JobId, backend: BackendDep, principal: PrincipalDep) -> JobView:
    return await job_view(backend, await visible_job(backend, job_id, principal))


@router.post(
    "/research/{job_id}/cancel",
    response_model=JobView,
    summary="Cancel a job (idempotent)",
    responses={
        200: {"description": "The job is finished: cancelled now, or it had already ended."},
        202: {"model": JobView, "description": "Cancellation requested; the job stops within moments."},
        404: {"model": ErrorResponse, "description": "No such job."},
    },
)
async def cancel_research(job_id: JobId, backend: BackendDep, principal: PrincipalDep) -> JSONResponse:
    await visible_job(backend, job_id, principal)
    record = await cancel_job(backend, job_id)
    view = await job_view(backend, record)
    return JSONResponse(view.model_dump(mode="json"), status_code=200 if record.status.terminal else 202)


@router.delete(
    "/research/{job_id}",
    status_code=204,
    summary="Delete a finished job with its events and result",
    responses={
        404: {"model": ErrorResponse, "description": "No such job."},
        409: {"model": ErrorResponse, "description": "The job has not finished; cancel it first."},
    },
)
async def delete_research(job_id: JobId, backend: BackendDep, principal: PrincipalDep) -> Response:
    await visible_job(backend, job_id, principal)
    await delete_job(backend, job_id)
    return Response(status_code=204)


@router.get(
    "/research/{job_id}/events",
    summary="Stream a job's events (Server-Sent Events)",
    response_class=Response,
    responses={200: SSE_RESPONSE, 404: {"model": ErrorResponse, "description": "No such job."}},
)
async def research_events(
    job_id: JobId,
    backend: BackendDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    grant: StreamGrantDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Replay only events after this sequence number.")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_SEQ,
            description="Sent by reconnecting EventSource clients; wins over `after`.",
        ),
    ] = None,
) -> Response:
    if not grant.allows(job_id):
        raise JobNotFound(job_id)  # a token signed for another job: as if this one did not exist
    await visible_job(backend, job_id, grant.principal)
    start = last_event_id if last_event_id is not None else (after or 0)
    return event_stream_response(
        backend,
        job_id,
        start,
        keepalive=settings.server.sse_keepalive,
        metrics=metrics,
        buffer=settings.server.sse_client_buffer,
    )
