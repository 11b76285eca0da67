"""What only the Redis backend promises: TTLs, several processes, outages and recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from redis.asyncio import Redis

from tests.backend_contract import BackendMaker, eventually, job
from tests.redis_server import RedisServer, redis_server, redis_servers  # noqa: F401  (fixtures)
from workers.backend.keys import QUEUE_GROUP, RedisKeys
from workers.backend.redis import RedisBackend
from workers.errors import BackendUnavailable
from workers.events import EventType, NewEvent
from workers.models import AgentCheckpoint, JobStatus

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TTL = 3600


@pytest.fixture
async def make(redis_server: RedisServer, anyio_backend: str) -> AsyncIterator[BackendMaker]:  # noqa: F811
    maker = BackendMaker("redis", redis_server.url)
    try:
        yield maker
    finally:
        await maker.aclose()


def redis_backend(
    make: BackendMaker,
    *,
    lease_seconds: float = 30.0,
    job_ttl_seconds: int = TTL,
    socket_timeout: float = 5.0,
) -> RedisBackend:
    backend = make(
        lease_seconds=lease_seconds, job_ttl_seconds=job_ttl_seconds, socket_timeout=socket_timeout
    )
    assert isinstance(backend, RedisBackend)
    return backend


def event(key: str | None = None) -> NewEvent:
    return NewEvent(type=EventType.round_started, key=key)


async def ttls(client: Redis, keys: list[str]) -> dict[str, int]:
    return {key: await client.pttl(key) for key in keys}


# -- TTLs ------------------------------------------------------------------------------------------------


async def test_a_finished_job_expires_with_all_its_keys(make: BackendMaker) -> None:
    backend = redis_backend(make, job_ttl_seconds=TTL)
    keys = RedisKeys(make.prefix)
    record, _ = await backend.create_job(job("job_001", key="idem"))
    await backend.append_event("job_001", event("job.queued"))
    await backend.save_checkpoint("job_001", AgentCheckpoint(agent=0))
    await backend.register_source("job_001", "https://a.example", "A")
    await backend.request_cancel("job_001")
    await backend.enqueue("job_001")
    assert await backend.claim("w1", 1) == "job_001"

    job_keys = [*keys.job_keys("job_001"), keys.idempotency("idem")]
    assert await backend.client.exists(*job_keys) == len(job_keys)
    lease = keys.lease("job_001")
    assert all(ttl == -1 for key, ttl in (await ttls(backend.client, job_keys)).items() if key != lease)

    record.status = JobStatus.cancelled
    await backend.save_job(record)
    for key, ttl in (await ttls(backend.client, job_keys)).items():
        assert 0 < ttl <= TTL * 1000, key

    # The terminal event lands after the record is saved: it keeps the TTL.
    await backend.append_event("job_001", event("job.terminal"))
    await backend.save_checkpoint("job_001", AgentCheckpoint(agent=1))
    for key in (keys.events("job_001"), keys.event_keys("job_001"), keys.checkpoints("job_001")):
        assert 0 < await backend.client.pttl(key) <= TTL * 1000, key


async def test_running_jobs_do_not_expire(make: BackendMaker) -> None:
    backend = redis_backend(make)
    keys = RedisKeys(make.prefix)
    record, _ = await backend.create_job(job("job_001"))
    await backend.append_event("job_001", event())
    record.status = JobStatus.running
    await backend.save_job(record)
    assert await backend.client.pttl(keys.job("job_001")) == -1
    assert await backend.client.pttl(keys.events("job_001")) == -1


async def test_events_for_a_job_that_does_not_exist_expire(make: BackendMaker) -> None:
    backend = redis_backend(make, job_ttl_seconds=TTL)
    await backend.append_event("job_gone", event())
    assert 0 < await backend.client.pttl(RedisKeys(make.prefix).events("job_gone")) <= TTL * 1000


async def test_listing_skips_and_forgets_expired_jobs(make: BackendMaker) -> None:
    backend = redis_backend(make, job_ttl_seconds=1)
    keys = RedisKeys(make.prefix)
    for i in range(3):
        await backend.create_job(job(f"job_{i:03d}"))
    done = await backend.get_job("job_001")
    assert done is not None
    done.status = JobStatus.succeeded
    await backend.save_job(done)

    async def expired() -> bool:
        return not await backend.client.exists(keys.job("job_001"))

    await eventually(expired)
    page, cursor = await backend.list_jobs(None, None, 2)
    assert [r.id for r in page] == ["job_002", "job_000"]
    assert cursor is None
    assert await backend.list_jobs(JobStatus.succeeded, None, 10) == ([], None)
    assert await backend.client.zrange(keys.jobs, 0, -1) == ["job_000", "job_002"]


# -- several processes -------------------------------------------------------------------------------------


async def test_two_processes_share_jobs_events_and_queue(make: BackendMaker) -> None:
    api, worker = redis_backend(make, lease_seconds=0.3), redis_backend(make, lease_seconds=0.3)
    await api.create_job(job("job_001"))
    await api.enqueue("job_001")
    assert await worker.claim("w1", 1) == "job_001"
    assert await worker.get_job("job_001") is not None

    got: list[int] = []
    waiting = anyio.Event()

    async def follow() -> None:
        waiting.set()
        got.extend(e.seq for e in await api.wait_events("job_001", after=0, timeout=60))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await waiting.wait()
            await worker.append_event("job_001", event())
    assert got == [1]

    # The worker process dies (no more heartbeats): a third process takes the job over.
    other = redis_backend(make, lease_seconds=0.3)
    claimed: list[str] = []

    async def reclaimed() -> bool:
        job_id = await other.claim("w2", 0.1)
        claimed.extend([job_id] if job_id else [])
        return bool(claimed)

    await eventually(reclaimed)
    assert claimed == ["job_001"]
    # The first worker's late heartbeat does not take it back.
    await worker.heartbeat("w1", "job_001")
    assert await other.client.get(other.keys.lease("job_001")) == "w2"


async def test_waiting_longer_than_the_socket_timeout(make: BackendMaker) -> None:
    # Blocking reads are cut into pieces shorter than the socket timeout.
    backend = redis_backend(make, socket_timeout=0.3)
    await backend.create_job(job("job_001"))
    with anyio.fail_after(10):
        assert await backend.wait_events("job_001", after=0, timeout=1.0) == []
        assert await backend.claim("w1", 1.0) is None


async def test_closing_forgets_its_idle_consumers(make: BackendMaker) -> None:
    backend, other = redis_backend(make), redis_backend(make)
    keys = RedisKeys(make.prefix)
    await backend.enqueue("a")
    await backend.enqueue("b")
    assert await backend.claim("w-done", 1) == "a"
    assert await backend.claim("w-busy", 1) == "b"
    await backend.ack("a")
    await backend.close()
    consumers = await other.client.xinfo_consumers(keys.queue, QUEUE_GROUP)
    # The busy one keeps its pending entry, so it stays; dropping it would lose the job.
    assert [c["name"] for c in consumers] == ["w-busy"]


# -- outages ---------------------------------------------------------------------------------------------


async def test_unavailable_while_down_and_everything_back_after_restart(
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=True)
    backend = RedisBackend(server.url, prefix="hr", lease_seconds=30, connect_timeout=1.0)
    try:
        await backend.create_job(job("job_001"))
        for _ in range(3):
            await backend.append_event("job_001", event())
        await backend.enqueue("job_001")
        await backend.enqueue("job_002")
        assert await backend.claim("w1", 1) == "job_001"

        server.kill()
        with anyio.fail_after(10):
            with pytest.raises(BackendUnavailable):
                await backend.ping()
            with pytest.raises(BackendUnavailable):
                await backend.get_job("job_001")
            with pytest.raises(BackendUnavailable):
                await backend.append_event("job_001", event())
            with pytest.raises(BackendUnavailable):
                await backend.claim("w1", 0.5)

        server.start()
        await backend.ping()
        record = await backend.get_job("job_001")
        assert record is not None
        assert [e.seq for e in await backend.read_events("job_001")] == [1, 2, 3]
        stored = await backend.append_event("job_001", event())
        assert stored is not None
        assert stored.seq == 4
        # The queue survived too: the claimed job is still pending, the other still waiting.
        assert await backend.queue_depth() == 1
        assert await backend.claim("w2", 1) == "job_002"
    finally:
        await backend.close()


async def test_a_frozen_server_times_out_instead_of_hanging(
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=False)
    backend = RedisBackend(server.url, prefix="hr", socket_timeout=0.5, connect_timeout=0.5)
    try:
        await backend.create_job(job("job_001"))
        server.freeze()
        try:
            with anyio.fail_after(10), pytest.raises(BackendUnavailable):
                await backend.get_job("job_001")
        finally:
            server.thaw()
        assert await backend.get_job("job_001") is not None
    finally:
        await backend.close()


async def test_the_queue_recovers_when_redis_lost_its_data(
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=False)
    backend = RedisBackend(server.url, prefix="hr", connect_timeout=1.0)
    try:
        await backend.enqueue("a")
        server.restart()  # no persistence: the stream and its consumer group are gone
        # A repeatable call first: it replaces the pooled connection the restart closed (this
        # test blocked the event loop meanwhile, so the pool could not notice by itself).
        await backend.ping()
        await backend.enqueue("b")
        assert await backend.claim("w1", 1) == "b"
        await backend.heartbeat("w1", "b")
        await backend.ack("b")
        assert await backend.queue_depth() == 0
    finally:
        await backend.close()
