"""Operations: liveness, readiness, Prometheus metrics, and the live web page."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.auth import KeyringDep
from app.deps import EngineDep, HttpDep, LifecycleDep, MetricsDep
from app.schemas import HealthView, ReadinessCheck, ReadinessView
from workers.backend import backend_location
from workers.backend.base import Backend
from workers.engine import SIMULATED_BANNER, Engine
from workers.errors import BackendUnavailable

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

# A readiness probe must answer quickly even when the LLM endpoint hangs.
LLM_PROBE_TIMEOUT = 3.0
WEB_PAGE = Path(__file__).resolve().parents[1] / "web" / "index.html"


def version() -> str:
    try:
        return metadata.version("heavyresearch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@router.get("/healthz", response_model=HealthView, summary="Liveness, and whether the model is SIMULATED")
async def healthz(engine: EngineDep) -> HealthView:
    return HealthView(
        version=version(),
        backend=engine.backend.name,
        backend_location=backend_location(engine.backend),
        simulated=engine.simulated,
        message=SIMULATED_BANNER if engine.simulated else None,
        corpus_documents=engine.corpus_docs,
    )


@router.get(
    "/readyz",
    response_model=ReadinessView,
    summary="Readiness: the job store answers and the LLM endpoint is reachable",
    responses={503: {"model": ReadinessView, "description": "Not ready; each failed check says why."}},
)
async def readyz(engine: EngineDep, http: HttpDep, lifecycle: LifecycleDep) -> JSONResponse:
    checks = {
        "backend": await _backend_check(engine.backend),
        "llm": await _llm_check(http, engine.llm_base_url, engine.settings.llm.api_key, engine.simulated),
        "sandbox": _sandbox_check(engine),
        "accepting_jobs": ReadinessCheck(
            ok=not lifecycle.stopping, detail="shutting down" if lifecycle.stopping else None
        ),
    }
    ready = all(check.ok for check in checks.values())
    view = ReadinessView(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(view.model_dump(mode="json"), status_code=200 if ready else 503)


def _sandbox_check(engine: Engine) -> ReadinessCheck:
    """PythonInterpreter's sandbox. Not having one only fails readiness when one was asked for
    explicitly (sandbox.mode embedded or remote); in "auto" the tool is simply not offered."""
    if engine.runner is None:
        return ReadinessCheck(ok=True, detail="decided by the worker processes")
    offered = "PythonInterpreter" in engine.runner.parts.tools
    note = engine.tool_status.get("PythonInterpreter")
    return ReadinessCheck(ok=offered or engine.settings.sandbox.mode in ("auto", "off"), detail=note)


async def _backend_check(backend: Backend) -> ReadinessCheck:
    try:
        await backend.ping()
    except BackendUnavailable as exc:
        return ReadinessCheck(ok=False, detail=str(exc))
    return ReadinessCheck(ok=True)


async def _llm_check(http: httpx.AsyncClient, base_url: str, api_key: str, simulated: bool) -> ReadinessCheck:
    if not base_url:
        # A front-end process on Redis with no LLM configured: each worker runs its own sim.
        return ReadinessCheck(ok=True, detail="simulated model, run inside the worker processes")
    url = f"{base_url.rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key and not simulated else {}
    try:
        response = await http.get(url, headers=headers, timeout=LLM_PROBE_TIMEOUT)
    except httpx.HTTPError as exc:
        return ReadinessCheck(ok=False, detail=f"{url} unreachable: {type(exc).__name__}: {exc}")
    if response.status_code in (401, 403):
        return ReadinessCheck(ok=False, detail=f"{url} refused the API key (HTTP {response.status_code})")
    if response.status_code >= 500:
        return ReadinessCheck(ok=False, detail=f"{url} answered HTTP {response.status_code}")
    # Some OpenAI-compatible servers have no /models route; a 404 still proves the server is up.
    detail = "simulated model" if simulated else None
    return ReadinessCheck(ok=True, detail=detail)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(engine: EngineDep, metrics: MetricsDep, keyring: KeyringDep) -> Response:
    running = len(engine.worker.running_jobs) if engine.worker is not None else 0
    await metrics.refresh(engine.backend, running)
    await metrics.refresh_tenants(engine.backend, keyring.tenants)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def web_page(request: Request) -> HTMLResponse:
    page: str = request.app.state.web_page
    return HTMLResponse(page)
