"""Outage benchmark (issue 11). Prints figures; asserts nothing about timing.

The same Heavy job twice against the simulated model (in its own process) behind a loopback
proxy: once with no outage, once with the model server down for `--outage` seconds (default 30)
in the middle of the job (a SIMULATED outage: the proxy refuses connections and resets the open
ones, as a stopped server does). The engine runs with the default retry and outage settings
(retry_budget 120 s, backoff from 0.5 s to 20 s with full jitter, outage_budget 600 s);
`--max-delay` changes the backoff ceiling, which bounds how late a retry notices the server is
back (the job waits for its slowest agent).

Printed per run: wall time, the job's status, the tokens the engine counted (the job's usage)
beside the tokens the simulated server says it served (`/sim/stats`), and outage events.
Calls cut by the outage were served (counted by the server) but never reached the engine: the
difference between the two token figures is those calls.

    .venv/bin/python -m bench.bench_outage [--outage 30] [--agents 4] [--rounds 10] [--max-delay 20]
        [--retry-budget 120] [--outage-pause 10]
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import anyio
import anyio.to_thread
import httpx

from bench._common import corpus_file, settings_for, sim_process
from workers.engine import open_engine
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.models import ResearchRequest
from workers.sim.outage import OutageProxy


async def sim_stats(sim: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        data: dict[str, Any] = (await client.get(f"{sim}/sim/stats")).json()
        return data


async def run(sim: str, proxy: OutageProxy, corpus: Any, args: argparse.Namespace, outage: float) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"{sim}/sim/reset")
    settings = settings_for(
        corpus,
        f"http://127.0.0.1:{proxy.port}",
        llm={
            "base_url": f"http://127.0.0.1:{proxy.port}/v1",
            "model": "heavyresearch-sim",
            "retry_max_delay": args.max_delay,
            "retry_budget": args.retry_budget,
        },
        agent={"outage_pause": args.outage_pause},
    )
    request = ResearchRequest(
        query="What is the capital of Valdoria?", agents=args.agents, max_rounds=args.rounds
    )
    async with open_engine(settings, run_worker=True) as engine:
        started = time.perf_counter()
        record, _ = await submit_job(engine.backend, request, simulated=True)
        events: list[Event] = []

        async def take_down() -> None:
            # Halfway: once the agents have made about half the research calls of the job.
            half = args.agents * args.rounds // 2
            while (await sim_stats(sim))["calls"] < half:  # noqa: ASYNC110 - the count is in another process
                await anyio.sleep(0.05)
            proxy.down_for(outage)

        async with anyio.create_task_group() as tg:
            if outage:
                tg.start_soon(take_down)
            while not (events and events[-1].type.terminal):
                events += await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
            tg.cancel_scope.cancel()
        wall = time.perf_counter() - started
        final = await engine.backend.get_job(record.id)
    assert final is not None
    stats = await sim_stats(sim)
    served = stats["prompt_tokens"] + stats["completion_tokens"]
    paused = [e for e in events if e.type == EventType.agent_paused]
    usage = [e for e in events if e.type == EventType.usage]
    estimated = sum(
        e.data["prompt_tokens"] + e.data["completion_tokens"]
        if e.data.get("estimated")
        else e.data.get("estimated_tokens", 0)
        for e in usage
    )
    label = f"outage {outage:g} s" if outage else "no outage"
    print(f"\n{label}:")
    print(f"  wall time              {wall:8.1f} s   status {final.status.value}")
    print(
        f"  tokens counted         {final.usage.total_tokens:8d}   ({final.usage.calls} calls; "
        f"{estimated} of the tokens estimated: attempts cut by the outage)"
    )
    print(f"  tokens served (sim)    {served:8d}   ({stats['calls']} calls, {stats['completed']} completed)")
    print(f"  agent.paused events    {len(paused):8d}")
    failed = [e for e in events if e.type == EventType.agent_failed]
    if failed:
        print(f"  agents failed          {len(failed):8d}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.3)
    # The backoff ceiling: how late, at worst, a retry notices that the server is back.
    parser.add_argument("--max-delay", type=float, default=20.0)
    # Shorter than the outage: calls give up and the agents pause (agent.paused) instead.
    parser.add_argument("--retry-budget", type=float, default=120.0)
    parser.add_argument("--outage-pause", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print("Figures from a shared, busy machine: compare the two runs, not absolute numbers.")
    with (
        corpus_file() as corpus,
        sim_process("--latency", str(args.latency), "--min-rounds", str(args.rounds - 1)) as sim,
        OutageProxy(int(sim.rsplit(":", 1)[1])) as proxy,
    ):
        await run(sim, proxy, corpus, args, 0.0)
        await run(sim, proxy, corpus, args, args.outage)


if __name__ == "__main__":
    anyio.run(main)
