"""Job counts by status, kept by every backend as the store changes (what `/metrics` reads)."""

from __future__ import annotations

import pytest

from tests.backend_contract import BackendMaker, job
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from tests.test_backend_contract import make  # noqa: F401  (fixture: memory, sqlite, redis)
from workers.backend.base import new_job_id
from workers.models import JobStatus

pytestmark = pytest.mark.anyio


def nonzero(counts: dict[JobStatus, int]) -> dict[str, int]:
    return {status.value: n for status, n in counts.items() if n}


async def test_counts_follow_creates_saves_and_deletes(make: BackendMaker) -> None:  # noqa: F811
    backend = make()
    assert nonzero(await backend.job_counts()) == {}
    ids = [new_job_id() for _ in range(3)]
    for job_id in ids:
        await backend.create_job(job(job_id))
    assert nonzero(await backend.job_counts()) == {"queued": 3}

    running = job(ids[0], status=JobStatus.running)
    await backend.save_job(running)
    await backend.save_job(running)  # a save that keeps the status counts once
    await backend.save_job(job(ids[1], status=JobStatus.succeeded))
    assert nonzero(await backend.job_counts()) == {"queued": 1, "running": 1, "succeeded": 1}

    await backend.save_job(job(ids[0], status=JobStatus.failed))
    assert await backend.delete_job(ids[1])
    assert not await backend.delete_job(ids[1])
    assert nonzero(await backend.job_counts()) == {"queued": 1, "failed": 1}


async def test_an_idempotent_replay_is_not_counted_again(make: BackendMaker) -> None:  # noqa: F811
    backend = make()
    await backend.create_job(job(new_job_id(), key="k"))
    _, created = await backend.create_job(job(new_job_id(), key="k"))
    assert not created
    assert nonzero(await backend.job_counts()) == {"queued": 1}


async def test_counts_are_shared_by_processes_on_one_store(make: BackendMaker) -> None:  # noqa: F811
    if make.kind == "memory":
        pytest.skip("the memory backend lives in one process")
    one, two = make(), make()
    job_id = new_job_id()
    await one.create_job(job(job_id))
    await two.save_job(job(job_id, status=JobStatus.cancelled))
    assert nonzero(await one.job_counts()) == {"cancelled": 1}
    assert nonzero(await two.job_counts()) == {"cancelled": 1}
