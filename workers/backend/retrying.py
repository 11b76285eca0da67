"""A backend wrapper for the engine: rides out short backend outages instead of failing jobs.

Every call the engine makes while running a job is safe to repeat (events are keyed, sources
are registered by url or upserted under their id, saves overwrite), so while Redis restarts
a worker waits and retries, with backoff, up to `patience` seconds. API processes do not use this:
they answer 503 at once instead of hanging a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import ParamSpec, TypeVar

import anyio

from workers.backend.base import Backend
from workers.errors import BackendUnavailable
from workers.events import Event, NewEvent
from workers.llm.limiter import Limiter
from workers.models import AgentCheckpoint, FileRecord, JobRecord, JobStatus, Source

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class RetryingBackend:
    def __init__(self, inner: Backend, *, patience: float = 120.0, max_delay: float = 2.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.patience = patience
        self.max_delay = max_delay

    async def _retry(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        give_up = time.monotonic() + self.patience
        delay = 0.05
        while True:
            try:
                return await fn(*args, **kwargs)
            except BackendUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("backend unavailable (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    async def open(self) -> None:
        await self.inner.open()

    def shared_limiter(self, *, patience: float) -> AbstractAsyncContextManager[Limiter] | None:
        return self.inner.shared_limiter(patience=patience)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        return await self._retry(self.inner.create_job, record)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._retry(self.inner.get_job, job_id)

    async def save_job(self, record: JobRecord) -> None:
        await self._retry(self.inner.save_job, record)

    async def list_jobs(
        self, status: JobStatus | None, cursor: str | None, limit: int, owner: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        return await self._retry(self.inner.list_jobs, status, cursor, limit, owner)

    async def delete_job(self, job_id: str) -> bool:
        return await self._retry(self.inner.delete_job, job_id)

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None:
        await self._retry(self.inner.save_checkpoint, job_id, checkpoint)

    async def load_checkpoints(self, job_id: str) -> dict[int, AgentCheckpoint]:
        return await self._retry(self.inner.load_checkpoints, job_id)

    async def register_source(self, job_id: str, url: str, title: str) -> Source:
        return await self._retry(self.inner.register_source, job_id, url, title)

    async def get_sources(self, job_id: str) -> dict[str, Source]:
        return await self._retry(self.inner.get_sources, job_id)

    async def request_cancel(self, job_id: str) -> None:
        await self._retry(self.inner.request_cancel, job_id)

    async def is_cancelled(self, job_id: str) -> bool:
        return await self._retry(self.inner.is_cancelled, job_id)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return await self._retry(self.inner.cancel_requested, job_ids)

    async def append_event(self, job_id: str, event: NewEvent) -> Event | None:
        return await self._retry(self.inner.append_event, job_id, event)

    async def commit_round(
        self,
        job_id: str,
        events: Sequence[NewEvent],
        checkpoint: AgentCheckpoint | None = None,
        sources: Sequence[Source] = (),
    ) -> list[Event]:
        return await self._retry(self.inner.commit_round, job_id, events, checkpoint, sources)

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return await self._retry(self.inner.read_events, job_id, after, limit)

    async def wait_events(self, job_id: str, after: int, timeout: float) -> list[Event]:
        return await self._retry(self.inner.wait_events, job_id, after, timeout)

    async def enqueue(self, job_id: str) -> None:
        await self._retry(self.inner.enqueue, job_id)

    async def claim(self, worker_id: str, timeout: float) -> str | None:
        return await self._retry(self.inner.claim, worker_id, timeout)

    async def heartbeat(self, worker_id: str, job_id: str) -> bool:
        return await self._retry(self.inner.heartbeat, worker_id, job_id)

    async def release(self, job_id: str) -> None:
        await self._retry(self.inner.release, job_id)

    async def ack(self, job_id: str) -> None:
        await self._retry(self.inner.ack, job_id)

    async def queue_depth(self) -> int:
        return await self._retry(self.inner.queue_depth)

    async def cache_get(self, key: str) -> str | None:
        return await self._retry(self.inner.cache_get, key)

    async def cache_set(self, key: str, value: str, ttl: int) -> None:
        await self._retry(self.inner.cache_set, key, value, ttl)

    async def try_lock(self, key: str, ttl: float) -> bool:
        return await self._retry(self.inner.try_lock, key, ttl)

    async def unlock(self, key: str) -> None:
        await self._retry(self.inner.unlock, key)

    async def put_file(self, record: FileRecord, data: bytes) -> None:
        await self._retry(self.inner.put_file, record, data)

    async def get_file(self, file_id: str) -> FileRecord | None:
        return await self._retry(self.inner.get_file, file_id)

    async def read_file(self, file_id: str) -> bytes | None:
        return await self._retry(self.inner.read_file, file_id)

    async def delete_file(self, file_id: str) -> bool:
        return await self._retry(self.inner.delete_file, file_id)

    async def job_counts(self) -> dict[JobStatus, int]:
        return await self._retry(self.inner.job_counts)

    async def counter_add(self, key: str, amount: int, ttl: int) -> int:
        if amount == 0:
            return await self._retry(self.inner.counter_add, key, amount, ttl)
        # An increment is not safe to repeat after a lost reply: it could count twice.
        return await self.inner.counter_add(key, amount, ttl)
