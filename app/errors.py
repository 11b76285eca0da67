"""Exception handlers: every error leaves as JSON `{"error": {"type", "message", ...}}`.

The engine's error tree maps onto HTTP here and nowhere else:

    JobNotFound          404 not_found
    FileNotFound         404 not_found
    FileRejected         413 payload_too_large / 415 unsupported_media_type
    JobConflict          409 conflict
    QueueFull            429 queue_full      + Retry-After
    QuotaExceeded        429 quota_exceeded  + Retry-After, `quota` names it
    BackendUnavailable   503 unavailable     + Retry-After
    ShuttingDown         503 shutting_down   + Retry-After   (the app is stopping)
    Unauthorized         401 unauthorized    + WWW-Authenticate
    Forbidden            403 forbidden       (admin-only operations; never for another tenant's job)
    validation           422 validation_error, one entry per invalid field
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorDetail, ErrorResponse, FieldError
from workers.errors import (
    BackendUnavailable,
    FileNotFound,
    FileRejected,
    Forbidden,
    JobConflict,
    JobNotFound,
    QueueFull,
    QuotaExceeded,
    ShuttingDown,
    Unauthorized,
)

log = logging.getLogger(__name__)


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    retry_after: int | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    quota: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorDetail(type=type_, message=message, errors=errors, retry_after=retry_after, quota=quota)
    )
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=all_headers
    )


# The responses every /v1 route documents, so clients see the error shape in the OpenAPI.
# A job may name uploaded files; one that is unknown, expired or another tenant's is a 404.
UNKNOWN_FILE_RESPONSE: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "A file named in `files` is unknown, expired, or not the caller's.",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when the server requires one)."},
    422: {"model": ErrorResponse, "description": "Invalid input; `error.errors` names each field."},
    503: {"model": ErrorResponse, "description": "The job store is unreachable or the service is stopping."},
}


def field_errors(raw: Sequence[Any]) -> list[FieldError]:
    out = []
    for item in raw:
        loc = [part if isinstance(part, int) else str(part) for part in item.get("loc", ())]
        if loc and loc[0] == "header":
            # Header names are case-insensitive; show them the way HTTP tooling prints them.
            loc = [loc[0], *(str(p).lower().replace("_", "-") for p in loc[1:])]
        out.append(
            FieldError(
                path=".".join(str(part) for part in loc),
                loc=loc,
                message=str(item.get("msg", "invalid")),
                type=str(item.get("type", "value_error")),
            )
        )
    return out


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    summary = "; ".join(f"{e.path}: {e.message}" for e in errors[:5]) or "invalid request"
    return error_response(422, "validation_error", summary, errors=errors)


# Longest piece of a client's input an error message repeats.
_ECHO_CHARS = 64


def _echo(value: object) -> str:
    text = str(value)
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "…"


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", f"no job with id {_echo(exc)}")


async def _file_not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", f"no file with id {exc}")


async def _file_rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FileRejected)
    type_ = "payload_too_large" if exc.status == 413 else "unsupported_media_type"
    return error_response(exc.status, type_, str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        429, "queue_full", f"too many jobs waiting; retry later ({exc})", retry_after=QueueFull.retry_after
    )


async def _quota_exceeded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuotaExceeded)
    return error_response(429, "quota_exceeded", str(exc), retry_after=exc.retry_after, quota=exc.quota)


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    return error_response(403, "forbidden", str(exc))


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("backend unavailable: %s", exc)
    return error_response(
        503, "unavailable", f"the job store is unavailable: {exc}", retry_after=BackendUnavailable.retry_after
    )


async def _shutting_down(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        503,
        "shutting_down",
        "this instance is shutting down and takes no new jobs",
        retry_after=ShuttingDown.retry_after,
    )


async def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})


_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
}


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # A body that is not even text: the same answer as one that is not valid JSON.
        error = FieldError(
            path="body", loc=["body"], message="the body is not valid JSON", type="json_invalid"
        )
        return error_response(422, "validation_error", "body: the body is not valid JSON", errors=[error])
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, type_, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every documented method on this path (Starlette names only the first route's)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{pattern}$"), {m.upper() for m in operations if m != "parameters"}))
        request.app.state.allow_table = table
    path = request.url.path
    return sorted(set().union(*(methods for pattern, methods in table if pattern.match(path))))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback after this handler answers; the client gets no internals.
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(FileNotFound, _file_not_found)
    app.add_exception_handler(FileRejected, _file_rejected)
    app.add_exception_handler(JobConflict, _conflict)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(QuotaExceeded, _quota_exceeded)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(ShuttingDown, _shutting_down)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
