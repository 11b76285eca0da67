"""The HTTP service: `create_app` builds it, its lifespan starts and stops the engine.

With the memory backend the engine's worker runs inside this process; with redis this process
is a stateless front end and `heavyresearch worker` processes run the jobs. Either way the
routes see only the backend, so nothing here depends on where jobs run.

Shutdown: the instance stops taking jobs first (POST /v1/research answers 503, /readyz turns
not ready), open event streams are closed, then leaving `open_engine` drains the worker, which
hands its unfinished jobs back to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from app import errors
from app.auth import Keyring, ProtectedPaths
from app.deps import Lifecycle
from app.metrics import Metrics, RequestMetrics
from app.middleware import BodyLimit, JsonBodies, TraceRequests
from app.routes import chat, files, ops, research, tenants
from app.routes.ops import WEB_PAGE, version
from app.schemas import MAX_AGENTS, MAX_ROUNDS
from app.sse import SERVER_SEND
from app.stream_tokens import StreamTokens
from workers.backend import backend_location
from workers.engine import open_engine
from workers.net.ssrf import system_resolver
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Request bodies are small JSON; anything past this is refused with 413.
MAX_BODY_BYTES = 256 * 1024
# Room for the multipart envelope around an upload of `files.max_bytes`.
MULTIPART_OVERHEAD = 64 * 1024

DESCRIPTION = """\
Heavy Mode deep research as a service: `n` IterResearch agents research one question in
parallel, then a synthesis agent reads their reports and writes the answer with numbered sources.

Submit with `POST /v1/research`, then follow `GET /v1/research/{id}/events` (Server-Sent Events)
or poll `GET /v1/research/{id}`. When the server has no LLM configured it runs on a SIMULATED
model; `/healthz` and every job say so.
"""


class HeavyResearchAPI(FastAPI):
    """FastAPI that keeps the server's own `send` in each request's scope, for the event
    streams' body (`app.sse`): it is the only place the unwrapped `send` can be had."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. Without `settings`, they come from `config/default.toml` and `HR_…` env vars."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle: Lifecycle = app.state.lifecycle
        # With sqlite, `serve` runs jobs too (one box just works); `heavyresearch worker`
        # processes may join it on the same file.
        run_worker = settings.backend in ("memory", "sqlite")
        async with (
            open_engine(
                settings,
                run_worker=run_worker,
                build_engine=run_worker,
                webhook_resolver=app.state.webhook_resolver,
                service="heavyresearch-api",
            ) as engine,
            httpx.AsyncClient(trust_env=False) as http,
        ):
            app.state.engine = engine
            app.state.http = http
            # open_engine has already logged the simulation banner; this line repeats the flag
            # next to where the API says it is ready, so nobody misses it.
            if not keyring.enabled:
                log.warning(
                    "API keys are OFF: the service is open to anyone who can reach it "
                    "(set server.tenants or server.api_keys to require keys)"
                )
            else:
                log.info("API keys are on: %d tenant(s)", len(keyring.tenants))
            log.info(
                "API ready: backend=%s (%s), in-process worker=%s, corpus=%s documents, SIMULATED model=%s",
                engine.backend.name,
                backend_location(engine.backend) or "nothing kept across restarts",
                run_worker,
                engine.corpus_docs,
                engine.simulated,
            )
            try:
                yield
            finally:
                lifecycle.begin_shutdown()
                log.info("API shutting down: no new jobs; draining the in-process worker")

    app = HeavyResearchAPI(
        title="heavyresearch",
        version=version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.lifecycle = Lifecycle()
    app.state.web_page = WEB_PAGE.read_text(encoding="utf-8")
    app.state.keyring = keyring = Keyring(settings.server)
    app.state.stream_tokens = StreamTokens.derive(
        settings.server.stream_token_secret, keyring.digests(), settings.server.stream_token_ttl
    )
    # DNS for webhook urls: checked at submit (`resolver`) and at delivery; tests swap in stubs.
    app.state.resolver = system_resolver
    app.state.webhook_resolver = system_resolver
    errors.install(app)
    protected = set()
    if settings.server.protect_docs:
        protected |= {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    if settings.server.protect_metrics:
        protected.add("/metrics")
    if protected:
        app.add_middleware(ProtectedPaths, keyring=keyring, paths=protected)
    # Added last = outermost: a refused oversized body is counted in the metrics too.
    uploads = {"/v1/files": settings.files.max_bytes + MULTIPART_OVERHEAD}
    # Uploads are multipart; every other body is JSON.
    app.add_middleware(JsonBodies, exempt=tuple(uploads))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, paths=uploads)
    app.add_middleware(RequestMetrics, metrics=metrics)
    # Outermost: the request's span covers everything the service does for it.
    app.add_middleware(TraceRequests)
    app.include_router(research.router)
    app.include_router(files.router)
    app.include_router(tenants.router)
    app.include_router(chat.router)
    app.include_router(ops.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                license_info=app.license_info,
            )
            _apply_server_limits(schema, settings)
            chat.document_options(schema, settings)
            _plain_optional_parameters(schema)
            if not keyring.enabled:
                _drop_security(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _apply_server_limits(schema: dict[str, Any], settings: Settings) -> None:
    """Write this server's configured limits into the document, so clients see the real ones."""
    body = schema.get("components", {}).get("schemas", {}).get("ResearchCreate", {}).get("properties", {})
    _set_bound(body.get("query"), "maxLength", settings.server.max_query_chars)
    _set_bound(body.get("agents"), "maximum", min(MAX_AGENTS, settings.agent.max_agents))
    _set_bound(body.get("max_rounds"), "maximum", min(MAX_ROUNDS, settings.agent.max_rounds_limit))
    _set_bound(body.get("files"), "maxItems", settings.files.max_files_per_job)


def _set_bound(prop: dict[str, Any] | None, key: str, value: int) -> None:
    if prop is None:
        return
    # Optional fields are `anyOf: [{type: integer, ...}, {type: null}]`; the bound goes on
    # the non-null branch.
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") in ("string", "integer", "array"):
            branch[key] = value


def _drop_security(schema: dict[str, Any]) -> None:
    """Without keys nothing needs a bearer token, so the document must not ask for one."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    schemes = schema.get("components", {}).get("securitySchemes")
    if schemes is not None:
        schemes.pop("HTTPBearer", None)
        if not schemes:
            del schema["components"]["securitySchemes"]


def _plain_optional_parameters(schema: dict[str, Any]) -> None:
    """An optional query or header parameter is absent, never `null`: FastAPI documents
    `int | None` as "integer or null", and a client sending the text `null` gets a 422."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                branches = parameter.get("schema", {}).get("anyOf")
                if not branches:
                    continue
                kept = [b for b in branches if b.get("type") != "null"]
                if len(kept) == 1 and len(kept) < len(branches):
                    rest = {k: v for k, v in parameter["schema"].items() if k != "anyOf"}
                    parameter["schema"] = {**kept[0], **rest}
