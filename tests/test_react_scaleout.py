"""Both modes on the scale-out stack: real `serve` and `worker` processes on a real
redis-server, the SIMULATED model over HTTP. A worker is killed (-9) mid-run; its ReAct and
Heavy jobs finish on the other worker (ReAct ones from their transcripts), without a completed
round run again."""

from __future__ import annotations

import pytest

from tests.procs import ApiProcess
from tests.redis_server import redis_servers  # noqa: F401  (fixture make_stack uses)
from tests.test_scaleout import (  # noqa: F401  (make_stack is a fixture)
    StackMaker,
    check_all_succeeded,
    follow_all,
    get_job,
    make_stack,
    wait_mid_research,
)
from workers.sim.app import SimConfig

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(240)]


async def submit_mode(api: ApiProcess, mode: str, *, agents: int, max_rounds: int) -> str:
    body = {"query": "What is the capital of Valdoria?", "agents": agents, "max_rounds": max_rounds}
    async with api.client() as client:
        response = await client.post("/v1/research", json={**body, "mode": mode})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_a_killed_worker_s_react_and_heavy_jobs_resume_on_the_other(
    make_stack: StackMaker,  # noqa: F811
) -> None:
    stack = make_stack(
        sim=SimConfig(latency=0.4, min_rounds=4),
        apis=1,
        workers=1,
        env={"HR_WORKER__MAX_JOBS": "3"},
    )
    (victim,) = stack.workers
    # The victim alone claims the first three jobs (queue order): both modes, mid-research.
    modes = ["react", "heavy", "react", "heavy", "react"]
    job_ids = [await submit_mode(stack.apis[0], mode, agents=2, max_rounds=8) for mode in modes]
    mode_of = dict(zip(job_ids, modes, strict=True))
    async with stack.inspector() as inspect:
        held = await wait_mid_research(inspect, job_ids, victim, agents=2)
        before = {job_id: await inspect.load_checkpoints(job_id) for job_id in held}
    assert {mode_of[job_id] for job_id in held} == {"react", "heavy"}, held
    victim.kill()
    # Started after the kill, so the victim cannot finish its jobs while the survivor starts.
    (survivor,) = stack.cluster.start_workers(1)

    logs = await follow_all(stack.apis, job_ids)
    rounds = await check_all_succeeded(stack, logs, agents=2)
    assert set(held) <= survivor.jobs_run(), "the survivor did not take the dead worker's jobs over"
    async with stack.inspector() as inspect:
        for job_id in (j for j in held if mode_of[j] == "react"):
            after = await inspect.load_checkpoints(job_id)
            for agent, cp in before[job_id].items():
                # The survivor continued the transcript the dead worker saved.
                assert len(cp.transcript) >= 3
                assert after[agent].transcript[: len(cp.transcript)] == cp.transcript
    for job_id in job_ids:
        job = await get_job(stack.apis[0], job_id)
        assert job["request"]["mode"] == mode_of[job_id]
    # Only rounds in flight in the killed process were asked of the model again.
    extra = stack.research_calls() - rounds
    assert 0 <= extra <= 2 * len(held), (stack.research_calls(), rounds, held)
