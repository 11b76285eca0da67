"""Poison jobs: a job whose runs keep crashing their workers ends `failed` after
`worker.max_attempts` runs, with the last error and a job.failed event, instead of being
handed back to the queue forever.

Memory backend, in process: the crash is a job-store fault the worker does not expect (a test
double of the memory backend whose checkpoint saves raise, standing in for a bug). Redis and
sqlite, end to end: the process running the job is killed (-9) mid-research, again and again,
and a new one started each time (`tests/test_poison_processes.py`).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.backend_contract import eventually
from tests.engine_harness import engine_settings, harness
from workers.backend import MemoryBackend
from workers.engine import open_engine
from workers.events import EventType
from workers.jobs import submit_job
from workers.metrics import engine_metrics
from workers.models import AgentCheckpoint, JobStatus, ResearchRequest
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.worker import Worker

pytestmark = pytest.mark.anyio


class CrashingBackend(MemoryBackend):
    """A memory backend whose checkpoint saves fail with an error nobody handles."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes = 0

    async def save_checkpoint(self, job_id: str, checkpoint: AgentCheckpoint) -> None:
        self.crashes += 1
        raise RuntimeError(f"checkpoint store on fire (crash {self.crashes})")


def sample(name: str, **labels: str) -> float:
    value = engine_metrics().registry.get_sample_value(name, labels or None)
    return value or 0.0


async def test_a_job_that_crashes_every_run_fails_after_max_attempts(mini_corpus: Path) -> None:
    backend = CrashingBackend()
    attempts_before = sample("hr_job_attempts_total")
    poisoned_before = sample("hr_jobs_poisoned_total")
    with SimServer(SimConfig(min_rounds=2)) as sim:
        settings = engine_settings(mini_corpus, sim.base_url, worker={"max_attempts": 3})
        async with open_engine(settings, run_worker=True, backend=backend) as engine:
            record, _ = await submit_job(
                engine.backend,
                ResearchRequest(query="What is the capital of Valdoria?", agents=1),
                simulated=True,
            )
            events = []
            with anyio.fail_after(60):
                while not (events and events[-1].type.terminal):
                    after = events[-1].seq if events else 0
                    events.extend(await engine.backend.wait_events(record.id, after, 1.0))
            job = await engine.backend.get_job(record.id)
            worker = engine.worker
            assert worker is not None

            async def acked() -> bool:  # the worker acks the job it failed
                return not worker.running_jobs and await backend.queue_depth() == 0

            await eventually(acked)
            assert await engine.backend.queue_depth() == 0

    assert job is not None
    assert job.status == JobStatus.failed
    assert job.attempts == 3
    runs = backend.crashes
    assert job.error is not None
    assert "gave up after 3 attempt(s)" in job.error
    # The last run's own error: its crash, the last the store saw.
    assert f"RuntimeError: checkpoint store on fire (crash {runs})" in job.error
    [failed] = [e for e in events if e.type == EventType.job_failed]
    assert events[-1] == failed
    assert failed.data["outcome"] == "poisoned"
    assert failed.data["attempts"] == 3
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # A later run appends no second job.started: the event is keyed.
    assert [e.type for e in events].count(EventType.job_started) == 1
    assert sample("hr_job_attempts_total") - attempts_before == 3  # three runs, no fourth
    assert sample("hr_jobs_poisoned_total") - poisoned_before == 1


async def test_runs_stopped_by_a_drain_give_their_attempt_back(mini_corpus: Path) -> None:
    """A graceful stop (a deploy's rolling restart) is not the job's fault: a job drained from
    more workers than `max_attempts` still finishes, its record counting only the run that did."""
    with SimServer(SimConfig(min_rounds=8, latency=0.02)) as sim:
        async with (
            harness(mini_corpus, sim.base_url, worker={"max_attempts": 2}) as h,
            anyio.create_task_group() as tg,
        ):
            worker, runner = h.engine.worker, h.engine.runner
            assert worker is not None and runner is not None
            job = await h.submit("What is the capital of France?", agents=2, max_rounds=20)
            rounds = 0
            for drain in range(3):
                # Each worker gets further before its drain, so every run is a real one.
                rounds += 2
                await h.events_until(
                    job.id, lambda ev, n=rounds: sum(e.type == EventType.round_started for e in ev) >= n
                )
                running = await h.backend.get_job(job.id)
                assert running is not None and running.attempts == 1, (drain, running)
                worker.drain()
                with anyio.fail_after(10):
                    while job.id in worker.running_jobs:  # noqa: ASYNC110 - polls observable state
                        await anyio.sleep(0.01)
                handed_back = await h.backend.get_job(job.id)
                assert handed_back is not None and handed_back.attempts == 0, (drain, handed_back)
                worker = Worker(h.backend, runner, max_jobs=1, heartbeat_seconds=1)
                tg.start_soon(worker.run)
            events = await h.run_to_end(job.id)
            record = await h.backend.get_job(job.id)
            worker.drain()
    assert events[-1].type == EventType.job_succeeded, events[-1]
    assert record is not None and record.status == JobStatus.succeeded
    assert record.attempts == 1
