"""One reader of a job's event log per process, shared by every SSE client of that job.

A `Broadcaster` follows one job's log (`backend.wait_events`) and encodes each event to SSE
bytes once, into a shared, append-only list of frames; each `Subscription` is just a cursor
into that list. So a thousand clients of one job cost one backend reader and one encoding per
event, and a client's replay (Last-Event-ID / `?after=`) is served from the same frames.

The reader never waits for a client: a client whose socket stays full while `buffer` new events
arrive is dropped (it reconnects with Last-Event-ID and loses nothing), so a slow client cannot
slow the others, the reader, or the engine. When the backend fails, the reader stops and every
stream ends with a `retry:` hint instead of an error.

New events are written by the reader itself, on behalf of every client whose own task is idle
(caught up and waiting): it starts the client's ASGI `send` coroutine and, when the socket takes
the bytes at once (the usual case), that is the whole delivery, with no task woken per client.
With 2000 clients, waking each client's task (whose coroutine stack runs through every
middleware) cost about 50 µs a client a batch; a direct write costs a few. A write that has to
wait (the socket is full) is handed, still pending, to the client's own task, which finishes it;
replays, keep-alives and catching up after a full socket are also the client task's. Each
batch is joined once for all the clients at the same point. Timed work (keep-alives, the send
timeout) is done by one ticker per job, not one timer per client.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from workers.backend.base import Backend
from workers.errors import BackendUnavailable
from workers.events import Event

log = logging.getLogger(__name__)

# How long one wait for new events blocks before the reader re-checks that the job still
# exists (a deleted job has no terminal event to end its streams).
WAIT_SECONDS = 5.0
# The job's status is saved just before its terminal event is appended; a reader that sees a
# terminal status but no terminal event yet waits this long for it to land.
TERMINAL_GRACE_SECONDS = 2.0
# Frames handed to a client per write: bounds one write's size during a long replay.
MAX_FRAMES_PER_WRITE = 256
# After handing out a batch the reader waits at least this long, and at least as long as the
# clients took to write it, before reading the next: events that land meanwhile (a round's
# burst from eight agents) go out as one batch, one wake-up per client instead of one per
# event. So fan-out takes at most about half of the loop under load, and the engine, on the
# same loop in `serve`, gets its turn between fan-outs instead of after each of many.
COALESCE_SECONDS = 0.005
# How often the events sent are added to the Prometheus counter (one `inc()` per event per
# client was a third of the per-client cost).
COUNT_FLUSH_SECONDS = 1.0
# A client whose socket accepts nothing for this long is dropped even when no new events
# arrive (a dead peer must not hold its connection forever).
SEND_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, encoded once for every client."""

    seq: int
    type: str
    data: bytes
    terminal: bool


@dataclass(slots=True)
class Batch:
    """The frames after one cursor, joined once for every client at that cursor."""

    body: bytes
    last: int  # seq of its last frame
    types: dict[str, int]  # events by type, for the sent counter
    deliveries: int = 0


@dataclass(slots=True)
class Blocked:
    """A write the reader began for a client whose socket was full; the client's task ends it."""

    coro: Coroutine[Any, Any, None]
    awaiting: Any  # what the coroutine is waiting on (an asyncio future; None for a bare yield)


def types_of(frames: list[Frame]) -> dict[str, int]:
    """How many of `frames` there are of each event type."""
    types: dict[str, int] = {}
    for frame in frames:
        types[frame.type] = types.get(frame.type, 0) + 1
    return types


def encode(event: Event) -> Frame:
    # `id:` is the seq, so a browser's reconnect sends it back as Last-Event-ID. The JSON is
    # compact (newlines inside strings are escaped), so one `data:` line carries it.
    body = f"id: {event.seq}\nevent: {event.type.value}\ndata: {event.model_dump_json()}\n\n"
    return Frame(event.seq, event.type.value, body.encode(), event.type.terminal)


