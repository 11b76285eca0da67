"""The Heavy engine end to end: real simulated model over HTTP, real corpus, memory backend."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import anyio
import pytest

from tests.engine_harness import harness, rounds_by_agent
from workers.events import Event, EventType
from workers.models import AgentStatus, JobStatus
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.worker import Worker

pytestmark = pytest.mark.anyio


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(min_rounds=3)) as server:
        yield server


def assert_gapless(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(a.ts <= b.ts for a, b in pairwise(events))


def assert_cites_only_retrieved(result_report: str, answer: str, source_ids: set[int]) -> None:
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", result_report + answer)}
    assert cited <= source_ids


async def test_four_agent_job_on_wiki_corpus(wiki_corpus: Path, sim: SimServer) -> None:
    async with harness(wiki_corpus, sim.base_url) as h:
        job = await h.submit("Who directed the film 2001: A Space Odyssey?", agents=4, max_rounds=12)
        events = await h.run_to_end(job.id)
        record = await h.backend.get_job(job.id)
        registry = await h.backend.get_sources(job.id)

    assert record is not None and record.status == JobStatus.succeeded, record
    assert events[-1].type == EventType.job_succeeded
    assert_gapless(events)
    result = record.result
    assert result is not None and result.answer
    assert result.simulated
    assert result.sources, "the answer cites no source"
    # Every source in the result was retrieved by the job; every citation points into sources[].
    assert {s.registry_id for s in result.sources} <= set(registry)
    assert {s.url for s in result.sources} <= {s.url for s in registry.values()}
    assert_cites_only_retrieved(result.report, result.answer, {s.id for s in result.sources})
    assert "Kubrick" in result.answer + result.report
    # Per agent: started, then rounds 1..k in order, then finished.
    rounds = rounds_by_agent(events)
    assert sorted(rounds) == [0, 1, 2, 3]
    for agent, seen in rounds.items():
        assert seen == list(range(1, len(seen) + 1)), (agent, seen)
        own = [e.type for e in events if e.agent == agent]
        assert own[0] == EventType.agent_started and own[-1] == EventType.agent_finished
    types = [e.type for e in events]
    assert types.index(EventType.synthesis_started) > max(
        i for i, t in enumerate(types) if t == EventType.agent_finished
    )
    assert all(a.status == AgentStatus.finished for a in record.agents)


async def test_job_survives_30_percent_errors_and_10_percent_malformed(mini_corpus: Path) -> None:
    # ~80 calls, so every fault kind shows up (the faults are seeded, the interleaving is not).
    config = SimConfig(min_rounds=8, rate_429=0.15, rate_500=0.15, rate_malformed=0.10, seed=7)
    with SimServer(config) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit("What is the capital of France?", agents=8, max_rounds=24)
            events = await h.run_to_end(job.id, timeout=120)
            record = await h.backend.get_job(job.id)
            stats = await h.sim_stats()
    assert record is not None and record.status == JobStatus.succeeded, record.error if record else None
    assert record.result is not None and record.result.answer
    assert_gapless(events)
    faults = stats["faults"]
    assert faults.get("429", 0) > 0 and faults.get("500", 0) > 0 and faults.get("malformed", 0) > 0, stats
    # Malformed outputs went back to the model as observations instead of breaking agents.
    assert any(e.type == EventType.round_started for e in events) and record.result.agents_used, record.result


async def test_hanging_endpoint_still_gets_a_forced_answer_at_the_deadline(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=1000)) as sim:
        async with harness(mini_corpus, sim.base_url, agent={"forced_answer_grace": 0.5}) as h:
            job = await h.submit("What is the capital of France?", agents=2, max_rounds=200, max_seconds=4)

            def researched(events: list[Event]) -> bool:
                return (
                    all(len(r) >= 3 for r in rounds_by_agent(events).values())
                    and len(rounds_by_agent(events)) == 2
                )

            await h.events_until(job.id, researched)
            await h.sim_config(min_rounds=1000, rate_hang=1.0, hang_seconds=3600)
            events = await h.run_to_end(job.id, timeout=30)
            record = await h.backend.get_job(job.id)
    assert record is not None and record.status == JobStatus.succeeded, record
    result = record.result
    assert result is not None
    assert result.cut_short, "the result must say the job was cut short"
    assert result.answer and not result.answer.startswith("No answer"), result.answer
    forced = [e for e in events if e.type == EventType.round_started and e.data.get("forced")]
    assert {e.agent for e in forced} == {0, 1}


async def test_cancel_stops_every_agent_within_a_second(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=1000, latency=0.05)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit("What is the capital of France?", agents=4, max_rounds=200)
            await h.events_until(
                job.id,
                lambda ev: (
                    len(rounds_by_agent(ev)) == 4 and all(len(r) >= 2 for r in rounds_by_agent(ev).values())
                ),
            )
            from workers.jobs import cancel_job

            asked = time.time()
            await cancel_job(h.backend, job.id)
            events = await h.run_to_end(job.id, timeout=10)
            assert events[-1].type == EventType.job_cancelled
            assert events[-1].ts - asked < 1.0
            # The terminal event is written after the agents' task group has exited: nothing
            # of this job runs any more, and nothing is logged after it.
            assert (await h.backend.read_events(job.id, events[-1].seq)) == []
            record = await h.backend.get_job(job.id)
    assert record is not None and record.status == JobStatus.cancelled


async def test_job_resumes_from_checkpoints_at_the_right_round(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=8, latency=0.02)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            worker = h.engine.worker
            assert worker is not None
            job = await h.submit("What is the capital of France?", agents=3, max_rounds=20)
            before = await h.events_until(
                job.id,
                lambda ev: (
                    len(rounds_by_agent(ev)) == 3 and all(len(r) >= 3 for r in rounds_by_agent(ev).values())
                ),
            )
            # The worker dies mid-job (drain = stop and hand the job back).
            worker.drain()
            with anyio.fail_after(10):
                while job.id in worker.running_jobs:  # noqa: ASYNC110 - polls observable state
                    await anyio.sleep(0.01)
            checkpoints = await h.backend.load_checkpoints(job.id)
            done_rounds = {a: cp.round for a, cp in checkpoints.items()}
            assert all(r >= 2 for r in done_rounds.values()), done_rounds
            # A second worker picks the job up and continues.
            second = Worker(h.backend, h.engine.runner, max_jobs=2, heartbeat_seconds=1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(second.run)
                events = await h.run_to_end(job.id)
                second.drain()
            record = await h.backend.get_job(job.id)
    assert record is not None and record.status == JobStatus.succeeded
    assert len(events) >= len(before)
    assert_gapless(events)
    for agent, seen in rounds_by_agent(events).items():
        # No round redone: round numbers continue from the checkpoint without repeats.
        assert seen == list(range(1, len(seen) + 1)), (agent, seen)
        assert seen[-1] > done_rounds[agent]
    # Resumed agents were not restarted.
    assert sum(1 for e in events if e.type == EventType.agent_started) == 3


async def test_a_worker_whose_source_ids_are_taken_lets_the_job_go(
    mini_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Source ids taken in the store by other urls mean another process runs the job too (this
    one outlived its lease): the worker stops it and lets it go as a lost lease, with no crash
    note and no release, and the job is taken over once the lease lapses."""
    caplog.set_level(logging.INFO, logger="workers.worker")
    with SimServer(SimConfig(min_rounds=6, latency=0.05)) as sim:
        async with harness(
            mini_corpus, sim.base_url, worker={"lease_seconds": 2.0, "heartbeat_seconds": 0.5}
        ) as h:
            worker = h.engine.worker
            assert worker is not None
            job = await h.submit("What is the capital of France?", agents=2, max_rounds=12)
            await h.events_until(job.id, lambda ev: any(e.type == EventType.round_started for e in ev))
            # "Another holder" of the job stores sources under the ids this run hands out next.
            for n in range(40):
                await h.backend.register_source(job.id, f"https://elsewhere.example/{n}", "taken")
            with anyio.fail_after(30):
                while job.id in worker.running_jobs:  # noqa: ASYNC110 - polls observable state
                    await anyio.sleep(0.01)
            let_go = await h.backend.get_job(job.id)
            # Not handed back to the queue: its lease is still held, until it lapses.
            assert await h.backend.claim("another-worker", 0.05) is None
            events = await h.run_to_end(job.id, timeout=60)
            record = await h.backend.get_job(job.id)
    assert let_go is not None and not let_go.status.terminal, let_go
    assert let_go.last_error is None  # no crash note
    worker_lines = [r.getMessage() for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert any("source ids already taken" in line for line in worker_lines), worker_lines
    assert any("job lost to another worker" in line for line in worker_lines), worker_lines
    assert not any("job released" in line or "crashed" in line for line in worker_lines), worker_lines
    # Taken over after the lease lapsed, the job finishes from the store's sources.
    assert record is not None and record.status == JobStatus.succeeded, record
    assert events[-1].type == EventType.job_succeeded
