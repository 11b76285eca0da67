"""The backend contract: every test runs against the memory backend, the sqlite backend (a file in
a temporary folder) and a real redis-server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import pytest

from tests.backend_contract import BackendMaker, eventually, job
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from workers.backend import Backend
from workers.errors import QueueFull, SourceConflict
from workers.events import Event, EventType, NewEvent
from workers.models import AgentCheckpoint, AgentStatus, JobStatus, Source

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[BackendMaker]:
    if request.param == "redis":
        maker = BackendMaker("redis", request.getfixturevalue("redis_server").url)
    else:
        maker = BackendMaker(request.param)
    try:
        yield maker
    finally:
        await maker.aclose()


@pytest.fixture
def backend(make: BackendMaker) -> Backend:
    return make()


def new(type_: EventType = EventType.round_started, *, key: str | None = None, **data: object) -> NewEvent:
    return NewEvent(type=type_, data=dict(data), key=key)


# -- job store ---------------------------------------------------------------------------------------


async def test_create_get_save(backend: Backend) -> None:
    record, created = await backend.create_job(job("job_001"))
    assert created
    assert record.id == "job_001"
    assert await backend.get_job("job_001") == record
    assert await backend.get_job("job_404") is None

    record.status = JobStatus.running
    record.started_at = 123.0
    await backend.save_job(record)
    stored = await backend.get_job("job_001")
    assert stored is not None
    assert stored.status == JobStatus.running
    assert stored.started_at == 123.0


async def test_save_of_an_unknown_job_is_a_no_op(backend: Backend) -> None:
    await backend.save_job(job("job_404", status=JobStatus.running))
    assert await backend.get_job("job_404") is None
    assert await backend.list_jobs(None, None, 10) == ([], None)


async def test_list_is_newest_first_with_cursor_pages(backend: Backend) -> None:
    for i in range(7):
        await backend.create_job(job(f"job_{i:03d}"))

    ids: list[list[str]] = []
    cursor: str | None = None
    while True:
        page, cursor = await backend.list_jobs(None, cursor, 3)
        ids.append([r.id for r in page])
        if cursor is None:
            break
    assert ids == [["job_006", "job_005", "job_004"], ["job_003", "job_002", "job_001"], ["job_000"]]


async def test_list_gives_no_cursor_after_an_exactly_full_last_page(backend: Backend) -> None:
    for i in range(6):
        await backend.create_job(job(f"job_{i:03d}"))
    page, cursor = await backend.list_jobs(None, None, 3)
    assert cursor == "job_003"
    page, cursor = await backend.list_jobs(None, cursor, 3)
    assert [r.id for r in page] == ["job_002", "job_001", "job_000"]
    assert cursor is None


async def test_list_filters_by_status_and_follows_status_changes(backend: Backend) -> None:
    for i in range(6):
        status = JobStatus.succeeded if i % 2 else JobStatus.queued
        await backend.create_job(job(f"job_{i:03d}", status=status))

    page, cursor = await backend.list_jobs(JobStatus.succeeded, None, 2)
    assert [r.id for r in page] == ["job_005", "job_003"]
    assert cursor == "job_003"
    page, cursor = await backend.list_jobs(JobStatus.succeeded, cursor, 2)
    assert [r.id for r in page] == ["job_001"]
    assert cursor is None

    moved = await backend.get_job("job_004")
    assert moved is not None
    moved.status = JobStatus.running
    await backend.save_job(moved)
    running, _ = await backend.list_jobs(JobStatus.running, None, 10)
    queued, _ = await backend.list_jobs(JobStatus.queued, None, 10)
    assert [r.id for r in running] == ["job_004"]
    assert [r.id for r in queued] == ["job_002", "job_000"]
    assert (await backend.list_jobs(JobStatus.failed, None, 10)) == ([], None)


async def test_delete_removes_the_job_and_everything_it_owns(backend: Backend) -> None:
    await backend.create_job(job("job_001", key="idem-1"))
    await backend.create_job(job("job_002"))
    await backend.append_event("job_001", new())
    await backend.save_checkpoint("job_001", AgentCheckpoint(agent=0, round=2))
    await backend.register_source("job_001", "https://a.example", "A")
    await backend.request_cancel("job_001")

    assert await backend.delete_job("job_001") is True
    assert await backend.get_job("job_001") is None
    assert await backend.read_events("job_001") == []
    assert await backend.load_checkpoints("job_001") == {}
    assert await backend.get_sources("job_001") == {}
    assert await backend.is_cancelled("job_001") is False
    page, _ = await backend.list_jobs(None, None, 10)
    assert [r.id for r in page] == ["job_002"]
    assert await backend.delete_job("job_001") is False

    # The idempotency key was freed with the job.
    _, created = await backend.create_job(job("job_003", key="idem-1"))
    assert created


async def test_idempotency_key_returns_the_first_job(backend: Backend) -> None:
    _, created = await backend.create_job(job("job_001", key="k", query="first"))
    assert created
    again, created = await backend.create_job(job("job_002", key="k", query="second"))
    assert not created
    assert again.id == "job_001"
    assert again.request_hash == "first"
    assert await backend.get_job("job_002") is None

    _, created = await backend.create_job(job("job_003", key="other"))
    assert created


async def test_concurrent_creates_with_one_key_make_one_job(backend: Backend) -> None:
    results: list[tuple[str, bool]] = []

    async def create(i: int) -> None:
        record, created = await backend.create_job(job(f"job_{i:03d}", key="same"))
        results.append((record.id, created))

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(create, i)
    assert sum(created for _, created in results) == 1
    assert len({job_id for job_id, _ in results}) == 1


async def test_checkpoints_keep_the_latest_per_agent(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    assert await backend.load_checkpoints("job_001") == {}
    await backend.save_checkpoint("job_001", AgentCheckpoint(agent=1, round=1, report="r1"))
    await backend.save_checkpoint("job_001", AgentCheckpoint(agent=0, round=1))
    await backend.save_checkpoint(
        "job_001", AgentCheckpoint(agent=1, round=2, report="r2", status=AgentStatus.running)
    )
    checkpoints = await backend.load_checkpoints("job_001")
    assert set(checkpoints) == {0, 1}
    assert checkpoints[1].round == 2
    assert checkpoints[1].report == "r2"
    assert checkpoints[1].status == AgentStatus.running
    assert await backend.load_checkpoints("job_002") == {}


async def test_source_registry_gives_stable_ids(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    a = await backend.register_source("job_001", "https://a.example/x", "A")
    b = await backend.register_source("job_001", "https://b.example/y", "B")
    again = await backend.register_source("job_001", "https://a.example/x", "A, retitled")
    assert (a.id, b.id) == ("S1", "S2")
    assert again == a
    assert again.title == "A"
    sources = await backend.get_sources("job_001")
    assert list(sources) == ["S1", "S2"]
    assert sources["S2"].url == "https://b.example/y"
    # Registries are per job.
    other = await backend.register_source("job_002", "https://b.example/y", "B")
    assert other.id == "S1"


async def test_concurrent_source_registration_gives_unique_ids(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    urls = [f"https://example.org/{i}" for i in range(20)]
    seen: dict[str, set[str]] = {url: set() for url in urls}

    async def register(seed: int) -> None:
        order = urls[:]
        random.Random(seed).shuffle(order)
        for url in order:
            source = await backend.register_source("job_001", url, url)
            seen[url].add(source.id)

    async with anyio.create_task_group() as tg:
        for seed in range(8):
            tg.start_soon(register, seed)

    assert all(len(ids) == 1 for ids in seen.values())
    assert sorted(next(iter(ids)) for ids in seen.values()) == sorted(f"S{i}" for i in range(1, 21))
    sources = await backend.get_sources("job_001")
    assert {s.url: s.id for s in sources.values()} == {url: next(iter(ids)) for url, ids in seen.items()}


async def test_commit_round_stores_sources_events_and_checkpoint_together(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.append_event("job_001", new(key="a0.r1.round.started"))
    sources = [
        Source(id="S1", url="https://a.example", title="A"),
        Source(id="S2", url="https://b.example", title="B"),
    ]
    events = [
        new(EventType.tool_called, key="a0.r1.tool.called", name="search"),
        new(EventType.tool_result, key="a0.r1.tool.result", sources=["S1", "S2"]),
        new(EventType.round_started, key="a0.r2.round.started"),
    ]
    appended = await backend.commit_round("job_001", events, AgentCheckpoint(agent=0, round=1), sources)
    assert [e.seq for e in appended] == [2, 3, 4]
    assert [e.type for e in appended] == [
        EventType.tool_called,
        EventType.tool_result,
        EventType.round_started,
    ]
    assert [e.seq for e in await backend.read_events("job_001")] == [1, 2, 3, 4]
    assert (await backend.load_checkpoints("job_001"))[0].round == 1
    assert {s.id: s.url for s in (await backend.get_sources("job_001")).values()} == {
        "S1": "https://a.example",
        "S2": "https://b.example",
    }
    # Ids given by the job's process continue in the registry other callers use.
    assert (await backend.register_source("job_001", "https://c.example", "C")).id == "S3"


async def test_a_repeated_commit_changes_nothing(backend: Backend) -> None:
    """A retry after a lost reply: keyed events are skipped, sources and checkpoint rewritten."""
    await backend.create_job(job("job_001"))
    sources = [Source(id="S1", url="https://a.example", title="A")]
    events = [
        new(EventType.usage, key="a1.r1.usage"),
        new(EventType.round_started, key="a1.r2.round.started"),
    ]
    checkpoint = AgentCheckpoint(agent=1, round=1, report="r1")
    first = await backend.commit_round("job_001", events, checkpoint, sources)
    again = await backend.commit_round("job_001", events, checkpoint, sources)
    assert len(first) == 2
    assert again == []
    assert [e.seq for e in await backend.read_events("job_001")] == [1, 2]
    assert list(await backend.get_sources("job_001")) == ["S1"]
    assert (await backend.load_checkpoints("job_001"))[1].report == "r1"


async def test_a_commit_with_a_source_id_another_url_holds_writes_nothing(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.commit_round("job_001", [], None, [Source(id="S1", url="https://a.example", title="A")])
    clash = [Source(id="S1", url="https://other.example", title="O")]
    with pytest.raises(SourceConflict):
        await backend.commit_round(
            "job_001", [new(key="a0.r1.round.started")], AgentCheckpoint(agent=0, round=1), clash
        )
    assert await backend.read_events("job_001") == []
    assert await backend.load_checkpoints("job_001") == {}
    assert {s.url for s in (await backend.get_sources("job_001")).values()} == {"https://a.example"}


async def test_concurrent_commits_interleave_whole_and_gapless(backend: Backend) -> None:
    await backend.create_job(job("job_001"))

    async def agent(index: int) -> None:
        for round_ in range(1, 11):
            events = [
                new(EventType.usage, key=f"a{index}.r{round_}.{kind}", agent=index, round=round_)
                for kind in "abcde"
            ]
            await backend.commit_round("job_001", events, AgentCheckpoint(agent=index, round=round_))

    async with anyio.create_task_group() as tg:
        for index in range(6):
            tg.start_soon(agent, index)
    stored = await backend.read_events("job_001", limit=1000)
    assert [e.seq for e in stored] == list(range(1, 301))
    # A round's events are contiguous: nothing of another commit lands between them.
    for start in range(0, 300, 5):
        assert len({e.data["agent"] for e in stored[start : start + 5]}) == 1
    assert {i: cp.round for i, cp in (await backend.load_checkpoints("job_001")).items()} == {
        i: 10 for i in range(6)
    }


async def test_cancel_flags(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.create_job(job("job_002"))
    assert await backend.is_cancelled("job_001") is False
    await backend.request_cancel("job_001")
    await backend.request_cancel("job_001")
    assert await backend.is_cancelled("job_001") is True
    assert await backend.is_cancelled("job_002") is False


async def test_cancel_requests_of_many_jobs_in_one_call(backend: Backend) -> None:
    ids = [f"job_{n:04d}" for n in range(1200)]  # more than one SQLite statement's parameters
    for job_id in ids:
        await backend.create_job(job(job_id))
    assert await backend.cancel_requested(ids) == set()
    assert await backend.cancel_requested([]) == set()
    for job_id in (ids[0], ids[700], ids[-1]):
        await backend.request_cancel(job_id)
    assert await backend.cancel_requested(ids) == {ids[0], ids[700], ids[-1]}
    assert await backend.cancel_requested([ids[1], ids[700], "job_unknown"]) == {ids[700]}


# -- event log ---------------------------------------------------------------------------------------


async def test_events_round_trip(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    stored = await backend.append_event(
        "job_001",
        NewEvent(type=EventType.tool_called, agent=2, round=3, data={"name": "search", "q": ["x", "ü"]}),
    )
    assert stored is not None
    assert (stored.job_id, stored.seq, stored.type) == ("job_001", 1, EventType.tool_called)
    [read] = await backend.read_events("job_001")
    assert read == stored
    assert read.agent == 2
    assert read.round == 3
    assert read.data == {"name": "search", "q": ["x", "ü"]}
    assert read.ts > 0


async def test_concurrent_appends_get_gapless_seqs_and_keys_dedupe(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    appended: list[Event] = []
    duplicates = 0

    async def writer(w: int) -> None:
        nonlocal duplicates
        for i in range(50):
            # Half keyed with keys every writer shares (a replayed round), half unique.
            key = f"round-{i}" if i % 2 == 0 else None
            stored = await backend.append_event("job_001", new(writer=w, i=i, key=key))
            if stored is None:
                duplicates += 1
            else:
                appended.append(stored)

    async with anyio.create_task_group() as tg:
        for w in range(8):
            tg.start_soon(writer, w)

    assert len(appended) == 25 + 8 * 25
    assert duplicates == 7 * 25
    assert sorted(e.seq for e in appended) == list(range(1, len(appended) + 1))
    log = await backend.read_events("job_001", 0, 10_000)
    assert [e.seq for e in log] == list(range(1, len(appended) + 1))
    assert {e.seq: e.data for e in log} == {e.seq: e.data for e in appended}


async def test_a_duplicate_key_returns_none(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    assert await backend.append_event("job_001", new(key="job.started")) is not None
    assert await backend.append_event("job_001", new(key="job.started")) is None
    assert await backend.append_event("job_001", new(key="other")) is not None
    assert [e.seq for e in await backend.read_events("job_001")] == [1, 2]


async def test_read_events_after_and_limit(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    for i in range(10):
        await backend.append_event("job_001", new(i=i))
    assert [e.seq for e in await backend.read_events("job_001", after=3)] == [4, 5, 6, 7, 8, 9, 10]
    assert [e.seq for e in await backend.read_events("job_001", after=3, limit=2)] == [4, 5]
    assert [e.seq for e in await backend.read_events("job_001", after=-5, limit=2)] == [1, 2]
    assert await backend.read_events("job_001", after=10) == []
    assert await backend.read_events("job_404") == []


async def test_wait_events_returns_at_once_when_events_exist(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.append_event("job_001", new())
    await backend.append_event("job_001", new())
    with anyio.fail_after(5):
        events = await backend.wait_events("job_001", after=1, timeout=60)
    assert [e.seq for e in events] == [2]


async def test_wait_events_wakes_on_append(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.append_event("job_001", new())
    got: list[Event] = []
    waiting = anyio.Event()

    async def waiter() -> None:
        waiting.set()
        got.extend(await backend.wait_events("job_001", after=1, timeout=60))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await waiting.wait()
            await backend.append_event("job_001", new(EventType.tool_result))
    assert [(e.seq, e.type) for e in got] == [(2, EventType.tool_result)]


async def test_wait_events_times_out_empty(backend: Backend) -> None:
    await backend.create_job(job("job_001"))
    await backend.append_event("job_001", new())
    with anyio.fail_after(10):
        assert await backend.wait_events("job_001", after=1, timeout=0.2) == []
        assert await backend.wait_events("job_001", after=1, timeout=0) == []
        assert await backend.wait_events("job_404", after=0, timeout=0.2) == []


async def test_a_cancelled_wait_leaves_the_backend_usable(backend: Backend) -> None:
    # What an SSE client disconnecting mid-wait, or a draining worker, does to the backend.
    await backend.create_job(job("job_001"))
    with anyio.move_on_after(0.2):
        await backend.wait_events("job_001", after=0, timeout=60)
    with anyio.move_on_after(0.2):
        await backend.claim("w1", 60)
    with anyio.fail_after(10):
        await backend.append_event("job_001", new())
        assert [e.seq for e in await backend.wait_events("job_001", after=0, timeout=60)] == [1]
        await backend.enqueue("a")
        assert await backend.claim("w1", 60) == "a"


# -- queue ---------------------------------------------------------------------------------------------


async def test_queue_is_fifo_and_ack_drops_jobs(backend: Backend) -> None:
    for job_id in ("a", "b", "c"):
        await backend.enqueue(job_id)
    assert await backend.queue_depth() == 3
    assert await backend.claim("w1", 1) == "a"
    assert await backend.claim("w1", 1) == "b"
    assert await backend.queue_depth() == 1
    await backend.ack("a")
    assert await backend.claim("w2", 1) == "c"
    assert await backend.queue_depth() == 0
    assert await backend.claim("w2", 0.05) is None


async def test_claim_waits_for_an_enqueue(backend: Backend) -> None:
    claimed: list[str | None] = []
    claiming = anyio.Event()

    async def claimer() -> None:
        claiming.set()
        claimed.append(await backend.claim("w1", 60))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer)
            await claiming.wait()
            await backend.enqueue("a")
    assert claimed == ["a"]


async def test_release_hands_the_job_back_first(backend: Backend) -> None:
    await backend.enqueue("a")
    await backend.enqueue("b")
    assert await backend.claim("w1", 1) == "a"
    await backend.release("a")
    assert await backend.queue_depth() == 2
    assert await backend.claim("w2", 1) == "a"
    assert await backend.claim("w2", 1) == "b"
    assert await backend.claim("w2", 0.05) is None


async def test_queue_full(make: BackendMaker) -> None:
    backend = make(max_queued_jobs=2)
    await backend.enqueue("a")
    await backend.enqueue("b")
    with pytest.raises(QueueFull):
        await backend.enqueue("c")
    # Running jobs are not queued: a claim makes room.
    assert await backend.claim("w1", 1) == "a"
    await backend.enqueue("c")
    with pytest.raises(QueueFull):
        await backend.enqueue("d")
    assert await backend.queue_depth() == 2


async def test_a_lapsed_lease_is_reclaimed_by_another_worker(make: BackendMaker) -> None:
    backend = make(lease_seconds=0.3)
    await backend.enqueue("a")
    assert await backend.claim("w1", 1) == "a"
    assert await backend.claim("w2", 0) is None
    claimed: list[str] = []

    async def reclaimed() -> bool:
        job_id = await backend.claim("w2", 0.1)
        if job_id is not None:
            claimed.append(job_id)
        return bool(claimed)

    await eventually(reclaimed)
    assert claimed == ["a"]


async def test_heartbeats_keep_the_lease(make: BackendMaker) -> None:
    backend = make(lease_seconds=0.6)
    await backend.enqueue("a")
    assert await backend.claim("w1", 1) == "a"
    # Three leases' worth of heartbeats: nobody else may take the job meanwhile.
    for _ in range(18):
        assert await backend.heartbeat("w1", "a")
        assert await backend.claim("w2", 0) is None
        await anyio.sleep(0.1)
    await backend.ack("a")


async def test_a_heartbeat_from_a_worker_that_lost_the_job_says_so(make: BackendMaker) -> None:
    backend = make(lease_seconds=0.2)
    await backend.enqueue("a")
    assert await backend.claim("w1", 1) == "a"
    claimed: list[str] = []

    async def taken_over() -> bool:
        job_id = await backend.claim("w2", 0.1)
        if job_id is not None:
            claimed.append(job_id)
        return bool(claimed)

    await eventually(taken_over)
    # The stalled worker wakes up: its heartbeat must not steal the job back.
    assert not await backend.heartbeat("w1", "a")
    assert await backend.heartbeat("w2", "a")
    await backend.ack("a")


async def test_an_acked_job_never_comes_back(make: BackendMaker) -> None:
    backend = make(lease_seconds=0.2)
    await backend.enqueue("a")
    assert await backend.claim("w1", 1) == "a"
    await backend.ack("a")
    assert await backend.claim("w2", 0.6) is None
    assert await backend.queue_depth() == 0


# -- cache and locks -------------------------------------------------------------------------------------


async def test_cache_get_set_and_ttl(backend: Backend) -> None:
    assert await backend.cache_get("k") is None
    await backend.cache_set("k", "v", 60)
    await backend.cache_set("forever", "v0", 0)
    assert await backend.cache_get("k") == "v"
    await backend.cache_set("short", "gone soon", 1)
    assert await backend.cache_get("short") == "gone soon"

    async def expired() -> bool:
        return await backend.cache_get("short") is None

    await eventually(expired, within=10)
    assert await backend.cache_get("k") == "v"
    assert await backend.cache_get("forever") == "v0"


async def test_locks(backend: Backend) -> None:
    assert await backend.try_lock("l", 30) is True
    assert await backend.try_lock("l", 30) is False
    assert await backend.try_lock("other", 30) is True
    await backend.unlock("l")
    assert await backend.try_lock("l", 30) is True


async def test_locks_expire(backend: Backend) -> None:
    assert await backend.try_lock("l", 0.2) is True

    async def free() -> bool:
        return await backend.try_lock("l", 30)

    await eventually(free)


# -- tenants ------------------------------------------------------------------------------------------


async def test_list_by_owner_pages_through_only_that_owners_jobs(make: BackendMaker) -> None:
    # On redis, two instances: two processes on one server.
    one = make()
    two = make() if make.kind == "redis" else one
    ids = [f"job_{i:03d}" for i in range(12)]
    for i, job_id in enumerate(ids):
        record = job(job_id)
        record.owner = "alice" if i % 3 == 0 else "bob"
        await one.create_job(record)
    alices = [i for n, i in enumerate(ids) if n % 3 == 0][::-1]
    seen, cursor = [], None
    while True:
        page, cursor = await two.list_jobs(None, cursor, 3, "alice")
        assert all(r.owner == "alice" for r in page)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == alices
    assert len((await two.list_jobs(None, None, 100, "bob"))[0]) == 8
    assert (await two.list_jobs(None, None, 100, "carol")) == ([], None)
    # The owner survives a save, and the status filter combines with it.
    record = await two.get_job(alices[0])
    assert record is not None and record.owner == "alice"
    record.status = JobStatus.running
    await two.save_job(record)
    running, _ = await one.list_jobs(JobStatus.running, None, 10, "alice")
    assert [r.id for r in running] == [alices[0]]
    assert (await one.list_jobs(JobStatus.running, None, 10, "bob")) == ([], None)


async def test_counters_add_read_and_are_shared(make: BackendMaker) -> None:
    one = make()
    two = make() if make.kind == "redis" else one
    assert await one.counter_add("tokens:a", 0, 60) == 0
    assert await one.counter_add("tokens:a", 5, 60) == 5
    assert await two.counter_add("tokens:a", 7, 60) == 12
    assert await two.counter_add("tokens:b", 0, 60) == 0

    async def concurrent() -> None:
        async with anyio.create_task_group() as tg:
            for backend in (one, two) * 10:
                tg.start_soon(backend.counter_add, "tokens:c", 1, 60)

    await concurrent()
    assert await one.counter_add("tokens:c", 0, 60) == 20


async def test_counters_expire(backend: Backend) -> None:
    assert await backend.counter_add("short", 3, 1) == 3

    async def reset() -> bool:
        return await backend.counter_add("short", 0, 1) == 0

    await eventually(reset, within=10)


# -- two instances on one store (two processes on one box or one Redis) ---------------------------------


def shared(make: BackendMaker) -> tuple[Backend, Backend]:
    if make.kind == "memory":
        pytest.skip("the memory backend lives in one process: nothing to share")
    return make(lease_seconds=0.3), make(lease_seconds=0.3)


async def test_another_instance_s_append_wakes_a_waiting_stream(make: BackendMaker) -> None:
    writer, reader = shared(make)
    await writer.create_job(job("job_001"))
    await writer.append_event("job_001", new())
    got: list[Event] = []
    waiting = anyio.Event()

    async def waiter() -> None:
        waiting.set()
        got.extend(await reader.wait_events("job_001", after=1, timeout=60))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await waiting.wait()
            await writer.append_event("job_001", new(EventType.tool_result, key="k"))
    assert [(e.seq, e.type) for e in got] == [(2, EventType.tool_result)]
    # The key is shared too: the other instance's replay is a duplicate.
    assert await reader.append_event("job_001", new(EventType.tool_result, key="k")) is None


async def test_another_instance_s_enqueue_wakes_a_waiting_claim(make: BackendMaker) -> None:
    api, worker = shared(make)
    claimed: list[str | None] = []
    claiming = anyio.Event()

    async def claimer() -> None:
        claiming.set()
        claimed.append(await worker.claim("w1", 60))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer)
            await claiming.wait()
            await api.enqueue("a")
    assert claimed == ["a"]


async def test_a_dead_instance_s_job_is_reclaimed_by_another(make: BackendMaker) -> None:
    first, second = shared(make)
    await first.create_job(job("job_001", key="idem"))
    await first.enqueue("job_001")
    assert await first.claim("w1", 1) == "job_001"
    await first.save_checkpoint("job_001", AgentCheckpoint(agent=0, round=3, report="kept"))
    # `first` stops heartbeating (its process died): the lease lapses and `second` takes over.
    claimed: list[str] = []

    async def reclaimed() -> bool:
        job_id = await second.claim("w2", 0.1)
        if job_id is not None:
            claimed.append(job_id)
        return bool(claimed)

    await eventually(reclaimed)
    assert claimed == ["job_001"]
    assert (await second.load_checkpoints("job_001"))[0].report == "kept"
    again, created = await second.create_job(job("job_002", key="idem"))
    assert (again.id, created) == ("job_001", False)
