"""A job's event log as Server-Sent Events: replay from a point, then follow live, then close.

Each SSE message is one `workers.events.Event`: `id:` its seq (so a browser's reconnect sends
it back as `Last-Event-ID`), `event:` its type, `data:` the event as JSON. The stream reads
only the backend, never the engine, so it works the same when the job runs in another process;
and it only ever reads, so a client that goes away cannot touch the job. All clients of a job
in this process share one reader and one encoding of each event (`app.broadcast`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.broadcast import TERMINAL_GRACE_SECONDS, WAIT_SECONDS, Subscription, hub_for, types_of
from app.metrics import Metrics
from workers.backend.base import Backend
from workers.errors import BackendUnavailable
from workers.events import Event

log = logging.getLogger(__name__)

# New events a client may fall behind by while its socket stays full before it is dropped
# (the setting `server.sse_client_buffer`).
DEFAULT_CLIENT_BUFFER = 1000
# How long the last message of a stream that ends early may take to go out.
CLOSING_SECONDS = 1.0
KEEPALIVE = b": keep-alive\n\n"
# Where the app puts the server's own `send` in a request's scope (`app.main.HeavyResearchAPI`).
SERVER_SEND = "heavyresearch.server_send"
UNAVAILABLE = b": event log unavailable: reconnect with Last-Event-ID to resume\nretry: 3000\n\n"

_Write = Callable[[bytes], Coroutine[Any, Any, None]]


class EventStreamResponse(Response):
    """`text/event-stream` of one job's events after `after`, fed by the job's broadcaster."""

    media_type = "text/event-stream"

    def __init__(
        self,
        backend: Backend,
        job_id: str,
        after: int,
        *,
        keepalive: float,
        buffer: int,
        metrics: Metrics,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # No body and so no Content-Length, as in starlette's StreamingResponse.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})})
        self.backend = backend
        self.job_id = job_id
        self.after = after
        self.keepalive = keepalive
        self.buffer = buffer
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method", "GET").upper() == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return

        # The events go straight to the server's `send`: the middleware's send wrappers only
        # watch a response's start (status, timing, the trace), which went through them above,
        # and each layer costs a coroutine per client per batch (2000 clients: 2000 a batch).
        body_send: Send = scope.get(SERVER_SEND, send)

        async def write(body: bytes) -> None:
            await body_send({"type": "http.response.body", "body": body, "more_body": True})

        self.metrics.sse_clients.inc()
        try:
            complete = await self._stream(receive, write)
        finally:
            self.metrics.sse_clients.dec()
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # Otherwise the client left, or its socket is full: returning unfinished makes the
        # server close the connection.

    async def _stream(self, receive: Receive, write: _Write) -> bool:
        """Streams until the end; False when the client left or the last message could not
        be written."""
        try:
            if self.after > 0 and await _seen_terminal(self.backend, self.job_id, self.after):
                return True  # a reconnect after the end: nothing is missing
        except BackendUnavailable as exc:
            log.warning("event log unavailable: %s", exc, extra={"job_id": self.job_id})
            return await _closing(write, UNAVAILABLE)
        left = False
        hub = hub_for(self.backend)
        subscribe = hub.subscribe(
            self.backend,
            self.job_id,
            self.after,
            buffer=self.buffer,
            keepalive=self.keepalive,
            count_sent=self._count,
        )
        async with subscribe as subscription:
            # One task group per connection (not per event): a disconnect, or a drop decided
            # by the broadcaster, cancels the pump wherever it waits.
            async with anyio.create_task_group() as tg:
                subscription.on_interrupt = tg.cancel_scope.cancel

                async def until_disconnect() -> None:
                    nonlocal left
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    left = True
                    tg.cancel_scope.cancel()

                tg.start_soon(until_disconnect)
                await self._pump(subscription, write)
                tg.cancel_scope.cancel()
            closing = subscription.closing()
            log.debug(
                "event stream closed after %d events (%s)",
                subscription.cursor - self.after,
                "client left" if left else _why(subscription),
                extra={"job_id": self.job_id},
            )
        if left:
            return False
        return await _closing(write, closing) if closing else True

    async def _pump(self, subscription: Subscription, write: _Write) -> None:
        # New events usually reach this client without this task: the broadcaster writes them
        # while it waits here (`Subscription.push`). This loop does the rest: the replay,
        # keep-alives, catching up after a full socket, and the writes that had to wait.
        subscription.write_fn = write
        broadcaster = subscription.broadcaster
        while (batch := await subscription.next()) is not None:
            body = b"".join([frame.data for frame in batch])
            now = time.monotonic()
            # Keep-alives go out on a fixed period, busy or not, as proxies expect.
            if now >= subscription.ping_at:
                body += KEEPALIVE
                subscription.ping_at = now + self.keepalive
            await subscription.write(write, body)
            broadcaster.count(types_of(batch))

    def _count(self, counts: dict[str, int]) -> None:
        for type_, count in counts.items():
            self.metrics.events_sent.labels(type_).inc(count)


async def _closing(write: _Write, body: bytes) -> bool:
    with anyio.move_on_after(CLOSING_SECONDS):
        await write(body)
        return True
    return False


def _why(subscription: Subscription) -> str:
    if subscription.dropped is not None:
        return f"dropped: {subscription.dropped.value}"
    end = subscription.broadcaster.end
    return end.value if end is not None else "?"


def event_stream_response(
    backend: Backend,
    job_id: str,
    after: int,
    *,
    keepalive: float,
    metrics: Metrics,
    buffer: int = DEFAULT_CLIENT_BUFFER,
    headers: dict[str, str] | None = None,
) -> Response:
    return EventStreamResponse(
        backend, job_id, after, keepalive=keepalive, buffer=buffer, metrics=metrics, headers=headers
    )


# -- one consumer's read of the log, as decoded events ---------------------------------------
# For a caller that needs the events themselves rather than SSE bytes (the chat facade), and
# is one reader per request anyway.


async def follow(backend: Backend, job_id: str, after: int, stop: anyio.Event) -> AsyncIterator[Event]:
    """Every event with seq > `after`, in order, live; ends after the terminal event, when the
    job is deleted, or when `stop` is set (the server is shutting down)."""
    if after > 0 and await _seen_terminal(backend, job_id, after):
        return  # a reconnect after the end: nothing is missing
    last = after
    while not stop.is_set():
        # Returns at once when events are waiting; the job record is read only when idle.
        events = await _wait(backend, job_id, last, WAIT_SECONDS, stop)
        if not events:
            record = await backend.get_job(job_id)
            if record is None:
                return
            if record.status.terminal:
                events = await _wait(backend, job_id, last, TERMINAL_GRACE_SECONDS, stop)
                if not events:
                    return
        for event in events:
            yield event
            last = event.seq
            if event.type.terminal:
                return


async def _wait(backend: Backend, job_id: str, after: int, timeout: float, stop: anyio.Event) -> list[Event]:
    """`backend.wait_events`, cut short when `stop` is set."""
    found: list[Event] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            nonlocal found
            found = await backend.wait_events(job_id, after, timeout)
            tg.cancel_scope.cancel()

        async def watch_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait)
        tg.start_soon(watch_stop)
    return found


async def _seen_terminal(backend: Backend, job_id: str, last: int) -> bool:
    """Whether the client's last event was the terminal one (a reconnect after the end)."""
    tail = await backend.read_events(job_id, last - 1, 1)
    return bool(tail) and tail[0].type.terminal