class End(enum.Enum):
    """Why a broadcaster stopped reading."""

    terminal = "terminal"  # the job's terminal event is in the frames
    gone = "gone"  # the job was deleted, or ended without a terminal event
    outage = "outage"  # the backend failed: clients should retry later


class Broadcaster:
    """Follows one job's log from its first event; frames[i] is the event with seq i + 1."""

    def __init__(
        self,
        backend: Backend,
        job_id: str,
        keepalive: float,
        count_sent: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.job_id = job_id
        self.keepalive = keepalive
        self.count_sent = count_sent  # takes events sent by type since its last call
        self.frames: list[Frame] = []
        self.end: End | None = None
        self.detail = ""
        self.subscribers: set[Subscription] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: dict[int, Batch] = {}  # this publish's batches, by cursor
        self._sent: dict[str, int] = {}
        self._flush_at = time.monotonic() + COUNT_FLUSH_SECONDS

    def start(self) -> None:
        # Plain tasks, not a request's: they outlive the client that started them and are
        # cancelled when the job's last client leaves.
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"sse-{self.job_id}"),
            loop.create_task(self._tick(), name=f"sse-tick-{self.job_id}"),
        ]

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.flush_counts()

    def batch(self, cursor: int) -> Batch:
        """The frames after `cursor` (at most MAX_FRAMES_PER_WRITE); call only when there are some."""
        batch = self._batches.get(cursor)
        if batch is None:
            frames = self.frames[cursor : cursor + MAX_FRAMES_PER_WRITE]
            batch = Batch(b"".join([f.data for f in frames]), frames[-1].seq, types_of(frames))
            self._batches[cursor] = batch
        return batch

    def count(self, types: dict[str, int], deliveries: int = 1) -> None:
        """Adds `deliveries` sendings of events of these `types` to the sent counts."""
        for type_, n in types.items():
            self._sent[type_] = self._sent.get(type_, 0) + n * deliveries

    def flush_counts(self) -> None:
        self._flush_at = time.monotonic() + COUNT_FLUSH_SECONDS
        if self._sent and self.count_sent is not None:
            sent, self._sent = self._sent, {}
            self.count_sent(sent)

    async def _tick(self) -> None:
        """Wakes idle clients for their keep-alives; drops those stuck in one write too long."""
        while True:
            await asyncio.sleep(self.keepalive / 2)
            now = time.monotonic()
            for subscriber in list(self.subscribers):
                subscriber.check_stuck(now)
            self._wake()
            self.flush_counts()

    async def _run(self) -> None:
        try:
            self._finish(await self._follow(), "")
        except BackendUnavailable as exc:
            log.warning("event log unavailable; ending its streams: %s", exc, extra={"job_id": self.job_id})
            self._finish(End.outage, str(exc))
        except Exception as exc:  # a reader that dies must still end its streams
            log.exception("event reader failed; ending its streams", extra={"job_id": self.job_id})
            self._finish(End.outage, f"{type(exc).__name__}: {exc}")

    async def _follow(self) -> End:
        while True:
            events = await self.backend.wait_events(self.job_id, len(self.frames), WAIT_SECONDS)
            if not events:
                record = await self.backend.get_job(self.job_id)
                if record is None:
                    return End.gone
                if record.status.terminal:
                    events = await self.backend.wait_events(
                        self.job_id, len(self.frames), TERMINAL_GRACE_SECONDS
                    )
                    if not events:
                        return End.gone
            if self._publish(events):
                return End.terminal
            # asyncio runs ready callbacks in order: this returns once every woken client has
            # taken its batch and written it (unless its socket is full).
            began = time.monotonic()
            await asyncio.sleep(0)
            await asyncio.sleep(max(COALESCE_SECONDS, time.monotonic() - began))

    def _publish(self, events: list[Event]) -> bool:
        """Appends the new frames, drops clients stuck behind, wakes the rest; True at the end."""
        terminal = False
        for event in events:
            if event.seq != len(self.frames) + 1:
                continue  # already published (logs are gapless, so this is a repeat)
            self.frames.append(encode(event))
            if event.type.terminal:
                terminal = True
                break
        head = len(self.frames)
        for subscriber in list(self.subscribers):
            subscriber.check_lag(head)
            subscriber.push()
        for batch in self._batches.values():
            self.count(batch.types, batch.deliveries)
        self._batches.clear()
        if time.monotonic() >= self._flush_at:
            self.flush_counts()
        return terminal

    def _finish(self, end: End, detail: str) -> None:
        self.end, self.detail = end, detail
        self._wake()
        self.flush_counts()

    def _wake(self) -> None:
        for subscriber in self.subscribers:
            subscriber.wake()


