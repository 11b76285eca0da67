"""What only the sqlite backend promises beyond the contract suite: everything is still there
after the file is closed and opened again, and finished jobs go once their TTL has passed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.backend_contract import eventually, job
from workers.backend import backend_location, make_backend
from workers.backend.sqlite import SQLiteBackend
from workers.events import EventType, NewEvent
from workers.models import AgentCheckpoint, JobStatus
from workers.settings import Settings

pytestmark = pytest.mark.anyio


async def test_everything_survives_a_reopen(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "state" / "heavyresearch.sqlite"
    first = SQLiteBackend(path)
    await first.open()
    await first.create_job(job("job_001", key="idem"))
    await first.append_event("job_001", NewEvent(type=EventType.job_queued, key="job.queued"))
    await first.save_checkpoint("job_001", AgentCheckpoint(agent=0, round=2, report="r"))
    await first.register_source("job_001", "https://a.example", "A")
    await first.request_cancel("job_001")
    await first.enqueue("job_001")
    await first.cache_set("k", "v", 0)
    await first.close()

    again = SQLiteBackend(path)
    try:
        assert (await again.get_job("job_001")) is not None
        assert [e.type for e in await again.read_events("job_001")] == [EventType.job_queued]
        assert (await again.load_checkpoints("job_001"))[0].report == "r"
        assert list(await again.get_sources("job_001")) == ["S1"]
        assert await again.is_cancelled("job_001")
        assert await again.queue_depth() == 1
        assert await again.cache_get("k") == "v"
        assert (
            await again.append_event("job_001", NewEvent(type=EventType.job_queued, key="job.queued")) is None
        )
        _, created = await again.create_job(job("job_002", key="idem"))
        assert not created
    finally:
        await again.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_a_finished_job_goes_after_its_ttl_with_all_it_owns(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    backend = SQLiteBackend(path, job_ttl_seconds=0.3)
    try:
        record, _ = await backend.create_job(job("job_001", key="idem"))
        await backend.append_event("job_001", NewEvent(type=EventType.job_queued))
        await backend.save_checkpoint("job_001", AgentCheckpoint(agent=0, round=1))
        record.status = JobStatus.succeeded
        await backend.save_job(record)
        assert await backend.get_job("job_001") is not None  # kept until the TTL

        async def gone() -> bool:
            return await backend.get_job("job_001") is None

        await eventually(gone)
        assert await backend.list_jobs(None, None, 10) == ([], None)
        # Its idempotency key is free again; taking it removes the expired job's rows.
        _, created = await backend.create_job(job("job_002", key="idem"))
        assert created
        assert await backend.read_events("job_001") == []
        assert await backend.load_checkpoints("job_001") == {}
    finally:
        await backend.close()


async def test_sqlite_in_the_user_data_folder_is_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, anyio_backend: str
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = Settings()
    assert settings.backend == "sqlite"
    assert settings.sqlite.resolved_path() == tmp_path / "data" / "heavyresearch" / "heavyresearch.sqlite"
    backend = make_backend(settings)
    assert isinstance(backend, SQLiteBackend)
    assert backend_location(backend) == str(settings.sqlite.resolved_path())
    await backend.close()
    monkeypatch.setenv("HR_SQLITE__PATH", str(tmp_path / "elsewhere.sqlite"))
    assert Settings().sqlite.resolved_path() == tmp_path / "elsewhere.sqlite"
