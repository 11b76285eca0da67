"""Budgets benchmark (issue 10, part B). Prints figures; asserts nothing about timing.

Heavy jobs on the simulated model (its own process) whose agents never answer on their own, so
only a budget ends them:

- `max_seconds`: wall time from the job's start to its terminal event, against `max_seconds`
  and the documented bound `max_seconds + budget.finish_allowance_seconds`, at several model
  latencies (a slow model cannot fit even a forced answer in its share);
- `max_tokens`: tokens the job counted and tokens the simulated server served, against
  `max_tokens`, with small reservations that fit the simulation's short prompts.

    .venv/bin/python -m bench.bench_budgets
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx

from bench._common import corpus_file, settings_for, sim_process
from workers.engine import open_engine
from workers.events import Event
from workers.jobs import submit_job
from workers.models import JobRecord, ResearchRequest

QUESTION = "What is the capital of Valdoria?"
SMALL = {
    "forced_round_tokens": 1500,
    "synthesis_tokens": 2500,
    "min_round_tokens": 800,
    "round_completion_tokens": 400,
    "forced_completion_tokens": 300,
    "synthesis_completion_tokens": 400,
    "min_completion_tokens": 64,
}


async def run(engine: Any, request: ResearchRequest) -> tuple[JobRecord, list[Event]]:
    record, _ = await submit_job(engine.backend, request, simulated=True)
    events: list[Event] = []
    while not (events and events[-1].type.terminal):
        events += await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
    final = await engine.backend.get_job(record.id)
    assert final is not None
    return final, events


async def sim(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST `body` to the simulated server's scripting surface (GET when there is none)."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await (client.get(path) if body is None else client.post(path, json=body))
        result: dict[str, Any] = response.json()
        return result


async def main() -> None:
    with corpus_file() as corpus, sim_process("--min-rounds", "1000") as url:
        settings = settings_for(corpus, url, budget=SMALL)
        allowance = settings.budget.finish_allowance_seconds
        async with open_engine(settings, run_worker=True) as engine:
            print(f"max_seconds (4 agents; bound = max_seconds + {allowance:.1f} s)")
            print(
                f"{'latency':>8} {'max_s':>6} {'wall':>7} {'over':>7} {'synthesis':>10}  forced answers from"
            )
            for max_seconds in (3.0, 10.0):
                for latency in (0.05, 0.5, 1.5):
                    await sim(url, "/sim/config", {"min_rounds": 1000, "latency": latency})
                    request = ResearchRequest(
                        query=QUESTION, agents=4, max_rounds=256, max_seconds=max_seconds
                    )
                    record, events = await run(engine, request)
                    assert record.started_at is not None and record.result is not None
                    wall = events[-1].ts - record.started_at
                    from_report = sum("from the report" in (a.stop_reason or "") for a in record.agents)
                    print(
                        f"{latency:>8.2f} {max_seconds:>6.1f} {wall:>7.2f} {wall - max_seconds:>+7.2f} "
                        f"{record.result.synthesis:>10}  model {4 - from_report}, report {from_report}"
                    )
            print("\nmax_tokens (latency 0; job's count and the server's count)")
            print(
                f"{'agents':>6} {'max_tokens':>10} {'job':>7} {'served':>7} {'job/max':>7} {'synthesis':>10}"
            )
            await sim(url, "/sim/config", {"min_rounds": 1000, "latency": 0.0})
            for agents, max_tokens in ((2, 8_000), (3, 11_000), (4, 20_000), (8, 40_000)):
                await sim(url, "/sim/reset", {})
                request = ResearchRequest(
                    query=QUESTION, agents=agents, max_rounds=256, max_tokens=max_tokens
                )
                record, _ = await run(engine, request)
                stats = await sim(url, "/sim/stats")
                served = stats["prompt_tokens"] + stats["completion_tokens"]
                used = record.usage.total_tokens
                assert record.result is not None
                print(
                    f"{agents:>6} {max_tokens:>10} {used:>7} {served:>7} {used / max_tokens:>7.2f} "
                    f"{record.result.synthesis:>10}"
                )


if __name__ == "__main__":
    anyio.run(main)