class Drop(enum.Enum):
    """Why a stream ended early, on the server's side."""

    slow = "slow"
    shutdown = "shutdown"


class Subscription:
    """One client's cursor into a broadcaster's frames."""

    def __init__(self, broadcaster: Broadcaster, after: int, buffer: int, hub: Hub) -> None:
        self.broadcaster = broadcaster
        self.cursor = after  # seq of the last event handed to this client
        self.buffer = buffer
        self.dropped: Drop | None = None
        # Called to end this client's stream at once, wherever it is (set by the response).
        self.on_interrupt: Callable[[], None] = lambda: None
        self.ping_at = time.monotonic() + broadcaster.keepalive
        # Writes bytes to this client (set by the response); until set, only its task writes.
        self.write_fn: Callable[[bytes], Coroutine[Any, Any, None]] | None = None
        self._hub = hub
        self._waiter: asyncio.Future[Blocked | None] | None = None
        self._sending_since: int | None = None  # the head when the current write began
        self._sending_at = 0.0

    async def next(self) -> list[Frame] | None:
        """The frames after the cursor; [] when a keep-alive is due and nothing is new; None
        when this stream is over (see `closing`)."""
        b = self.broadcaster
        while True:
            if self.dropped is not None:
                return None
            if self.cursor < len(b.frames):
                batch = b.frames[self.cursor : self.cursor + MAX_FRAMES_PER_WRITE]
                self.cursor = batch[-1].seq
                return batch
            if b.end is not None:
                return None
            if time.monotonic() >= self.ping_at:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                blocked = await self._waiter
            finally:
                self._waiter = None
            if blocked is not None:
                await self._complete(blocked)

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def push(self) -> None:
        """Writes the new frames from the reader's task while this client's own task is idle;
        otherwise wakes it (or leaves it to find them when its current write ends)."""
        waiter = self._waiter
        b = self.broadcaster
        if waiter is None or waiter.done() or self.dropped is not None or self.cursor >= len(b.frames):
            return
        if self.write_fn is None:
            waiter.set_result(None)
            return
        batch = b.batch(self.cursor)
        self.cursor = batch.last
        batch.deliveries += 1
        coro = self.write_fn(batch.body)
        try:
            awaiting = coro.send(None)
        except StopIteration:
            if self.cursor < len(b.frames):
                waiter.set_result(None)  # more than one write's worth: its task goes on
            return
        except Exception as exc:  # the client's task raises it, as if its own write had failed
            waiter.set_exception(exc)
            return
        self._sending_since = len(b.frames)
        self._sending_at = time.monotonic()
        waiter.set_result(Blocked(coro, awaiting))

    async def _complete(self, blocked: Blocked) -> None:
        """Drives a write the reader began to its end, in this client's task."""
        coro, awaiting = blocked.coro, blocked.awaiting
        try:
            while True:
                if awaiting is None:
                    await asyncio.sleep(0)
                else:
                    # Waits without taking the future's outcome: the coroutine takes it.
                    await asyncio.wait([awaiting])
                awaiting = coro.send(None)
        except StopIteration:
            pass
        finally:
            coro.close()  # a no-op once it ended; otherwise (cancelled) ends it here
            self._sending_since = None

    async def write(self, send: Callable[[bytes], Awaitable[None]], body: bytes) -> None:
        """`send(body)`; a drop meanwhile interrupts it (through `on_interrupt`)."""
        self._sending_since = len(self.broadcaster.frames)
        self._sending_at = time.monotonic()
        await send(body)
        self._sending_since = None

    def check_lag(self, head: int) -> None:
        # Only a client stuck in one write counts as slow: one merely behind (replaying, or
        # about to take the batch that just landed) takes what it needs at its own pace.
        if self._sending_since is not None and head - self._sending_since > self.buffer:
            log.info(
                "SSE client dropped: its socket stayed full while %d events arrived (after seq %d)",
                head - self._sending_since,
                self.cursor,
                extra={"job_id": self.broadcaster.job_id},
            )
            self.interrupt(Drop.slow)

    def check_stuck(self, now: float) -> None:
        # A dead peer with a full socket must not hold its connection when no events come.
        if self._sending_since is not None and now - self._sending_at > SEND_TIMEOUT_SECONDS:
            log.info(
                "SSE client dropped: its socket accepted nothing for %.0f s (after seq %d)",
                SEND_TIMEOUT_SECONDS,
                self.cursor,
                extra={"job_id": self.broadcaster.job_id},
            )
            self.interrupt(Drop.slow)

    def interrupt(self, reason: Drop) -> None:
        if self.dropped is None:
            self.dropped = reason
            self.on_interrupt()

    def closing(self) -> bytes:
        """What to send last: nothing after the terminal event; otherwise how to come back."""
        if self.dropped is Drop.slow:
            return (
                b": dropped: this client read too slowly and fell behind; "
                b"reconnect with Last-Event-ID to resume\nretry: 1000\n\n"
            )
        if self.dropped is Drop.shutdown:
            return b": server shutting down: reconnect with Last-Event-ID to resume\nretry: 1000\n\n"
        if self.broadcaster.end is End.outage:
            return b": event log unavailable: reconnect with Last-Event-ID to resume\nretry: 3000\n\n"
        return b""


