"""Budgets that hold, measured through the API on the SIMULATED model: a job's wall time against
`max_seconds` (plus the documented finishing allowance) and its tokens against `max_tokens`,
counted both by the job and by the simulated server itself; too-small budgets are a 422.

The bounds asserted are the documented ones (config/default.toml `[budget]`), not tight timings:
the box running these tests may be busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import LiveServer, api_settings, live_server, run_to_end
from workers.settings import BudgetSettings
from workers.sim.faults import SimConfig
from workers.sim.server import SimServer

pytestmark = pytest.mark.anyio

QUESTION = "What is the capital of France?"
# Small reservations that fit the simulated model's short prompts (~300-1300 tokens a round).
SMALL = {
    "forced_round_tokens": 1500,
    "synthesis_tokens": 2500,
    "min_round_tokens": 800,
    "round_completion_tokens": 400,
    "forced_completion_tokens": 300,
    "synthesis_completion_tokens": 400,
    "min_completion_tokens": 64,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # Agents never answer on their own: only a budget ends their research.
    with SimServer(SimConfig(min_rounds=1000)) as server:
        yield server


@pytest.fixture(scope="module")
def api(mini_corpus: Path, sim: SimServer) -> Iterator[LiveServer]:
    llm = {"base_url": f"{sim.base_url}/v1", "model": "heavyresearch-sim", "timeout": 30.0}
    with live_server(api_settings(mini_corpus, llm=llm, budget=SMALL)) as server:
        yield server


@pytest.fixture(scope="module")
def default_api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus)) as server:
        yield server


async def sim_config(sim: SimServer, *, reset: bool = False, **config: Any) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        (await client.post("/sim/config", json={"min_rounds": 1000, **config})).raise_for_status()
        if reset:
            (await client.post("/sim/reset")).raise_for_status()


async def sim_tokens(sim: SimServer) -> int:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        stats = (await client.get("/sim/stats")).json()
    return int(stats["prompt_tokens"]) + int(stats["completion_tokens"])


async def run_job(client: httpx.AsyncClient, **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = await client.post("/v1/research", json={"query": QUESTION, "max_rounds": 200, **body})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    events = await run_to_end(client, job_id)
    job = (await client.get(f"/v1/research/{job_id}")).json()
    return job, events


def wall_seconds(job: dict[str, Any], events: list[dict[str, Any]]) -> float:
    """From the job's start (what max_seconds counts from) to its terminal event."""
    started = datetime.fromisoformat(job["timings"]["started_at"]).timestamp()
    return float(events[-1]["ts"]) - started


# -- max_seconds --------------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [0.05, 1.2], ids=["fast-model", "slow-model"])
async def test_time_budget_holds_with_the_finishing_planned_inside(
    api: LiveServer, sim: SimServer, latency: float
) -> None:
    # A slow model (1.2 s a call) cannot even fit a forced answer or a synthesis in their
    # shares: both are abandoned in time, and the answer comes from the reports.
    await sim_config(sim, latency=latency)
    max_seconds = 3.0
    async with api.client() as client:
        job, events = await run_job(client, agents=3, max_seconds=max_seconds)
    cfg = BudgetSettings(**SMALL)
    assert job["status"] == "succeeded", job
    result = job["result"]
    wall = wall_seconds(job, events)
    assert wall <= max_seconds + cfg.finish_allowance_seconds, (wall, result["budget"])
    assert any("time budget" in reason for reason in result["cut_short"]), result["cut_short"]
    plan = result["budget"]
    research, forced, synthesis = plan["research_seconds"], plan["forced_seconds"], plan["synthesis_seconds"]
    assert plan["max_seconds"] == max_seconds
    assert research + forced + synthesis == pytest.approx(max_seconds, abs=0.01)
    assert research == pytest.approx(max_seconds * (1 - cfg.finish_share), abs=0.01)
    assert plan["finish_allowance_seconds"] == cfg.finish_allowance_seconds
    # The plan is visible from the start, in job.started.
    started = next(e for e in events if e["type"] == "job.started")
    assert started["data"]["budget"]["research_seconds"] == research
    # No research round started after the research share ran out.
    t0 = datetime.fromisoformat(job["timings"]["started_at"]).timestamp()
    late = [
        e
        for e in events
        if e["type"] == "round.started" and not e["data"].get("forced") and e["ts"] - t0 > research + 1.0
    ]
    assert not late, late


# -- max_tokens ---------------------------------------------------------------------------------


async def test_token_budget_never_exceeded_and_the_reservation_pays_for_finishing(
    api: LiveServer, sim: SimServer
) -> None:
    await sim_config(sim, latency=0.0, reset=True)
    max_tokens = 11_000
    async with api.client() as client:
        job, events = await run_job(client, agents=3, max_tokens=max_tokens)
    served = await sim_tokens(sim)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert job["usage"]["total_tokens"] <= max_tokens, job["usage"]
    # What the simulated server itself counted, every call included.
    assert served <= max_tokens, served
    assert served == job["usage"]["total_tokens"]
    assert any("token budget" in reason for reason in result["cut_short"]), result["cut_short"]
    plan = result["budget"]
    assert plan["max_tokens"] == max_tokens
    assert plan["reserved_forced_tokens"] == 3 * SMALL["forced_round_tokens"]
    assert plan["reserved_synthesis_tokens"] == SMALL["synthesis_tokens"]
    assert (
        plan["research_tokens"] == max_tokens - 3 * SMALL["forced_round_tokens"] - SMALL["synthesis_tokens"]
    )
    # The reservations were spent on what they were for: the synthesis model ran, and forced
    # rounds asked the model rather than falling back to the report.
    assert result["synthesis"] == "model"
    forced_calls = [e for e in events if e["type"] == "round.started" and e["data"].get("forced")]
    assert len(forced_calls) == 3
    assert any("taken from the report" not in (a["stop_reason"] or "") for a in job["agents"]), job["agents"]


async def test_a_job_under_a_token_budget_with_parallel_agents_stays_inside_it(
    api: LiveServer, sim: SimServer
) -> None:
    # Many agents at once against a tight pool: holds keep their concurrent calls inside it.
    await sim_config(sim, latency=0.05, reset=True)
    agents = 6
    max_tokens = (
        agents * (SMALL["forced_round_tokens"] + SMALL["min_round_tokens"]) + SMALL["synthesis_tokens"]
    )
    async with api.client() as client:
        job, _ = await run_job(client, agents=agents, max_tokens=max_tokens)
    assert job["status"] == "succeeded", job
    assert job["usage"]["total_tokens"] <= max_tokens
    assert await sim_tokens(sim) <= max_tokens


# -- too small to be useful: 422 at submit -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"agents": 4, "max_tokens": 1000}, "max_tokens", "ask for at least 45056"),
        ({"agents": 1, "max_tokens": 8191}, "max_tokens", "ask for at least 8192"),
        ({"max_seconds": 1}, "max_seconds", "ask for at least 1.34"),
    ],
)
async def test_too_small_budget_is_422(
    default_api: LiveServer, body: dict[str, Any], field: str, says: str
) -> None:
    async with default_api.client() as client:
        response = await client.post("/v1/research", json={"query": QUESTION, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in response.text and says in response.text, error


async def test_smallest_useful_budgets_are_accepted(default_api: LiveServer) -> None:
    async with default_api.client() as client:
        response = await client.post(
            "/v1/research", json={"query": QUESTION, "agents": 1, "max_tokens": 8192, "max_seconds": 1.34}
        )
    assert response.status_code == 202, response.text
