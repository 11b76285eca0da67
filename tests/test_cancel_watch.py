"""Cancel requests seen through one shared poll (`workers.cancel_watch`): one backend call a
period answers every watching job, the poll passes on when the job running it leaves, and
through the engine each of several running jobs is cancelled on request while the others run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from tests.engine_harness import harness, rounds_by_agent
from workers.backend.memory import MemoryBackend
from workers.cancel_watch import CancelWatch
from workers.events import EventType
from workers.jobs import cancel_job
from workers.sim import SimConfig, SimServer

pytestmark = pytest.mark.anyio


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.polls: list[list[str]] = []
        self.polled = anyio.Event()

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        self.polls.append(list(job_ids))
        self.polled.set()
        return await super().cancel_requested(job_ids)

    async def next_poll(self) -> list[str]:
        self.polled = anyio.Event()
        await self.polled.wait()
        return self.polls[-1]


async def test_one_call_a_period_answers_every_watching_job() -> None:
    backend = CountingBackend()
    watch = CancelWatch(backend, interval=0.02)
    ids = [f"job_{n}" for n in range(50)]
    seen: list[str] = []

    async def watch_one(job_id: str) -> None:
        await watch.until_cancelled(job_id)
        seen.append(job_id)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for job_id in ids:
                tg.start_soon(watch_one, job_id)
            for _ in range(5):
                assert sorted(await backend.next_poll()) == sorted(ids)
            await backend.request_cancel("job_7")
            while "job_7" not in seen:
                await backend.next_poll()
            assert seen == ["job_7"]
            assert sorted(await backend.next_poll()) == sorted(set(ids) - {"job_7"})
            for job_id in ids:
                await backend.request_cancel(job_id)
    assert sorted(seen) == sorted(ids)
    assert all(len(poll) > 1 for poll in backend.polls[:5])  # never one call per job


async def test_the_poll_passes_on_when_the_job_running_it_ends() -> None:
    backend = CountingBackend()
    watch = CancelWatch(backend, interval=0.02)
    cancelled: list[str] = []

    async def watch_one(job_id: str, scope: anyio.CancelScope) -> None:
        with scope:
            await watch.until_cancelled(job_id)
            cancelled.append(job_id)

    first, second, third = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_one, "job_a", first)
            assert await backend.next_poll() == ["job_a"]  # job_a's task runs the poll
            tg.start_soon(watch_one, "job_b", second)
            tg.start_soon(watch_one, "job_c", third)
            while len(await backend.next_poll()) < 3:
                pass
            first.cancel()  # job_a ended without a cancel request: its poll must go on
            assert sorted(await backend.next_poll()) == ["job_b", "job_c"]
            await backend.request_cancel("job_c")
            while "job_c" not in cancelled:
                await backend.next_poll()
            assert await backend.next_poll() == ["job_b"]
            await backend.request_cancel("job_b")
    assert cancelled == ["job_c", "job_b"]


async def test_two_runs_of_one_job_in_a_process_both_see_its_cancel() -> None:
    backend = CountingBackend()
    watch = CancelWatch(backend, interval=0.02)
    returned: list[str] = []

    async def watch_one(job_id: str) -> None:
        await watch.until_cancelled(job_id)
        returned.append(job_id)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_one, "job_a")
            tg.start_soon(watch_one, "job_a")
            tg.start_soon(watch_one, "job_b")
            assert sorted(await backend.next_poll()) == ["job_a", "job_b"]  # each id asked once
            await backend.request_cancel("job_a")
            while len(returned) < 2:
                await backend.next_poll()
            await backend.request_cancel("job_b")
    assert returned == ["job_a", "job_a", "job_b"]


async def test_each_of_several_running_jobs_is_cancelled_on_request(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=1000, latency=0.05)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            jobs = [
                await h.submit(f"What is the capital of France? ({n})", agents=2, max_rounds=200)
                for n in range(3)
            ]
            for job in jobs:
                await h.events_until(job.id, lambda ev: len(rounds_by_agent(ev)) == 2)
            for n, job in enumerate(jobs):
                asked = time.time()
                await cancel_job(h.backend, job.id)
                events = await h.run_to_end(job.id, timeout=10)
                assert events[-1].type == EventType.job_cancelled
                assert events[-1].ts - asked < 1.0
                for other in jobs[n + 1 :]:
                    # Still running: it starts new rounds after this one's cancel landed.
                    before = len(await h.backend.read_events(other.id, 0))
                    later = await h.events_until(other.id, lambda ev, count=before: len(ev) > count + 2)
                    assert not later[-1].type.terminal