class Hub:
    """The broadcasters of one backend in this process, one per job with clients."""

    def __init__(self) -> None:
        self.jobs: dict[str, Broadcaster] = {}
        self.stopping = False
        self._subscriptions: set[Subscription] = set()
        self._watcher: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def subscribe(
        self,
        backend: Backend,
        job_id: str,
        after: int,
        *,
        buffer: int,
        keepalive: float,
        count_sent: Callable[[dict[str, int]], None] | None = None,
    ) -> AsyncIterator[Subscription]:
        self._watch_exit()
        broadcaster = self.jobs.get(job_id)
        # An ended reader is reused only when it ended with the job: after an outage or a
        # delete, a new client gets a fresh look at the backend.
        if broadcaster is None or broadcaster.end not in (None, End.terminal):
            broadcaster = Broadcaster(backend, job_id, keepalive, count_sent)
            self.jobs[job_id] = broadcaster
            broadcaster.start()
        subscription = Subscription(broadcaster, after, buffer, self)
        if self.stopping:
            subscription.dropped = Drop.shutdown
        broadcaster.subscribers.add(subscription)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            broadcaster.subscribers.discard(subscription)
            if not broadcaster.subscribers:
                broadcaster.close()
                if self.jobs.get(job_id) is broadcaster:
                    del self.jobs[job_id]

    def _watch_exit(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._on_exit(), name="sse-exit")

    async def _on_exit(self) -> None:
        # sse-starlette's watcher of uvicorn's exit signal (the one the old per-client
        # responses used); streams then end with a hint instead of being cut.
        from sse_starlette.sse import EventSourceResponse

        await EventSourceResponse._listen_for_exit_signal()
        self.stopping = True
        for subscription in list(self._subscriptions):
            subscription.interrupt(Drop.shutdown)


_hubs: weakref.WeakKeyDictionary[Backend, Hub] = weakref.WeakKeyDictionary()


def hub_for(backend: Backend) -> Hub:
    """The hub of `backend` (one per backend object, so one per app). The hub holds no
    reference to its backend, so an app's backend is freed with the app."""
    hub = _hubs.get(backend)
    if hub is None:
        hub = _hubs[backend] = Hub()
    return hub
