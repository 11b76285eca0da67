"""Backends: pick one from settings."""

from __future__ import annotations

from workers.backend.base import Backend, new_job_id
from workers.backend.memory import MemoryBackend
from workers.settings import Settings


def make_backend(settings: Settings) -> Backend:
    if settings.backend == "redis":
        from workers.backend.redis import RedisBackend

        return RedisBackend.from_settings(settings)
    return MemoryBackend(
        max_queued_jobs=settings.server.max_queued_jobs,
        lease_seconds=settings.worker.lease_seconds,
        job_ttl_seconds=settings.job_ttl_seconds,
    )


__all__ = ["Backend", "MemoryBackend", "make_backend", "new_job_id"]
