"""Every log line of a job names the job: the engine's own lines and those deep inside it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.engine_harness import harness
from workers.logs import ContextDefaults
from workers.models import JobStatus
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = pytest.mark.anyio


async def test_lines_logged_inside_a_job_carry_its_id_and_agent(
    mini_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextDefaults())
    caplog.set_level(logging.INFO)
    # Faults make the LLM client log its retries: code that never sees a job id itself.
    with SimServer(SimConfig(min_rounds=3, rate_429=1.0, max_faults=3)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit("What is the capital of Valdoria?", agents=3, max_rounds=8)
            await h.run_to_end(job.id)
            record = await h.backend.get_job(job.id)
    assert record is not None
    assert record.status == JobStatus.succeeded

    retries = [r for r in caplog.records if r.name == "workers.llm.client"]
    assert retries, "the faults should have made the client log retries"
    assert {getattr(r, "job_id", None) for r in retries} == {job.id}
    research = [r for r in retries if "research call" in r.getMessage()]
    assert research
    assert all(getattr(r, "agent", "-") in {"0", "1", "2"} for r in research)
    runner_lines = [r for r in caplog.records if r.name == "workers.runner"]
    assert runner_lines
    assert {getattr(r, "job_id", None) for r in runner_lines} == {job.id}
