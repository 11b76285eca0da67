"""The engine's own metrics (`workers/metrics.py`) agree with what a job did, as its event log
tells it: a real job on the simulated model over HTTP, in process (memory backend)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.engine_harness import harness
from tests.fake_sandboxfusion import FakeSandboxFusion
from tests.metric_samples import delta, samples
from tests.test_python_remote import CTX, remote_tool
from workers.events import EventType
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = pytest.mark.anyio


async def test_a_job_s_metrics_match_its_event_log(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=2)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            before = samples()
            record = await h.submit("What is the capital of Valdoria?", agents=2, max_rounds=6)
            events = await h.run_to_end(record.id)
            after = samples()
            job = await h.backend.get_job(record.id)
    assert events[-1].type == EventType.job_succeeded
    assert job is not None and job.attempts == 1

    rounds = Counter(bool(e.data.get("forced")) for e in events if e.type == EventType.round_started)
    assert rounds[False] > 0
    assert delta(before, after, "hr_rounds_total", forced="false") == rounds[False]
    assert delta(before, after, "hr_rounds_total", forced="true") == rounds[True]
    tools = Counter(str(e.data["name"]) for e in events if e.type == EventType.tool_result)
    assert tools
    for tool, n in tools.items():
        assert delta(before, after, "hr_tool_calls_total", tool=tool) == n
    ended = sum(1 for e in events if e.type in (EventType.agent_finished, EventType.agent_failed))
    assert delta(before, after, "hr_agents_ended_total") == ended

    # The simulated model answered every call at once: one attempt each, all ok.
    research = delta(before, after, "hr_llm_calls_total", role="research", outcome="ok")
    assert research >= rounds[False]
    assert delta(before, after, "hr_llm_calls_total", role="synthesis", outcome="ok") == 1
    assert delta(before, after, "hr_llm_calls_total", outcome="failed") == 0
    assert delta(before, after, "hr_llm_attempts_total", outcome="ok") == delta(
        before, after, "hr_llm_calls_total", outcome="ok"
    )
    assert delta(before, after, "hr_llm_attempt_seconds_count") == delta(
        before, after, "hr_llm_attempts_total"
    )
    assert delta(before, after, "hr_llm_limiter_wait_seconds_count") == delta(
        before, after, "hr_llm_attempts_total"
    )
    for role in ("research", "synthesis"):  # limiter waits are told apart by role too
        waits = delta(before, after, "hr_llm_limiter_wait_seconds_count", role=role)
        assert waits == delta(before, after, "hr_llm_attempts_total", role=role) > 0
    # The job's usage is its research and synthesis calls' (page summaries are the tools').
    prompt, completion = (
        sum(
            delta(before, after, "hr_llm_tokens_total", kind=kind, role=role)
            for role in ("research", "synthesis")
        )
        for kind in ("prompt", "completion")
    )
    assert (prompt, completion) == (job.usage.prompt_tokens, job.usage.completion_tokens)
    assert delta(before, after, "hr_job_attempts_total") == 1
    assert delta(before, after, "hr_jobs_ended_total", status="succeeded") == 1


async def test_sandbox_runs_are_counted_by_sandbox_and_outcome() -> None:
    with FakeSandboxFusion(mode="sandbox_error") as broken, FakeSandboxFusion() as good:
        tool = remote_tool(broken.base_url, good.base_url)
        before = samples()
        try:
            await tool({"code": "print(1)"}, CTX)
        finally:
            await tool.aclose()
        after = samples()
    broken_name, good_name = (f"remote {fake.base_url}" for fake in (broken, good))
    assert delta(before, after, "hr_sandbox_runs_total", sandbox=broken_name, outcome="unavailable") == 1
    assert delta(before, after, "hr_sandbox_runs_total", sandbox=good_name, outcome="ok") == 1
    assert delta(before, after, "hr_sandbox_run_seconds_count", sandbox=good_name) == 1
