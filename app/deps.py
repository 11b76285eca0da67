"""Dependencies the routes declare: settings, the engine, its backend, the caller's key.

Everything here is read from `app.state`, which the lifespan in `app.main` fills at start-up;
nothing is built at import time.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request
from sse_starlette.sse import AppStatus

from app.auth import BearerDep, authenticate, get_keyring
from app.metrics import Metrics
from workers.backend.base import Backend
from workers.engine import Engine
from workers.net.ssrf import Resolver
from workers.settings import Settings


class Lifecycle:
    """Whether this instance still takes new jobs.

    It stops either when the lifespan begins to shut down, or as soon as uvicorn receives its
    exit signal (sse-starlette records that in `AppStatus`), which comes earlier: uvicorn
    first waits for open connections and only then runs the lifespan's shutdown.
    """

    def __init__(self) -> None:
        self._stopping = False

    def begin_shutdown(self) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping or AppStatus.should_exit


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_backend(request: Request) -> Backend:
    return get_engine(request).backend


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


def get_resolver(request: Request) -> Resolver:
    """DNS for submit-time url checks; tests swap in a stub (`app.state.resolver`)."""
    resolver: Resolver = request.app.state.resolver
    return resolver


def get_http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
BackendDep = Annotated[Backend, Depends(get_backend)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]
ResolverDep = Annotated[Resolver, Depends(get_resolver)]


async def caller(
    request: Request,
    credentials: BearerDep,
) -> str | None:
    """The caller's tenant, or None when keys are off; 401 for a missing or wrong key.

    Superseded by `app.auth.PrincipalDep` (tenant and role, for ownership checks); kept for
    routes that only need the tenant's name.
    """
    return authenticate(get_keyring(request), credentials).tenant


CallerDep = Annotated[str | None, Depends(caller)]
