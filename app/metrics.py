"""Prometheus metrics for the HTTP edge, in a registry owned by one app instance.

A registry per app (not the process-global default) lets several apps live in one process,
as they do in the tests. Job counts by status are read from the backend at scrape time, so
they stay right when the jobs run in worker processes elsewhere.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.backend.base import Backend
from workers.models import JobStatus
from workers.tenancy import COUNTER_TTL, tokens_key, utc_day

# Scrapes count at most this many jobs per status, so a huge store cannot make /metrics slow.
STATUS_COUNT_CAP = 10_000
_PAGE = 1000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter(
            "hr_jobs_submitted", "POST /v1/research outcomes.", ["outcome"], registry=r
        )
        self.jobs = Gauge(
            "hr_jobs",
            f"Jobs in the store by status (counted up to {STATUS_COUNT_CAP}).",
            ["status"],
            registry=r,
        )
        self.queue_depth = Gauge("hr_queue_depth", "Jobs waiting to be claimed by a worker.", registry=r)
        self.worker_jobs = Gauge(
            "hr_worker_running_jobs", "Jobs the in-process worker is running (0 without one).", registry=r
        )
        self.events_sent = Counter(
            "hr_sse_events_sent", "Job events sent to SSE clients.", ["type"], registry=r
        )
        self.sse_clients = Gauge("hr_sse_clients", "SSE clients streaming right now.", registry=r)
        self.requests = Counter(
            "hr_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "hr_http_request_seconds",
            "Time to the response's first byte (SSE: to the stream opening).",
            ["method", "route"],
            registry=r,
        )

        self.tenant_jobs = Counter(
            "hr_tenant_jobs_submitted", "Jobs created, per tenant ('-': no API keys).", ["tenant"], registry=r
        )
        self.quota_refusals = Counter(
            "hr_quota_refusals", "Submits refused by a tenant quota (429).", ["tenant", "quota"], registry=r
        )
        self.tenant_tokens = Gauge(
            "hr_tenant_tokens_today",
            "LLM tokens of finished jobs per tenant, this UTC day.",
            ["tenant"],
            registry=r,
        )

    async def refresh_tenants(self, backend: Backend, tenants: list[str]) -> None:
        """The configured tenants' usage today, just before a scrape."""
        day = utc_day()
        for tenant in tenants:
            self.tenant_tokens.labels(tenant).set(
                await backend.counter_add(tokens_key(tenant, day), 0, COUNTER_TTL)
            )

    async def refresh(self, backend: Backend, running_in_process: int) -> None:
        """Update the gauges that mirror backend state, just before a scrape."""
        self.queue_depth.set(await backend.queue_depth())
        self.worker_jobs.set(running_in_process)
        for status in JobStatus:
            self.jobs.labels(status.value).set(await _count(backend, status))

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def _count(backend: Backend, status: JobStatus) -> int:
    total, cursor = 0, None
    while total < STATUS_COUNT_CAP:
        page, cursor = await backend.list_jobs(status, cursor, _PAGE)
        total += len(page)
        if cursor is None:
            break
    return min(total, STATUS_COUNT_CAP)


class RequestMetrics:
    """ASGI middleware counting requests per route template (never per raw path: ids would
    explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(scope["method"], _route(scope)).observe(
                    time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
