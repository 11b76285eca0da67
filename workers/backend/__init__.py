"""Backends: pick one from settings."""

from __future__ import annotations

from workers.backend.base import Backend, new_job_id
from workers.backend.memory import MemoryBackend
from workers.settings import Settings


def make_backend(settings: Settings) -> Backend:
    if settings.backend == "redis":
        from workers.backend.redis import RedisBackend

        return RedisBackend.from_settings(settings)
    if settings.backend == "sqlite":
        from workers.backend.sqlite import SQLiteBackend

        return SQLiteBackend.from_settings(settings)
    return MemoryBackend(
        max_queued_jobs=settings.server.max_queued_jobs,
        lease_seconds=settings.worker.lease_seconds,
        job_ttl_seconds=settings.job_ttl_seconds,
    )


def backend_location(backend: Backend) -> str | None:
    """Where the backend keeps its state (a file path, a redacted URL); None in memory."""
    where = getattr(backend, "where", None)
    return where if isinstance(where, str) else None


__all__ = ["Backend", "MemoryBackend", "backend_location", "make_backend", "new_job_id"]
