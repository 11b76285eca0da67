"""Scale-out, end to end: real `heavyresearch serve` and `heavyresearch worker` processes on a
real redis-server (AOF on), the simulated model over HTTP, clients over loopback.

What each test does to the system: several API and worker processes share the load and a
client's event stream moves between API processes; a worker is killed (-9) or drained
(SIGTERM) mid-round; Redis is killed and restarted, or frozen, mid-run; a job is cancelled
through one API process while another process runs it. After each, the jobs' event logs are
read back through the public API and checked: gapless, no duplicate, no agent restarted, no
completed round redone (the simulated model counts its calls), and results that cite only
what the job retrieved.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest

from tests.procs import ApiProcess, Cluster, WorkerProcess
from tests.redis_server import RedisServer, redis_servers  # noqa: F401  (fixture)
from tests.server import TERMINAL, SSEStream, parse_sse, read_stream
from workers.backend.redis import RedisBackend
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(240)]

# How long the slowest scenario may take to finish all its jobs on a loaded 2-core machine.
JOBS_DEADLINE = 120.0


@dataclass
class Stack:
    cluster: Cluster
    redis: RedisServer
    sim: SimServer

    @property
    def apis(self) -> list[ApiProcess]:
        return self.cluster.apis

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.cluster.workers

    def research_calls(self) -> int:
        return self.sim.stats.by_role["research"]

    @asynccontextmanager
    async def inspector(self) -> AsyncIterator[RedisBackend]:
        """The test's own view of the shared state (read-only use)."""
        backend = RedisBackend(self.redis.url, prefix=self.cluster.prefix)
        try:
            yield backend
        finally:
            await backend.close()


StackMaker = Callable[..., Stack]


@pytest.fixture
def make_stack(
    tmp_path: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
    mini_corpus: Path,
) -> Iterator[StackMaker]:
    """`make_stack(sim=SimConfig(...), apis=2, workers=2, lease=3.0, env={...})`: a private AOF
    redis-server, an in-test simulated model, and the processes, all stopped afterwards. The
    processes' logs are printed at teardown, so a failing test shows them."""
    made: list[Stack] = []

    def make(
        *,
        sim: SimConfig,
        apis: int,
        workers: int,
        lease: float = 3.0,
        heartbeat: float = 0.5,
        env: dict[str, str] | None = None,
    ) -> Stack:
        redis = redis_servers(appendonly=True)
        server = SimServer(sim)
        server.start()
        cluster = Cluster(
            tmp_path / f"cluster-{len(made)}",
            redis.url,
            mini_corpus,
            server.openai_base_url,
            heartbeat=heartbeat,
            lease=lease,
            env=env,
        )
        stack = Stack(cluster, redis, server)
        made.append(stack)
        cluster.start_apis(apis)
        cluster.start_workers(workers)
        return stack

    try:
        yield make
    finally:
        for stack in made:
            stack.cluster.stop()
            stack.sim.stop()
            print(stack.cluster.report())


# -- client side ------------------------------------------------------------------------------------


