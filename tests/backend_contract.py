"""What the backend contract suite runs against: one factory per backend kind.

`BackendMaker` builds backends of one kind. For redis, every backend made in one test shares
a key prefix of its own, so two instances behave like two processes on one Redis, and tests
on the shared session server never see each other's keys. For sqlite, every backend made in
one test opens the same file in a temporary folder of its own (two processes on one box).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio

from workers.backend import Backend, MemoryBackend
from workers.backend.redis import RedisBackend
from workers.backend.sqlite import SQLiteBackend
from workers.models import JobRecord, JobStatus, ResearchRequest

Kind = Literal["memory", "redis", "sqlite"]


class BackendMaker:
    def __init__(self, kind: Kind, redis_url: str | None = None) -> None:
        if kind == "redis" and redis_url is None:
            raise ValueError("the redis backend needs a server URL")
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self._made: list[Backend] = []
        self._folder: Path | None = None

    @property
    def sqlite_path(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="hr-sqlite-"))
        return self._folder / "heavyresearch.sqlite"

    def __call__(
        self,
        *,
        max_queued_jobs: int = 1000,
        lease_seconds: float = 30.0,
        job_ttl_seconds: int = 7 * 86400,
        socket_timeout: float = 5.0,
    ) -> Backend:
        backend: Backend
        if self.kind == "memory":
            backend = MemoryBackend(max_queued_jobs=max_queued_jobs, lease_seconds=lease_seconds)
        elif self.kind == "sqlite":
            backend = SQLiteBackend(
                self.sqlite_path,
                max_queued_jobs=max_queued_jobs,
                lease_seconds=lease_seconds,
                job_ttl_seconds=job_ttl_seconds,
                busy_timeout=socket_timeout,
                poll_interval=0.02,
            )
        else:
            assert self.redis_url is not None
            backend = RedisBackend(
                self.redis_url,
                prefix=self.prefix,
                max_queued_jobs=max_queued_jobs,
                lease_seconds=lease_seconds,
                job_ttl_seconds=job_ttl_seconds,
                socket_timeout=socket_timeout,
                connect_timeout=1.0,
            )
        self._made.append(backend)
        return backend

    async def aclose(self) -> None:
        for backend in self._made:
            await backend.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def job(
    job_id: str, *, status: JobStatus = JobStatus.queued, key: str | None = None, query: str = "q"
) -> JobRecord:
    return JobRecord(
        id=job_id,
        status=status,
        request=ResearchRequest(query=query),
        idempotency_key=key,
        request_hash=query,
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.02
) -> None:
    """Poll `check` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await anyio.sleep(every)
