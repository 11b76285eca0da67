"""ASGI middleware of the edge: a cap on request bodies, JSON bodies only, a span per request."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from workers import tracing

# The W3C trace context headers a client may send to make its request part of its own trace.
TRACE_HEADERS = (b"traceparent", b"tracestate")


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, before the app reads them.

    uvicorn sets no limit of its own, so without this one request could fill memory. A declared
    Content-Length is checked up front; a chunked body is buffered up to the limit and replayed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, *, paths: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Routes with a limit of their own (uploads), by exact path.
        self.paths = paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.paths.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None:
            if declared > max_bytes:
                await self._refuse(scope, receive, send, max_bytes)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client left mid-body; let the app see the same disconnect.
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await self._refuse(scope, receive, send, max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = error_response(413, "payload_too_large", f"the request body is over {max_bytes} bytes")
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class JsonBodies:
    """Refuses a request body that is not JSON with 415 (FastAPI would read it as JSON anyway,
    or answer 422 about a "dictionary"). Bodiless calls (cancel, stream-token) pass."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        # Paths whose bodies are something else (multipart uploads); their routes check them.
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH")
            and scope["path"] not in self.exempt
            and _has_body(scope)
        ):
            media = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
            if not (media == "application/json" or media.endswith("+json")):
                shown = media[:64] or "none"
                response = error_response(
                    415, "unsupported_media_type", f"send the body as application/json (got {shown})"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _has_body(scope: Scope) -> bool:
    length = _content_length(scope)
    return (length is not None and length > 0) or bool(_header(scope, b"transfer-encoding"))


class TraceRequests:
    """A server span per HTTP request (`tracing.enabled`), named by its route template
    (`POST /v1/research`, `GET /v1/research/{job_id}/events`), continuing a trace the client
    sent (`traceparent`). An event stream's span lasts as long as the stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.active():
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        incoming = {
            key.decode("latin-1"): bytes(value).decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in TRACE_HEADERS
        }
        attributes: tracing.Attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with tracing.span(method, attributes, parent=incoming, kind="server") as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set({"http.response.status_code": message["status"]})
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            finally:
                # The router writes the matched route into the scope.
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.rename(f"{method} {route}")
                    span.set({"http.route": route})
