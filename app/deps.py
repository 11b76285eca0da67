"""Dependencies the routes declare: settings, the engine, its backend, the caller's key.

Everything here is read from `app.state`, which the lifespan in `app.main` fills at start-up;
nothing is built at import time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette.sse import AppStatus

from app.errors import Unauthorized
from app.metrics import Metrics
from workers.backend.base import Backend
from workers.engine import Engine
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


def get_http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
BackendDep = Annotated[Backend, Depends(get_backend)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]

_bearer = HTTPBearer(auto_error=False, description="An API key from the server setting `server.api_keys`.")


async def caller(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The caller's identity: a short digest of its API key, or None when keys are off.

    It scopes idempotency keys, so two callers can never replay each other's jobs.
    """
    keys = settings.server.api_keys
    if not keys:
        return None
    if credentials is None:
        raise Unauthorized("this server requires an API key: send `Authorization: Bearer <key>`")
    given = credentials.credentials.encode()
    # Compare against every key, constant-time, so timing tells nothing about which is close.
    matched = [hmac.compare_digest(given, key.encode()) for key in keys]
    if not any(matched):
        raise Unauthorized("the API key is not valid")
    return hashlib.sha256(given).hexdigest()[:16]


CallerDep = Annotated[str | None, Depends(caller)]
