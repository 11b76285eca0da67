"""A job's event log as Server-Sent Events: replay from a point, then follow live, then close.

Each SSE message is one `workers.events.Event`: `id:` its seq (so a browser's reconnect sends
it back as `Last-Event-ID`), `event:` its type, `data:` the event as JSON. The stream reads
only the backend, never the engine, so it works the same when the job runs in another process;
and it only ever reads, so a client that goes away cannot touch the job.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.metrics import Metrics
from workers.backend.base import Backend
from workers.events import Event

log = logging.getLogger(__name__)

# How long one wait for new events blocks before the stream re-checks that the job still
# exists; keep-alive comments are sent independently of it.
WAIT_SECONDS = 5.0
# The job's status is saved just before its terminal event is appended; a stream that sees a
# terminal status but no terminal event yet waits this long for it to land.
TERMINAL_GRACE_SECONDS = 2.0
# A client that reads nothing for this long is dropped rather than holding a send forever.
SEND_TIMEOUT_SECONDS = 30.0
# On shutdown, how long a stream has to end by itself before it is cut.
SHUTDOWN_GRACE_SECONDS = 2.0


def _message(event: Event) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=event.type.value, id=str(event.seq))


async def follow(backend: Backend, job_id: str, after: int, stop: anyio.Event) -> AsyncIterator[Event]:
    """Every event with seq > `after`, in order, live; ends after the terminal event, when the
    job is deleted, or when `stop` is set (the server is shutting down)."""
    if after > 0 and await _seen_terminal(backend, job_id, after):
        return  # a reconnect after the end: nothing is missing
    last = after
    while not stop.is_set():
        # Returns at once when events are waiting; the job record is read only when idle, not
        # once per batch of events for every client.
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


def event_stream_response(
    backend: Backend,
    job_id: str,
    after: int,
    *,
    keepalive: float,
    metrics: Metrics,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    # sse-starlette sets `stop` when uvicorn is told to exit; the stream then ends cleanly
    # (instead of being cut mid-response) and tells the client how to resume elsewhere.
    stop = anyio.Event()

    async def messages() -> AsyncIterator[ServerSentEvent]:
        metrics.sse_clients.inc()
        sent = 0
        try:
            async for event in follow(backend, job_id, after, stop):
                metrics.events_sent.labels(event.type.value).inc()
                sent += 1
                yield _message(event)
            if stop.is_set():
                yield ServerSentEvent(comment="server shutting down: reconnect with Last-Event-ID to resume")
        finally:
            metrics.sse_clients.dec()
            log.debug("event stream closed after %d events", sent, extra={"job_id": job_id})

    return EventSourceResponse(
        messages(),
        ping=keepalive,
        headers=headers,
        sep="\n",
        send_timeout=SEND_TIMEOUT_SECONDS,
        shutdown_event=stop,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
