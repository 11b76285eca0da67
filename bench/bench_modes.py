"""ReAct beside Heavy on the same questions (issue 10). Prints figures; asserts nothing.

Both modes run the same questions on the SIMULATED model (in its own process, 50 ms latency,
research policy answering from round 8 on) and the mini corpus:

1. prompt tokens per research call as the agent goes (round 1, 2, 4, 8): ReAct's transcript
   grows with every turn and tool response, IterResearch's workspace stays bounded;
2. wall time and total tokens per job (every agent call and the synthesis), with 1 and 4 agents;
3. one long run per mode (the policy answers from round 32): prompt tokens at rounds 8, 16 and
   32, and ReAct under a small context budget (8K tokens), where the final turn comes early.

Token counts are the simulated model's (four characters a token). The machine is shared, so
wall times are indicative only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio
import httpx

from bench._common import corpus_file, settings_for, sim_process
from workers.engine import open_engine
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.models import Mode, ResearchRequest

QUESTIONS = [
    "Who founded the Halvard Observatory?",
    "What is the capital of Valdoria?",
    "Who made the first ascent of Mount Aldric?",
    "When was the Ferrant Bridge built and by whom?",
]
SHOWN_ROUNDS = (1, 2, 4, 8)
MIN_ROUNDS = 8
LATENCY = 0.05


async def run_job(engine: Any, request: ResearchRequest) -> tuple[list[Event], float, int]:
    started = time.perf_counter()
    record, _ = await submit_job(engine.backend, request, simulated=True)
    events: list[Event] = []
    while not (events and events[-1].type.terminal):
        events += await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
    wall = time.perf_counter() - started
    final = await engine.backend.get_job(record.id)
    assert final is not None and events[-1].type == EventType.job_succeeded, events[-1]
    return events, wall, final.usage.total_tokens


def prompt_by_round(events: list[Event]) -> dict[int, list[int]]:
    """Round -> the research calls' prompt tokens in that round (one per agent)."""
    out: dict[int, list[int]] = {}
    for event in events:
        if event.type == EventType.usage and event.agent is not None and event.round is not None:
            out.setdefault(event.round, []).append(int(event.data["prompt_tokens"]))
    return out


LONG_ROUNDS = 32
SMALL_BUDGET = 8000


async def long_runs(sim: str, corpus: Any) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{sim}/sim/config", json={"min_rounds": LONG_ROUNDS, "latency": LATENCY}
        )
        response.raise_for_status()
    print()
    print(f"3. One long run (answers from round {LONG_ROUNDS}), 1 agent, prompt tokens per call")
    print(f"   {'run':>22} {'r8':>6} {'r16':>6} {'r32':>6} {'max':>6} {'total tokens':>13} {'forced at':>10}")
    runs: list[tuple[str, Mode, int]] = [
        ("heavy", "heavy", 110_000),
        ("react (110K budget)", "react", 110_000),
        (f"react ({SMALL_BUDGET // 1000}K budget)", "react", SMALL_BUDGET),
    ]
    for label, mode, budget in runs:
        settings = settings_for(corpus, sim, agent={"react_context_tokens": budget})
        async with open_engine(settings, run_worker=True) as engine:
            request = ResearchRequest(query=QUESTIONS[0], agents=1, max_rounds=LONG_ROUNDS + 4, mode=mode)
            events, _, tokens = await run_job(engine, request)
        sizes = {r: v[0] for r, v in prompt_by_round(events).items()}
        forced = [e.round for e in events if e.type == EventType.round_started and e.data.get("forced")]
        shown = " ".join(f"{sizes.get(r, 0):>6}" for r in (8, 16, 32))
        where = str(forced[0]) if forced else "-"
        print(f"   {label:>22} {shown} {max(sizes.values()):>6} {tokens:>13} {where:>10}")


async def main() -> None:
    with (
        corpus_file() as corpus,
        sim_process("--min-rounds", str(MIN_ROUNDS), "--latency", str(LATENCY)) as sim,
    ):
        settings = settings_for(corpus, sim)
        async with open_engine(settings, run_worker=True) as engine:
            # Warm-up: connections, caches, imports.
            await run_job(engine, ResearchRequest(query=QUESTIONS[0], agents=1, max_rounds=4))
            rows: dict[tuple[Mode, int], dict[str, list[float]]] = {}
            per_round: dict[Mode, dict[int, list[int]]] = {"heavy": {}, "react": {}}
            for agents in (1, 4):
                for mode in ("heavy", "react"):
                    stats: dict[str, list[float]] = {"wall": [], "tokens": [], "calls": []}
                    for question in QUESTIONS:
                        request = ResearchRequest(query=question, agents=agents, max_rounds=16, mode=mode)
                        events, wall, tokens = await run_job(engine, request)
                        stats["wall"].append(wall)
                        stats["tokens"].append(tokens)
                        stats["calls"].append(sum(1 for e in events if e.type == EventType.usage))
                        if agents == 1:
                            for round_, sizes in prompt_by_round(events).items():
                                per_round[mode].setdefault(round_, []).extend(sizes)
                    rows[(mode, agents)] = stats
        report(rows, per_round)
        await long_runs(sim, corpus)


def report(
    rows: dict[tuple[Mode, int], dict[str, list[float]]], per_round: dict[Mode, dict[int, list[int]]]
) -> None:
    print("SIMULATED model, mini corpus; busy shared 2-core machine: wall times are indicative.")
    print(f"{len(QUESTIONS)} questions, answers from round {MIN_ROUNDS}, {LATENCY * 1000:.0f} ms latency.")
    print()
    print("1. Prompt tokens per research call (1 agent, mean over the questions)")
    print(f"   {'round':>5} {'heavy':>8} {'react':>8} {'react/heavy':>12}")
    for round_ in SHOWN_ROUNDS:
        heavy = per_round["heavy"].get(round_)
        react = per_round["react"].get(round_)
        if not heavy or not react:
            continue
        h, r = statistics.mean(heavy), statistics.mean(react)
        print(f"   {round_:>5} {h:>8.0f} {r:>8.0f} {r / h:>11.2f}x")
    print()
    print("2. Per job (mean over the questions; tokens = every research call + synthesis)")
    print(f"   {'agents':>6} {'mode':>6} {'wall s':>7} {'total tokens':>13} {'LLM calls':>10}")
    for agents in (1, 4):
        for mode in ("heavy", "react"):
            stats = rows[(mode, agents)]
            print(
                f"   {agents:>6} {mode:>6} {statistics.mean(stats['wall']):>7.2f} "
                f"{statistics.mean(stats['tokens']):>13.0f} {statistics.mean(stats['calls']):>10.1f}"
            )
        ratio = statistics.mean(rows[("react", agents)]["tokens"]) / statistics.mean(
            rows[("heavy", agents)]["tokens"]
        )
        print(f"   {agents:>6} react/heavy total tokens: {ratio:.2f}x")


if __name__ == "__main__":
    anyio.run(main)
