"""The sqlite backend end to end: real `heavyresearch serve` / `heavyresearch worker` processes on
one SQLite file (in the test's temporary folder), the simulated model over HTTP, clients over
loopback.

What each test does to the system: `serve` is killed (-9) or stopped (SIGTERM) mid-research and
started again on the same file; `serve` and two worker processes share one file. After each,
the jobs' event logs are read back through the public API and checked with the scale-out
suite's checks: gapless, no duplicate, no agent restarted, no completed round redone (the
simulated model counts its calls), results that cite only what the job retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import ApiProcess, Cluster, HRProcess
from tests.server import TERMINAL, read_stream
from tests.test_scaleout import check_succeeded, eventually, follow_all, follow_to_end, get_job, submit
from workers.backend.sqlite import SQLiteBackend
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]


class SQLiteBox:
    """Processes on one box sharing one sqlite file, with an in-test simulated model."""

    def __init__(
        self, workdir: Path, corpus: Path, sim: SimConfig, env: dict[str, str] | None = None
    ) -> None:
        self.path = workdir / "state" / "heavyresearch.sqlite"
        self.sim = SimServer(sim)
        self.sim.start()
        # The scale-out cluster's process handling, pointed at sqlite instead of Redis.
        self.cluster = Cluster(
            workdir / "procs",
            "redis://unused.invalid",
            corpus,
            self.sim.openai_base_url,
            heartbeat=0.5,
            lease=3.0,
            env={"HR_BACKEND": "sqlite", "HR_SQLITE__PATH": str(self.path), **(env or {})},
        )

    def research_calls(self) -> int:
        return self.sim.stats.by_role["research"]

    def start_serve(self) -> ApiProcess:
        [api] = self.cluster.start_apis(1)
        return api

    def stop(self) -> None:
        self.cluster.stop()
        self.sim.stop()
        print(self.cluster.report())


@pytest.fixture
def box(tmp_path: Path, mini_corpus: Path) -> Iterator[Any]:
    made: list[SQLiteBox] = []

    def make(sim: SimConfig, env: dict[str, str] | None = None) -> SQLiteBox:
        made.append(SQLiteBox(tmp_path / f"box-{len(made)}", mini_corpus, sim, env))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            one.stop()


def jobs_run(proc: HRProcess) -> set[str]:
    """Ids of the jobs a process (serve or worker) started or resumed, from its log."""
    return set(re.findall(r"job=(\S+) agent=\S+ job running", proc.log_text()))


async def started_rounds(path: Path, job_id: str) -> dict[int, int]:
    """Agent -> the highest round it has started, read from the shared file (the test's own
    read-only view, like another process on the box)."""
    inspect = SQLiteBackend(path)
    try:
        events = await inspect.read_events(job_id)
    finally:
        await inspect.close()
    latest: dict[int, int] = {}
    for event in events:
        if event.type.value == "round.started" and event.agent is not None and event.round is not None:
            latest[event.agent] = max(latest.get(event.agent, 0), event.round)
    return latest


async def replay(api: ApiProcess, job_id: str) -> list[dict[str, Any]]:
    async with api.client() as client:
        return (await read_stream(client, f"/v1/research/{job_id}/events")).events


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
async def test_a_restarted_serve_resumes_every_job_from_its_checkpoints(box: Any, stop: str) -> None:
    stack: SQLiteBox = box(SimConfig(latency=0.3, min_rounds=4))
    api = stack.start_serve()
    health = await _health(api)
    assert (health["backend"], health["backend_location"]) == ("sqlite", str(stack.path))

    # One job that finishes before the restart: it must still be there afterwards.
    done_id = await submit(api, agents=1, max_rounds=3, query="What is the capital of Valdoria?")
    done_log = await follow_to_end([api], done_id)
    assert done_log[-1]["type"] == "job.succeeded"
    done_job = await get_job(api, done_id)

    job_ids = [await submit(api, agents=2, max_rounds=8) for _ in range(3)]

    async def mid_research() -> bool:
        for job_id in job_ids:
            latest = await started_rounds(stack.path, job_id)
            if len(latest) < 2 or min(latest.values()) < 2:
                return False
        return True

    await eventually(mid_research, what="every job to be in round 2")
    # A client is following one job when the process goes away.
    async with api.client() as client:
        head = await read_stream(client, f"/v1/research/{job_ids[0]}/events", limit=5)
    calls_before = stack.research_calls()
    if stop == "kill -9":
        api.kill()
    else:
        api.terminate()
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert api.wait_exit(30) in (0, -15)
        assert "released" in api.log_text()
    assert stack.research_calls() >= calls_before

    again = stack.start_serve()
    assert "backend=sqlite (" in again.log_text()
    # The stream resumes on the new process where it stopped, and ends with the job.
    async with again.client() as client:
        tail = await read_stream(
            client, f"/v1/research/{job_ids[0]}/events", headers={"Last-Event-ID": str(len(head.messages))}
        )
    assert tail.ended
    assert tail.events[-1]["type"] in TERMINAL
    assert head.events + tail.events == await replay(again, job_ids[0])

    logs = await follow_all([again], job_ids)
    rounds = 0
    for job_id, events in logs.items():
        rounds += await check_succeeded(again, job_id, events, agents=2)
    # No completed round ran twice: the only extra model calls are the rounds that were in
    # flight when the process stopped (at most one per agent), plus the finished job's.
    extra = stack.research_calls() - rounds - done_job["agents"][0]["rounds"]
    assert 0 <= extra <= 2 * len(job_ids), (stack.research_calls(), rounds)

    # The job that had finished before the restart is intact: record and log.
    assert await get_job(again, done_id) == done_job
    assert await replay(again, done_id) == done_log


async def test_serve_and_two_workers_share_one_file(box: Any) -> None:
    stack: SQLiteBox = box(SimConfig(latency=0.2, min_rounds=2), env={"HR_WORKER__MAX_JOBS": "2"})
    api = stack.start_serve()
    workers = stack.cluster.start_workers(2)
    job_ids = [await submit(api, agents=2, max_rounds=6) for _ in range(10)]

    logs = await follow_all([api], job_ids)
    for job_id, events in logs.items():
        await check_succeeded(api, job_id, events, agents=2)
    # Every process ran a share (2 slots each, 10 jobs), and each job ran on one of them.
    ran = [jobs_run(proc) for proc in [api, *workers]]
    assert all(ran), f"a process ran no job: {[len(r) for r in ran]}"
    assert set().union(*ran) == set(job_ids)
    assert sum(len(r) for r in ran) == len(job_ids)


async def test_a_killed_worker_s_jobs_finish_in_another_process(box: Any) -> None:
    stack: SQLiteBox = box(SimConfig(latency=0.4, min_rounds=4), env={"HR_WORKER__MAX_JOBS": "2"})
    api = stack.start_serve()
    [victim] = stack.cluster.start_workers(1)
    job_ids = [await submit(api, agents=2, max_rounds=8) for _ in range(4)]

    async def victim_mid_research() -> list[str]:
        held = sorted(jobs_run(victim))
        for job_id in held:
            latest = await started_rounds(stack.path, job_id)
            if len(latest) < 2 or min(latest.values()) < 2:
                return []
        return held

    held = await eventually(victim_mid_research, what="the worker to be mid-research")
    victim.kill()
    logs = await follow_all([api], job_ids)
    rounds = 0
    for job_id, events in logs.items():
        rounds += await check_succeeded(api, job_id, events, agents=2)
    assert set(held) <= jobs_run(api), "serve did not take the dead worker's jobs over"
    extra = stack.research_calls() - rounds
    assert 0 <= extra <= 2 * len(held), (stack.research_calls(), rounds, held)


async def _health(api: ApiProcess) -> dict[str, Any]:
    async with api.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body
