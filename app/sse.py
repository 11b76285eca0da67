"""A job's event log as Server-Sent Events: replay from a point, then follow live, then close.

Each SSE message is one `workers.events.Event`: `id:` its seq (so a browser's reconnect sends
it back as `Last-Event-ID`), `event:` its type, `data:` the event as JSON. The stream reads
only the backend, never the engine, so it works the same when the job runs in another process;
and it only ever reads, so a client that goes away cannot touch the job.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

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


def _message(event: Event) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=event.type.value, id=str(event.seq))


async def follow(backend: Backend, job_id: str, after: int) -> AsyncIterator[Event]:
    """Every event with seq > `after`, in order, live; ends after the terminal event, or when
    the job is deleted."""
    last = after
    while True:
        events = await backend.read_events(job_id, last)
        if not events:
            record = await backend.get_job(job_id)
            if record is None:
                return
            if record.status.terminal:
                if last > 0 and await _seen_terminal(backend, job_id, last):
                    return
                events = await backend.wait_events(job_id, last, TERMINAL_GRACE_SECONDS)
                if not events:
                    return
            else:
                events = await backend.wait_events(job_id, last, WAIT_SECONDS)
        for event in events:
            yield event
            last = event.seq
            if event.type.terminal:
                return


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
    async def messages() -> AsyncIterator[ServerSentEvent]:
        metrics.sse_clients.inc()
        sent = 0
        try:
            async for event in follow(backend, job_id, after):
                metrics.events_sent.labels(event.type.value).inc()
                sent += 1
                yield _message(event)
        finally:
            metrics.sse_clients.dec()
            log.debug("event stream closed after %d events", sent, extra={"job_id": job_id})

    return EventSourceResponse(
        messages(), ping=keepalive, headers=headers, sep="\n", send_timeout=SEND_TIMEOUT_SECONDS
    )
