"""The backend seam: job store + event log + job queue + cache, behind one small interface.

Three implementations: `sqlite` (the embedded default), `memory` (one process, nothing kept)
and `redis` (scale-out). The same contract test suite runs against all three.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

from workers.errors import SourceConflict
from workers.events import Event, NewEvent
from workers.models import AgentCheckpoint, FileRecord, JobRecord, JobStatus, Source

if TYPE_CHECKING:
    from workers.llm.limiter import Limiter


def new_job_id() -> str:
    """Time-ordered ids, so listing newest-first and cursor pagination need no extra index."""
    return f"job_{int(time.time() * 1000):012x}{os.urandom(5).hex()}"


def new_file_id() -> str:
    return f"file_{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


def check_sources(stored: Iterable[Source], given: Iterable[Source]) -> None:
    """Raise `SourceConflict` when a `given` source's id or url is the store's for another
    url or id (`commit_round` upserts by both, so anything else is a repeat or new)."""
    ids = {source.url: source.id for source in stored}
    urls = {source_id: url for url, source_id in ids.items()}
    clashes = [
        f"{source.id} ({source.url})"
        for source in given
        if ids.get(source.url, source.id) != source.id or urls.get(source.id, source.url) != source.url
    ]
    if clashes:
        raise SourceConflict(f"source ids already taken by other urls: {', '.join(clashes)}")


class Backend(Protocol):
    name: str

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Check the store at start. Raise `BackendBroken` (with what to do) when it can never
        work as it is; `BackendUnavailable` when it may later (requests answer 503 meanwhile)."""

    def shared_limiter(self, *, patience: float) -> AbstractAsyncContextManager[Limiter] | None:
        """The LLM limiter that every process on this store shares (one rate and concurrency
        budget per endpoint), waiting out a store outage for up to `patience` seconds; None
        when the store is one process's own and the client's local limiter is enough."""

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the backend cannot serve requests."""

    async def close(self) -> None: ...

    # -- job store --------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new job. With `record.idempotency_key` set and already used, return the
        existing job and False instead (the caller compares `request_hash`)."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def save_job(self, record: JobRecord) -> None: ...

    async def list_jobs(
        self, status: JobStatus | None, cursor: str | None, limit: int, owner: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; `cursor` is the last id of the previous page; returns the next cursor.
        With `owner`, only that tenant's jobs (`JobRecord.owner`)."""

    async def delete_job(self, job_id: str) -> bool:
        """Remove a job with its events, checkpoints and sources. False if unknown."""

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None: ...

    async def load_checkpoints(self, job_id: str) -> dict[int, AgentCheckpoint]: ...

    async def register_source(self, job_id: str, url: str, title: str) -> Source:
        """Give `url` a stable id (`S1`, `S2`, …) in the job's registry; same url, same id.
        A running job assigns ids in its own process (`workers.tools.sources`) and stores
        them with `commit_round`; this is for callers outside a job run."""

    async def get_sources(self, job_id: str) -> dict[str, Source]: ...

    async def request_cancel(self, job_id: str) -> None: ...

    async def is_cancelled(self, job_id: str) -> bool: ...

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """The jobs among `job_ids` whose cancel was requested, in one call however many: a
        worker's running jobs share one poll (`workers.cancel_watch`)."""

    # -- event log ----------------------------------------------------------------------------
    async def append_event(self, job_id: str, event: NewEvent) -> Event | None:
        """Append with the next `seq`. Returns None when `event.key` was already appended.
        The same step as `commit_round` with one event and nothing else."""

    async def commit_round(
        self,
        job_id: str,
        events: Sequence[NewEvent],
        checkpoint: AgentCheckpoint | None = None,
        sources: Sequence[Source] = (),
    ) -> list[Event]:
        """Store what an agent's round wrote in one atomic step (one round trip): its sources
        (upserted under the ids given), its events (appended in order with the next seqs; a
        keyed event already in the log is skipped, as `append_event` does) and its
        checkpoint (overwriting the agent's last). Returns the events appended. Safe to
        repeat with keyed events. Raises `SourceConflict`, having written nothing, when a
        given id or url is already the store's for another url or id."""

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]: ...

    async def wait_events(self, job_id: str, after: int, timeout: float) -> list[Event]:
        """Events with seq > `after`; blocks up to `timeout` seconds while there are none."""

    # -- queue ------------------------------------------------------------------------------
    async def enqueue(self, job_id: str) -> None:
        """Raise `QueueFull` when the queue holds `max_queued_jobs` already."""

    async def claim(self, worker_id: str, timeout: float) -> str | None:
        """Take the next job (or one whose worker's lease lapsed); None after `timeout`."""

    async def heartbeat(self, worker_id: str, job_id: str) -> bool:
        """Extend this worker's lease; False when the job is no longer this worker's."""

    async def release(self, job_id: str) -> None:
        """Hand a claimed, unfinished job back to the queue at once (worker draining)."""

    async def ack(self, job_id: str) -> None:
        """The job is finished; drop it from the queue."""

    async def queue_depth(self) -> int: ...

    # -- cache --------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> str | None: ...

    async def cache_set(self, key: str, value: str, ttl: int) -> None: ...

    async def try_lock(self, key: str, ttl: float) -> bool:
        """Take a short-lived lock (tool-call coalescing across processes)."""

    async def unlock(self, key: str) -> None: ...

    # -- uploaded files -------------------------------------------------------------------------
    async def put_file(self, record: FileRecord, data: bytes) -> None:
        """Store an upload; it and its bytes expire at `record.expires_at`."""

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file's metadata; None when unknown or expired."""

    async def read_file(self, file_id: str) -> bytes | None:
        """The file's bytes; None when unknown or expired."""

    async def delete_file(self, file_id: str) -> bool:
        """Remove the file and its bytes. False if unknown."""

    # -- metrics ----------------------------------------------------------------------------------
    async def job_counts(self) -> dict[JobStatus, int]:
        """Jobs in the store by status, kept as the store changes: cheap enough for every scrape."""

    # -- counters -------------------------------------------------------------------------------
    async def counter_add(self, key: str, amount: int, ttl: int) -> int:
        """Add `amount` (0 reads) to a shared integer counter and return its new value; a new
        counter starts at 0 and expires `ttl` seconds after it was made (tenant usage per day)."""