async def submit(api: ApiProcess, *, agents: int = 2, max_rounds: int = 8, query: str = "") -> str:
    body = {"query": query or "What is the capital of Valdoria?", "agents": agents, "max_rounds": max_rounds}
    async with api.client() as client:
        response = await client.post("/v1/research", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def get_job(api: ApiProcess, job_id: str) -> dict[str, Any]:
    async with api.client() as client:
        response = await client.get(f"/v1/research/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def follow_to_end(
    apis: list[ApiProcess], job_id: str, *, timeout: float = JOBS_DEADLINE
) -> list[dict[str, Any]]:
    """Every event of the job up to its terminal one, as a client that never gives up sees them:
    when a stream breaks or an API process answers 503 it reconnects, to the next API process,
    with `Last-Event-ID`. Duplicates and gaps are kept, for the caller to check."""
    events: list[dict[str, Any]] = []
    attempt = 0
    with anyio.fail_after(timeout):
        while True:
            api = apis[attempt % len(apis)]
            attempt += 1
            headers = {"Accept": "text/event-stream"}
            if events:
                headers["Last-Event-ID"] = str(events[-1]["seq"])
            try:
                async with (
                    api.client(timeout=10.0) as client,
                    client.stream("GET", f"/v1/research/{job_id}/events", headers=headers) as response,
                ):
                    if response.status_code == 503:
                        assert "retry-after" in response.headers
                    else:
                        assert response.status_code == 200, (response.status_code, await response.aread())
                        async for message in parse_sse(response, SSEStream()):
                            events.append(message.json)
                            if message.event in TERMINAL:
                                return events
            except httpx.TransportError:
                pass  # the stream broke (the job store went away): resume from the last event
            await anyio.sleep(0.2)


async def follow_all(apis: list[ApiProcess], job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    logs: dict[str, list[dict[str, Any]]] = {}

    async def one(index: int, job_id: str) -> None:
        # Spread the streams over the API processes.
        logs[job_id] = await follow_to_end(apis[index % len(apis) :] + apis[: index % len(apis)], job_id)

    async with anyio.create_task_group() as tg:
        for index, job_id in enumerate(job_ids):
            tg.start_soon(one, index, job_id)
    return logs


def check_log(events: list[dict[str, Any]], agents: int) -> None:
    """One job's log: gapless, no duplicate, one terminal event last, no agent restarted, no
    round started twice (a forced last round may share its number with an abandoned one)."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"gap or duplicate in {seqs}"
    assert [e["type"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["type"] in TERMINAL
    started = Counter(e["agent"] for e in events if e["type"] == "agent.started")
    assert started == dict.fromkeys(range(agents), 1), f"agent.started per agent: {started}"
    rounds = Counter(
        (e["agent"], e["round"], bool(e["data"].get("forced")))
        for e in events
        if e["type"] == "round.started"
    )
    repeated = {key: n for key, n in rounds.items() if n > 1}
    assert not repeated, f"round.started more than once for (agent, round, forced): {repeated}"
    for agent in range(agents):
        plain = sorted(r for (a, r, forced) in rounds if a == agent and not forced)
        assert plain == list(range(1, len(plain) + 1)), f"agent {agent} skipped a round: {plain}"


def retrieved_urls(events: list[dict[str, Any]]) -> set[str]:
    """Every url the job's tools reported retrieving."""
    return {
        source["url"] for e in events if e["type"] == "tool.result" for source in e["data"].get("sources", [])
    }


async def check_succeeded(api: ApiProcess, job_id: str, events: list[dict[str, Any]], agents: int) -> int:
    """The job succeeded with every agent, and cites only what it retrieved. Returns the rounds
    its agents ran in all (every round, forced ones included, is one research model call)."""
    check_log(events, agents)
    assert events[-1]["type"] == "job.succeeded", events[-1]
    job = await get_job(api, job_id)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["agents_failed"] == [], result
    assert [a["status"] for a in job["agents"]] == ["finished"] * agents, job["agents"]
    cited = {source["url"] for source in result["sources"]}
    assert cited <= retrieved_urls(events), f"cited but never retrieved: {cited - retrieved_urls(events)}"
    rounds: int = sum(a["rounds"] for a in job["agents"])
    return rounds


async def check_all_succeeded(stack: Stack, logs: dict[str, list[dict[str, Any]]], agents: int) -> int:
    rounds = 0
    cited = 0
    for job_id, events in logs.items():
        rounds += await check_succeeded(stack.apis[0], job_id, events, agents)
        cited += len((await get_job(stack.apis[0], job_id))["result"]["sources"])
    assert cited > 0, "no job cited any source: the citation check proved nothing"
    return rounds


# -- waiting on shared state ------------------------------------------------------------------------


async def eventually(probe: Callable[[], Any], *, timeout: float = 60.0, what: str = "a condition") -> Any:
    """Poll `probe` (async) until it returns something truthy; its value is returned."""
    with anyio.fail_after(timeout):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")  # pragma: no cover (fail_after raises)


async def owners(inspect: RedisBackend, job_ids: list[str]) -> dict[str, str | None]:
    """The worker id holding each job's lease (None: queued, finished, or lapsed)."""
    found = await inspect.client.mget([inspect.keys.lease(job_id) for job_id in job_ids])
    return dict(zip(job_ids, cast(list[str | None], found), strict=True))  # decode_responses=True


async def started_rounds(inspect: RedisBackend, job_id: str) -> dict[int, int]:
    """Agent -> the highest round it has started, from the job's event log."""
    latest: dict[int, int] = {}
    for event in await inspect.read_events(job_id):
        if event.type.value == "round.started" and event.agent is not None and event.round is not None:
            latest[event.agent] = max(latest.get(event.agent, 0), event.round)
    return latest


async def wait_mid_research(
    inspect: RedisBackend, job_ids: list[str], worker: WorkerProcess, agents: int, *, round_: int = 2
) -> list[str]:
    """Wait until `worker` holds jobs whose every agent has started round `round_` or later (so it
    has a checkpoint behind it and a model call in flight); return those jobs."""

    async def probe() -> list[str]:
        held = [
            job_id for job_id, owner in (await owners(inspect, job_ids)).items() if owner == worker.worker_id
        ]
        for job_id in held:
            latest = await started_rounds(inspect, job_id)
            if len(latest) < agents or min(latest.values()) < round_:
                return []
        return held

    held: list[str] = await eventually(probe, what=f"{worker.name} to be mid-research")
    return held


# -- the scenarios -----------------------------------------------------------------------------------


async def test_two_apis_two_workers_share_20_jobs_and_a_stream_resumes_on_the_other_api(
    make_stack: StackMaker,
) -> None:
    stack = make_stack(sim=SimConfig(latency=0.2, min_rounds=2), apis=2, workers=2)
    api_a, api_b = stack.apis
    job_ids = [await submit(stack.apis[i % 2], agents=2, max_rounds=6) for i in range(20)]

    # A client reads k events from API A, disconnects, and resumes on API B.
    k = 3
    watched = job_ids[-1]
    async with api_a.client() as client_a, api_b.client() as client_b:
        head = await read_stream(client_a, f"/v1/research/{watched}/events", limit=k)
        assert [m.id for m in head.messages] == [str(seq) for seq in range(1, k + 1)]
        tail = await read_stream(
            client_b, f"/v1/research/{watched}/events", headers={"Last-Event-ID": str(k)}
        )
        assert tail.ended
        assert [e["seq"] for e in tail.events] == list(range(k + 1, k + 1 + len(tail.events)))
        assert tail.events[-1]["type"] in TERMINAL
        # Exactly the log a fresh client replays from the start, on either process.
        whole = await read_stream(client_b, f"/v1/research/{watched}/events")
        assert head.events + tail.events == whole.events

    logs = await follow_all(stack.apis, job_ids)
    await check_all_succeeded(stack, logs, agents=2)
    # Both workers did a share of the work; each job ran on one of them.
    ran = [worker.jobs_run() for worker in stack.workers]
    assert all(ran), f"a worker ran no job: {[len(r) for r in ran]}"
    assert set().union(*ran) == set(job_ids)


async def test_a_killed_worker_s_jobs_finish_on_the_other_without_redoing_rounds(
    make_stack: StackMaker,
) -> None:
    stack = make_stack(
        sim=SimConfig(latency=0.4, min_rounds=4),
        apis=1,
        workers=2,
        env={"HR_WORKER__MAX_JOBS": "3"},
    )
    victim, survivor = stack.workers
    job_ids = [await submit(stack.apis[0], agents=2, max_rounds=8) for _ in range(6)]
    async with stack.inspector() as inspect:
        held = await wait_mid_research(inspect, job_ids, victim, agents=2)
    victim.kill()

    logs = await follow_all(stack.apis, job_ids)
    rounds = await check_all_succeeded(stack, logs, agents=2)
    assert set(held) <= survivor.jobs_run(), "the survivor did not take the dead worker's jobs over"
    # Completed rounds were never run again: the only extra model calls are the rounds that
    # were in flight in the killed process (at most one per agent it was running).
    extra = stack.research_calls() - rounds
    assert 0 <= extra <= 2 * len(held), (stack.research_calls(), rounds, held)


async def test_sigterm_drains_a_worker_and_the_other_finishes_its_jobs(make_stack: StackMaker) -> None:
    stack = make_stack(
        sim=SimConfig(latency=0.4, min_rounds=4),
        apis=1,
        workers=2,
        lease=3.0,
        env={"HR_WORKER__MAX_JOBS": "3"},
    )
    victim, survivor = stack.workers
    job_ids = [await submit(stack.apis[0], agents=2, max_rounds=8) for _ in range(6)]
    async with stack.inspector() as inspect:
        held = await wait_mid_research(inspect, job_ids, victim, agents=2)
        since = victim.log_size()
        signalled = time.monotonic()
        victim.terminate()
        code = await anyio.to_thread.run_sync(victim.wait_exit, 20.0)
        took = time.monotonic() - signalled
        assert code == 0, victim.describe()
        # Prompt: it cancels its rounds and hands the jobs back instead of finishing them.
        assert took < 10.0, f"the worker took {took:.1f}s to drain"
        drained_log = victim.log_text()[since:]
        assert "draining" in drained_log
        assert "job running" not in drained_log, "a draining worker started a job"
        assert "job released" in drained_log
        # Nothing is left leased to it: every job it held went back to the queue.
        assert victim.worker_id not in (await owners(inspect, job_ids)).values()

    logs = await follow_all(stack.apis, job_ids)
    rounds = await check_all_succeeded(stack, logs, agents=2)
    assert set(held) <= survivor.jobs_run()
    extra = stack.research_calls() - rounds
    assert 0 <= extra <= 2 * len(held), (stack.research_calls(), rounds, held)


async def test_jobs_ride_out_a_redis_restart(make_stack: StackMaker) -> None:
    stack = make_stack(sim=SimConfig(latency=0.3, min_rounds=4), apis=1, workers=2, lease=5.0)
    job_ids = [await submit(stack.apis[0], agents=2, max_rounds=8) for _ in range(6)]
    async with stack.inspector() as inspect:

        async def all_running() -> bool:
            return all([await started_rounds(inspect, job_id) for job_id in job_ids])

        await eventually(all_running, what="every job to be running")

    offsets = [worker.log_size() for worker in stack.workers]
    stack.redis.kill()
    # Down until both workers have met the outage (they retry, they do not fail jobs) and
    # the API answers 503.
    for worker, offset in zip(stack.workers, offsets, strict=True):
        await anyio.to_thread.run_sync(partial(worker.wait_log, "backend unavailable", 30.0, since=offset))
    async with stack.apis[0].client(timeout=8.0) as client:
        response = await client.get(f"/v1/research/{job_ids[0]}")
    assert response.status_code == 503
    stack.redis.start()

    logs = await follow_all(stack.apis, job_ids)
    await check_all_succeeded(stack, logs, agents=2)
    assert all(worker.alive for worker in stack.workers)


async def test_cancel_through_one_api_stops_the_job_in_a_worker_process(make_stack: StackMaker) -> None:
    stack = make_stack(sim=SimConfig(latency=0.3, min_rounds=40), apis=2, workers=1)
    api_a, api_b = stack.apis
    job_id = await submit(api_b, agents=2, max_rounds=50)
    async with stack.inspector() as inspect:

        async def researching() -> bool:
            latest = await started_rounds(inspect, job_id)
            return len(latest) == 2 and min(latest.values()) >= 2

        await eventually(researching, what="the job to reach round 2")
        asked = time.time()
        async with api_a.client() as client:
            response = await client.post(f"/v1/research/{job_id}/cancel")
        assert response.status_code == 202, response.text

        events = await follow_to_end([api_a], job_id, timeout=30.0)
        check_log(events, agents=2)
        terminal = events[-1]
        assert terminal["type"] == "job.cancelled", terminal
        assert terminal["ts"] - asked < 1.5, f"cancelled {terminal['ts'] - asked:.2f}s after the request"
        calls_at_end = stack.research_calls()

        # The worker lets go of the job; only then is it sure nothing else will be appended.
        async def acked() -> bool:
            return not await inspect.client.exists(inspect.keys.lease(job_id))

        await eventually(acked, what="the worker to ack the cancelled job")
        after = [e.model_dump(mode="json") for e in await inspect.read_events(job_id)]
    assert [e["seq"] for e in after] == [e["seq"] for e in events], "events appended after job.cancelled"
    assert stack.research_calls() == calls_at_end, "the model was called after the job was cancelled"
    assert (await get_job(api_b, job_id))["status"] == "cancelled"


async def test_api_answers_503_while_redis_is_down_and_recovers(make_stack: StackMaker) -> None:
    stack = make_stack(sim=SimConfig(), apis=1, workers=0)
    api = stack.apis[0]
    job_id = await submit(api)

    async def while_unavailable() -> None:
        """POST, GET and /readyz all answer 503 (with Retry-After), well before the client's
        timeout: the API never hangs on a job store that is gone or frozen."""
        results: dict[str, httpx.Response] = {}
        async with api.client(timeout=8.0) as client:

            async def call(name: str, method: str, path: str, body: Any = None) -> None:
                results[name] = await client.request(method, path, json=body)

            with anyio.fail_after(9.0):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, "post", "POST", "/v1/research", {"query": "Who founded Aldmere?"})
                    tg.start_soon(call, "get", "GET", f"/v1/research/{job_id}")
                    tg.start_soon(call, "ready", "GET", "/readyz")
        for name in ("post", "get"):
            response = results[name]
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["error"]["type"] == "unavailable"
        ready = results["ready"]
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["checks"]["backend"]["ok"] is False

    async def when_back() -> None:
        async with api.client(timeout=8.0) as client:

            async def is_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(is_ready, timeout=30.0, what="/readyz to be ready again")
            assert (await client.get(f"/v1/research/{job_id}")).status_code == 200
            response = await client.post("/v1/research", json={"query": "Who founded Aldmere?"})
            assert response.status_code == 202, response.text

    stack.redis.kill()
    await while_unavailable()
    stack.redis.start()
    await when_back()

    stack.redis.freeze()
    try:
        await while_unavailable()
    finally:
        stack.redis.thaw()
    await when_back()
