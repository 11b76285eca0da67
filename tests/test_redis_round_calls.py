"""What an agent-round costs in Redis calls, on a real job: the engine on the Redis backend with
its worker, against the simulated model over HTTP. Each call is about 1 ms of redis-py CPU, the
largest part of a round's cost on Redis (issue 14 wants a round on Redis within 1.3x memory),
so a call added per round fails here.

The calls are counted with MONITOR on the test's own server, not `INFO commandstats`: the
latter also counts every command a script runs (a round's commit script alone runs a dozen),
which cost no client CPU; MONITOR marks those as the script's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from tests.engine_harness import engine_settings
from tests.redis_server import RedisServer, redis_servers  # noqa: F401  (fixture)
from workers.engine import Engine, open_engine
from workers.events import EventType
from workers.jobs import submit_job
from workers.models import JobStatus, ResearchRequest
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

# Measured on this job (96 agent-rounds) when the test was added: 1.44-1.47 client calls per
# agent-round with the limiter's slot reuse (one commit_round script per round, the job's own
# ~45 calls spread over its rounds), 3.43-3.46 without it (an acquire script and a ZREM more
# around every model call). The bound leaves room for a few calls per job, not for one per round
# (that would make it ~2.45).
CALLS_PER_ROUND_MAX = 2.0


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(min_rounds=12)) as server:
        yield server


async def run_job(engine: Engine, request: ResearchRequest) -> str:
    """Submit and wait for the worker to finish it, watching the worker (no Redis call)."""
    assert engine.worker is not None
    record, _ = await submit_job(engine.backend, request, simulated=True)
    with anyio.fail_after(120):
        while record.id not in engine.worker.running_jobs:  # noqa: ASYNC110 - polls the worker's state
            await anyio.sleep(0.005)
        while record.id in engine.worker.running_jobs:  # noqa: ASYNC110 - polls the worker's state
            await anyio.sleep(0.005)
    return record.id


async def test_redis_calls_per_agent_round(
    mini_corpus: Path,
    sim: SimServer,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
) -> None:
    server = redis_servers(appendonly=False)
    settings = engine_settings(mini_corpus, sim.base_url, backend="redis", redis_url=server.url)
    probe = Redis.from_url(server.url, single_connection_client=True)
    calls: Counter[str] = Counter()

    async def count(monitor_started: anyio.Event) -> None:
        async with probe.monitor() as monitor:
            monitor_started.set()
            counting = False
            async for command in monitor.listen():
                if command["command"] == "ECHO measure-start":
                    counting = True
                elif command["command"] == "ECHO measure-end":
                    return
                elif counting and command["client_type"] != "lua":
                    calls[command["command"].split(" ", 1)[0].lower()] += 1

    try:
        async with open_engine(settings, run_worker=True) as engine:
            request = ResearchRequest(query="Which river flows through Valdoria?", agents=8, max_rounds=12)
            # A warm-up job: scripts loaded, connections open.
            await run_job(engine, request)
            async with anyio.create_task_group() as tg:
                monitor_started = anyio.Event()
                tg.start_soon(count, monitor_started)
                await monitor_started.wait()
                await probe.echo("measure-start")
                job_id = await run_job(engine, request)
                await probe.echo("measure-end")
            job = await engine.backend.get_job(job_id)
            events = await engine.backend.read_events(job_id, 0, 100_000)
    finally:
        await probe.aclose()
    assert job is not None and job.status == JobStatus.succeeded
    rounds = sum(1 for e in events if e.type == EventType.round_started)
    assert rounds >= 8 * 6, rounds  # enough rounds that the job's own calls spread thin
    per_round = sum(calls.values()) / rounds
    assert per_round < CALLS_PER_ROUND_MAX, (per_round, rounds, calls.most_common())
