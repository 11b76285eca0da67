"""Poison jobs end to end: the process running a job is killed (-9) mid-research, again and
again, a new one started each time, until the job has used `worker.max_attempts` runs; the next
process to claim it fails it (job.failed, outcome `poisoned`) instead of running it again.

Redis: `heavyresearch worker` processes are the ones killed, and the last one serves its own
Prometheus metrics (`--metrics-port`), which count the poisoned job. SQLite: `serve` (which
runs the jobs itself) is killed and started again on the same file.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.procs import ApiProcess, HRProcess
from tests.redis_server import (
    free_port,
    redis_servers,  # noqa: F401  (fixture)
)
from tests.test_scaleout import StackMaker, eventually, follow_to_end, get_job, make_stack, submit  # noqa: F401
from tests.test_sqlite_processes import SQLiteBox, box, jobs_run  # noqa: F401
from workers.sim.app import SimConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

MAX_ATTEMPTS = 2
# Rounds that never end on their own, so every run is still researching when it is killed.
SLOW = SimConfig(latency=0.3, min_rounds=500)


async def wait_running(proc: HRProcess, job_id: str) -> None:
    """Until `proc` has started (or resumed) the job: its attempt is in the record by then."""

    async def running() -> bool:
        return job_id in jobs_run(proc)

    await eventually(running, what=f"{proc.name} to run {job_id}")


def check_poisoned(job: dict[str, Any], events: list[dict[str, Any]]) -> None:
    assert job["status"] == "failed", job
    assert job["attempts"] == MAX_ATTEMPTS
    assert f"gave up after {MAX_ATTEMPTS} attempt(s)" in job["error"]
    assert "its worker stopped before it finished" in job["error"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("job.failed") == 1
    last = events[-1]
    assert last["type"] == "job.failed"
    assert last["data"]["outcome"] == "poisoned"
    assert last["data"]["attempts"] == MAX_ATTEMPTS
    assert last["data"]["error"] == job["error"]


def metric(text: str, name: str) -> float:
    """The value of one unlabelled sample in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.redis
async def test_a_job_that_kills_its_workers_fails_after_max_attempts_on_redis(make_stack: StackMaker) -> None:  # noqa: F811
    stack = make_stack(
        sim=SLOW,
        apis=1,
        workers=1,
        lease=1.5,
        heartbeat=0.3,
        env={"HR_WORKER__MAX_ATTEMPTS": str(MAX_ATTEMPTS)},
    )
    api = stack.apis[0]
    job_id = await submit(api, agents=1, max_rounds=200)
    for _ in range(MAX_ATTEMPTS):
        victim = stack.workers[-1]
        await wait_running(victim, job_id)
        victim.kill()
        # The next worker serves its metrics: the last one started is the one read below.
        port = free_port()
        stack.cluster.env["HR_WORKER__METRICS_PORT"] = str(port)
        stack.cluster.start_workers(1)
    last = stack.workers[-1]

    events = await follow_to_end(stack.apis, job_id)
    job = await get_job(api, job_id)
    check_poisoned(job, events)
    # It never ran again: the last worker claimed it only to fail it.
    assert job_id not in last.jobs_run()
    async with httpx.AsyncClient(trust_env=False) as client:
        worker_metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        api_metrics = (await client.get(f"{api.base_url}/metrics")).text
    assert metric(worker_metrics, "hr_jobs_poisoned_total") == 1
    assert metric(worker_metrics, "hr_job_attempts_total") == 0
    assert 'hr_jobs{status="failed"} 1.0' in api_metrics


async def test_a_job_that_kills_serve_fails_after_max_attempts_on_sqlite(box: Any) -> None:  # noqa: F811
    stack: SQLiteBox = box(SLOW, env={"HR_WORKER__MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
    api: ApiProcess = stack.start_serve()
    job_id = await submit(api, agents=1, max_rounds=200)
    for _ in range(MAX_ATTEMPTS):
        await wait_running(api, job_id)
        api.kill()
        api = stack.start_serve()

    events = await follow_to_end([api], job_id)
    job = await get_job(api, job_id)
    check_poisoned(job, events)
    assert job_id not in jobs_run(api)
    async with api.client() as client:
        text = (await client.get("/metrics")).text
    assert metric(text, "hr_jobs_poisoned_total") == 1
    assert 'hr_jobs{status="failed"} 1.0' in text
