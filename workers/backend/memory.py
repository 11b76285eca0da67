"""The in-memory backend: one process, nothing to install. State is lost when it exits."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import anyio

from workers.backend.base import check_sources
from workers.errors import QueueFull
from workers.events import Event, NewEvent
from workers.llm.limiter import Limiter
from workers.models import AgentCheckpoint, FileRecord, JobRecord, JobStatus, Source


class _JobLog:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.keys: set[str] = set()
        self.changed = anyio.Event()


class MemoryBackend:
    name = "memory"

    def __init__(
        self, *, max_queued_jobs: int = 1000, lease_seconds: float = 30.0, job_ttl_seconds: float = 7 * 86400
    ) -> None:
        self._max_queued = max_queued_jobs
        self._lease = lease_seconds
        self._job_ttl = job_ttl_seconds
        self._next_prune = 0.0
        self._jobs: dict[str, JobRecord] = {}
        self._idem: dict[str, str] = {}
        self._logs: dict[str, _JobLog] = {}
        # Kept as JSON, as the other backends store them: the caller's object stays its own, and
        # one dump per round costs a fraction of a deep copy.
        self._checkpoints: dict[str, dict[int, str]] = {}
        self._sources: dict[str, dict[str, Source]] = {}
        self._cancelled: set[str] = set()
        self._queue: deque[str] = deque()
        self._claimed: dict[str, tuple[str, float]] = {}
        self._queue_changed = anyio.Event()
        self._cache: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, float] = {}
        self._files: dict[str, tuple[FileRecord, bytes]] = {}
        # Jobs by status, kept as the store changes so a metrics scrape reads, never counts.
        self._status_counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self._counters: dict[str, tuple[int, float]] = {}

    async def open(self) -> None:
        return None

    def shared_limiter(self, *, patience: float) -> AbstractAsyncContextManager[Limiter] | None:
        return None  # one process: the client's own limiter already sees every call

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- job store ----------------------------------------------------------------------------
    def _prune(self) -> None:
        """Forget finished jobs past their TTL, so a long-lived server does not grow forever."""
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        expired = [
            r.id
            for r in self._jobs.values()
            if r.status.terminal and r.finished_at is not None and r.finished_at + self._job_ttl < now
        ]
        for job_id in expired:
            self._forget(job_id)

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        self._prune()
        key = record.idempotency_key
        if key is not None and key in self._idem:
            existing = self._jobs.get(self._idem[key])
            if existing is not None:
                return existing.model_copy(deep=True), False
        self._jobs[record.id] = record.model_copy(deep=True)
        self._status_counts[record.status] += 1
        self._logs[record.id] = _JobLog()
        if key is not None:
            self._idem[key] = record.id
        return record, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        record = self._jobs.get(job_id)
        return record.model_copy(deep=True) if record else None

    async def save_job(self, record: JobRecord) -> None:
        old = self._jobs.get(record.id)
        if old is not None:
            self._status_counts[old.status] -= 1
            self._status_counts[record.status] += 1
            self._jobs[record.id] = record.model_copy(deep=True)

    async def list_jobs(
        self, status: JobStatus | None, cursor: str | None, limit: int, owner: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        ids = sorted(self._jobs, reverse=True)
        if cursor is not None:
            ids = [i for i in ids if i < cursor]

        def wanted(record: JobRecord) -> bool:
            return (status is None or record.status == status) and (owner is None or record.owner == owner)

        page: list[JobRecord] = []
        for job_id in ids:
            record = self._jobs[job_id]
            if wanted(record):
                page.append(record.model_copy(deep=True))
                if len(page) == limit:
                    break
        if not page:
            return [], None
        more = len(page) == limit and any(wanted(self._jobs[i]) for i in ids if i < page[-1].id)
        return page, (page[-1].id if more else None)

    async def delete_job(self, job_id: str) -> bool:
        return self._forget(job_id)

    def _forget(self, job_id: str) -> bool:
        record = self._jobs.pop(job_id, None)
        if record is None:
            return False
        self._status_counts[record.status] -= 1
        if record.idempotency_key is not None:
            self._idem.pop(record.idempotency_key, None)
        log = self._logs.pop(job_id, None)
        if log is not None:
            log.changed.set()
        self._checkpoints.pop(job_id, None)
        self._sources.pop(job_id, None)
        self._cancelled.discard(job_id)
        return True

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None:
        self._checkpoints.setdefault(job_id, {})[checkpoint.agent] = checkpoint.model_dump_json()

    async def load_checkpoints(self, job_id: str) -> dict[int, AgentCheckpoint]:
        return {
            a: AgentCheckpoint.model_validate_json(raw)
            for a, raw in self._checkpoints.get(job_id, {}).items()
        }

    async def register_source(self, job_id: str, url: str, title: str) -> Source:
        registry = self._sources.setdefault(job_id, {})
        for source in registry.values():
            if source.url == url:
                return source
        source = Source(id=f"S{len(registry) + 1}", url=url, title=title)
        registry[source.id] = source
        return source

    async def get_sources(self, job_id: str) -> dict[str, Source]:
        return dict(self._sources.get(job_id, {}))

    async def request_cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)

    async def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return self._cancelled.intersection(job_ids)

    # -- event log ----------------------------------------------------------------------------
    async def append_event(self, job_id: str, event: NewEvent) -> Event | None:
        appended = await self.commit_round(job_id, [event])
        return appended[0] if appended else None

    async def commit_round(
        self,
        job_id: str,
        events: Sequence[NewEvent],
        checkpoint: AgentCheckpoint | None = None,
        sources: Sequence[Source] = (),
    ) -> list[Event]:
        registry = self._sources.setdefault(job_id, {})
        check_sources(registry.values(), sources)
        for source in sources:
            registry.setdefault(source.id, source.model_copy())
        log = self._logs.setdefault(job_id, _JobLog())
        appended: list[Event] = []
        for event in events:
            if event.key is not None:
                if event.key in log.keys:
                    continue
                log.keys.add(event.key)
            stored = event.stamped(job_id)
            stored.seq = len(log.events) + 1
            log.events.append(stored)
            appended.append(stored)
        if checkpoint is not None:
            await self.save_checkpoint(job_id, checkpoint)
        if appended:
            changed, log.changed = log.changed, anyio.Event()
            changed.set()
        return appended

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        log = self._logs.get(job_id)
        if log is None:
            return []
        return log.events[max(after, 0) : max(after, 0) + limit]

    async def wait_events(self, job_id: str, after: int, timeout: float) -> list[Event]:
        log = self._logs.get(job_id)
        if log is None:
            return []
        if len(log.events) <= after:
            changed = log.changed
            with anyio.move_on_after(timeout):
                await changed.wait()
        return await self.read_events(job_id, after)

    # -- queue ----------------------------------------------------------------------------------
    async def enqueue(self, job_id: str) -> None:
        if len(self._queue) >= self._max_queued:
            raise QueueFull(f"the queue holds {len(self._queue)} jobs, its limit")
        self._queue.append(job_id)
        self._wake_queue()

    def _wake_queue(self) -> None:
        changed, self._queue_changed = self._queue_changed, anyio.Event()
        changed.set()

    async def claim(self, worker_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            for job_id, (_, lease_end) in list(self._claimed.items()):
                if lease_end < now:
                    self._claimed[job_id] = (worker_id, now + self._lease)
                    return job_id
            if self._queue:
                job_id = self._queue.popleft()
                self._claimed[job_id] = (worker_id, now + self._lease)
                return job_id
            remaining = deadline - now
            if remaining <= 0:
                return None
            changed = self._queue_changed
            with anyio.move_on_after(min(remaining, self._lease)):
                await changed.wait()

    async def heartbeat(self, worker_id: str, job_id: str) -> bool:
        claim = self._claimed.get(job_id)
        if claim is None or claim[0] != worker_id:
            return False
        self._claimed[job_id] = (worker_id, time.monotonic() + self._lease)
        return True

    async def release(self, job_id: str) -> None:
        if self._claimed.pop(job_id, None) is not None:
            self._queue.appendleft(job_id)
            self._wake_queue()

    async def ack(self, job_id: str) -> None:
        self._claimed.pop(job_id, None)

    async def queue_depth(self) -> int:
        return len(self._queue)

    # -- cache ------------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> str | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        value, expires = hit
        if expires and expires < time.monotonic():
            del self._cache[key]
            return None
        return value

    async def cache_set(self, key: str, value: str, ttl: int) -> None:
        self._cache[key] = (value, time.monotonic() + ttl if ttl else 0.0)

    async def try_lock(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._locks.get(key, 0.0) > now:
            return False
        self._locks[key] = now + ttl
        return True

    async def unlock(self, key: str) -> None:
        self._locks.pop(key, None)

    # -- uploaded files -------------------------------------------------------------------------
    def _live_file(self, file_id: str) -> tuple[FileRecord, bytes] | None:
        now = time.time()
        for expired in [k for k, (r, _) in self._files.items() if r.expires_at <= now]:
            del self._files[expired]
        return self._files.get(file_id)

    async def put_file(self, record: FileRecord, data: bytes) -> None:
        self._live_file(record.id)
        self._files[record.id] = (record.model_copy(deep=True), bytes(data))

    async def get_file(self, file_id: str) -> FileRecord | None:
        found = self._live_file(file_id)
        return found[0].model_copy(deep=True) if found else None

    async def read_file(self, file_id: str) -> bytes | None:
        found = self._live_file(file_id)
        return found[1] if found else None

    async def delete_file(self, file_id: str) -> bool:
        return self._files.pop(file_id, None) is not None

    # -- metrics --------------------------------------------------------------------------------
    async def job_counts(self) -> dict[JobStatus, int]:
        return dict(self._status_counts)

    # -- counters ---------------------------------------------------------------------------------
    async def counter_add(self, key: str, amount: int, ttl: int) -> int:
        now = time.monotonic()
        value, expires = self._counters.get(key, (0, 0.0))
        if expires and expires < now:
            value, expires = 0, 0.0
        if not expires:
            expires = now + max(ttl, 1)
        value += amount
        self._counters[key] = (value, expires)
        return value
