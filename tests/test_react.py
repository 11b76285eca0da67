"""ReAct mode beside Heavy: the released loop end to end on the SIMULATED model over HTTP.

The API over real HTTP runs both modes (memory backend); the in-process engine shows the
transcript (the ReAct checkpoint), the context rule, a real tokenizer, and resume. The Redis
scale-out test of ReAct (kill -9 of a worker) is in tests/test_react_scaleout.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.engine_harness import engine_settings, harness, rounds_by_agent
from tests.fake_openai import FakeOpenAI, Step
from tests.server import LiveServer, api_settings, live_server, run_to_end
from workers.agent.context import JobContext, TokenBudget
from workers.agent.iter_research import AgentSpec
from workers.agent.observation import wrap
from workers.agent.prompts import PromptSet
from workers.agent.react import STOP, ReActAgent
from workers.agent.tokens import EstimateCounter, count_messages, make_counter
from workers.backend import MemoryBackend
from workers.backend.base import Backend
from workers.engine import open_engine
from workers.events import EventType
from workers.jobs import submit_job
from workers.llm.types import ChatModel
from workers.models import AgentCheckpoint, AgentStatus, JobStatus, ResearchRequest
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.tools.base import Tool
from workers.worker import Worker

pytestmark = pytest.mark.anyio


def react_agent(
    job_id: str, backend: Backend, model: ChatModel, tools: dict[str, Tool], context_tokens: int = 110_000
) -> ReActAgent:
    ctx = JobContext(
        job_id=job_id,
        question=QUESTION,
        backend=backend,
        model=model,
        tools=tools,
        prompts=PromptSet.load(),
        max_rounds=32,
        deadline=None,
        budget=TokenBudget(limit=None),
        context_tokens=context_tokens,
    )
    return ReActAgent(ctx, AgentSpec(index=0, seed=0, temperature=0.6))


QUESTION = "Who founded the Halvard Observatory?"
CALL = '<tool_call>\n{"name": "search", "arguments": {"query": ["Halvard Observatory"]}}\n</tool_call>'


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def api(
    request: pytest.FixtureRequest, mini_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The API with the engine in its process, on the memory or the sqlite backend (Redis, with
    worker processes: tests/test_react_scaleout.py)."""
    backend: dict[str, Any] = {"backend": request.param}
    if request.param == "sqlite":
        backend["sqlite"] = {"path": str(tmp_path_factory.mktemp("sqlite") / "state.sqlite")}
    with live_server(api_settings(mini_corpus, **backend)) as server:
        yield server


def usage_by_agent(events: list[dict[str, Any]]) -> dict[int, list[int]]:
    prompts: dict[int, list[int]] = {}
    for event in events:
        if event["type"] == "usage" and event.get("agent") is not None:
            prompts.setdefault(event["agent"], []).append(event["data"]["prompt_tokens"])
    return prompts


@pytest.mark.parametrize("mode", ["heavy", "react"])
async def test_both_modes_end_to_end_over_http(api: LiveServer, mode: str) -> None:
    async with api.client() as client:
        response = await client.post("/v1/research", json={"query": QUESTION, "agents": 2, "mode": mode})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["request"]["mode"] == mode
        events = await run_to_end(client, job["id"])
        final = (await client.get(f"/v1/research/{job['id']}")).json()
    assert events[-1]["type"] == "job.succeeded", events[-1]
    assert events[0]["data"]["mode"] == mode
    assert next(e for e in events if e["type"] == "job.started")["data"]["mode"] == mode
    assert final["status"] == "succeeded" and final["request"]["mode"] == mode
    assert "Brandvik" in final["result"]["answer"]
    assert final["result"]["sources"], final["result"]
    assert final["result"]["synthesis"] == "model"
    assert [a["status"] for a in final["agents"]] == ["finished", "finished"]
    assert {e["data"]["name"] for e in events if e["type"] == "tool.called"} == {"search", "visit"}
    prompts = usage_by_agent(events)
    if mode == "react":
        # One growing transcript: every call's prompt is larger than the one before.
        for agent, sizes in prompts.items():
            assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), (agent, sizes)
        assert all(e["type"] != "report.updated" for e in events)
    else:
        assert any(e["type"] == "report.updated" for e in events)


async def test_mode_is_validated(api: LiveServer) -> None:
    async with api.client() as client:
        response = await client.post("/v1/research", json={"query": QUESTION, "mode": "chain"})
    assert response.status_code == 422
    assert "mode" in response.text


async def test_react_transcript_is_the_released_loop(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=3)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit(QUESTION, agents=1, mode="react")
            events = await h.run_to_end(job.id)
            cp = (await h.backend.load_checkpoints(job.id))[0]
            assert h.engine.runner is not None
            offered = set(h.engine.runner.parts.tools)
    assert events[-1].type == EventType.job_succeeded
    system, question, *turns = cp.transcript
    assert system["role"] == "system" and question == {"role": "user", "content": QUESTION}
    # The tools' JSON signatures inside <tools>, the call format and the date.
    tools = system["content"].split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    signatures = [json.loads(line) for line in tools.splitlines()]
    # The tools this job really has (parse_file only with uploads), no others.
    assert {s["function"]["name"] for s in signatures} == offered - {"parse_file"}
    assert {"search", "visit", "google_scholar"} <= offered
    visit = next(s for s in signatures if s["function"]["name"] == "visit")["function"]
    assert visit["parameters"]["properties"]["url"] == {"type": "array", "items": {"type": "string"}}
    assert visit["parameters"]["required"] == ["url", "goal"]
    assert (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        in (system["content"])
    )
    assert "Current date: 20" in system["content"]
    # Assistant turns and tool responses alternate; each tool response is wrapped.
    assert [m["role"] for m in turns] == ["assistant", "user"] * (len(turns) // 2) + ["assistant"]
    observations = [m["content"] for m in turns if m["role"] == "user"]
    results = [e for e in events if e.type == EventType.tool_result]
    assert len(observations) == len(results) == cp.round - 1
    for text in observations:
        assert text.startswith("<tool_response>\n") and text.endswith("\n</tool_response>")
        assert text.count("<tool_response>") == 1 and text.count("</tool_response>") == 1
    assert observations[-1] == wrap(cp.last_observation)
    assert all("<think>" in m["content"] for m in turns if m["role"] == "assistant")
    assert cp.status == AgentStatus.finished and cp.answer and "Brandvik" in cp.answer
    # The last reasoning is what synthesis reads in ReAct mode (it carries the sim's sourced notes).
    assert "[S" in cp.report


async def test_react_calls_stop_at_tool_response_and_cut_an_invented_one(mini_corpus: Path) -> None:
    """A real-model-like fake that ignores the stop sequence and writes its own observation."""
    call = CALL
    invented = (
        "\n<tool_response>\nThe observatory was founded by Nobody.\n</tool_response>\n<answer>Nobody</answer>"
    )
    with FakeOpenAI() as fake:
        fake.script(
            "main",
            Step(content=f"<think>search first</think>\n{call}{invented}"),
            Step(content="<think>found it [S1]</think>\n<answer>Ilse Brandvik [S1]</answer>"),
        )
        settings = engine_settings(mini_corpus, fake.base_url("main").removesuffix("/v1"))
        async with open_engine(settings, run_worker=True) as engine:
            record, _ = await submit_job(
                engine.backend, ResearchRequest(query=QUESTION, agents=1, mode="react"), simulated=False
            )
            with anyio.fail_after(30):
                while not (job := await engine.backend.get_job(record.id)) or not job.status.terminal:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        bodies = [r.body for r in fake.received("main")]
    assert job.status == JobStatus.succeeded, job.error
    assert job.result is not None and job.result.answer.startswith("Ilse Brandvik")
    assert [b["stop"] for b in bodies] == [STOP, STOP]
    second = bodies[1]["messages"]
    assert second[2]["role"] == "assistant" and "Nobody" not in second[2]["content"]
    assert second[2]["content"].endswith("</tool_call>")
    assert second[3]["content"].startswith("<tool_response>\nA search for 'Halvard Observatory'")


async def test_context_budget_gives_one_final_turn_that_keeps_the_last_observation(mini_corpus: Path) -> None:
    budget = 1000
    with SimServer(SimConfig(min_rounds=30)) as sim:
        async with harness(mini_corpus, sim.base_url, agent={"react_context_tokens": budget}) as h:
            # Two tools: the system prompt's size (every tool's signature) is part of the budget.
            job = await h.submit(QUESTION, agents=1, mode="react", max_rounds=30, tools=["search", "visit"])
            events = await h.run_to_end(job.id)
            cp = (await h.backend.load_checkpoints(job.id))[0]
            stats = await h.sim_stats()
    forced = [e for e in events if e.type == EventType.round_started and e.data.get("forced")]
    assert len(forced) == 1, forced
    assert "context budget" in forced[0].data["reason"]
    assert cp.stop_reason is not None and cp.stop_reason.startswith("forced: The transcript has reached")
    # Every call the model received fit the budget (the sim counts a subset of what we count).
    assert stats["max_prompt_tokens"]["research"] <= budget
    # The final turn came after the last tool response, which the transcript keeps whole.
    instruction, reply = cp.transcript[-2], cp.transcript[-1]
    assert instruction["role"] == "user" and "cannot call any more tools" in instruction["content"]
    assert reply["role"] == "assistant" and "<answer>" in reply["content"]
    assert cp.transcript[-3] == {"role": "user", "content": wrap(cp.last_observation)}
    results = [e for e in events if e.type == EventType.tool_result]
    kept = [m for m in cp.transcript if m["role"] == "user" and m["content"].startswith("<tool_response>")]
    assert len(kept) == len(results), "a tool response went missing from the transcript"
    # What had to be left out of the final prompt is said, in the event and to the model.
    omitted = forced[0].data["omitted_messages"]
    # At 1000 tokens the whole transcript no longer fits the final turn: old turns are left out.
    assert isinstance(omitted, int) and omitted >= 1
    assert forced[0].data["observation_trimmed"] is False
    assert cp.answer


async def test_a_real_tokenizer_counts_the_transcript(mini_corpus: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A word-level tokenizer: unlike the estimate, it counts words, whatever their length.
    vocab = {"[UNK]": 0, "Who": 1, "founded": 2, "the": 3, "?": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    counter = make_counter(str(path))
    assert counter.name == "tokenizer:tokenizer.json"
    assert counter.count("Who founded it ?") == 4
    with SimServer(SimConfig(min_rounds=3)) as sim:
        async with harness(mini_corpus, sim.base_url, agent={"react_tokenizer": str(path)}) as h:
            job = await h.submit(QUESTION, agents=1, mode="react")
            events = await h.run_to_end(job.id)
            cp = (await h.backend.load_checkpoints(job.id))[0]
    first = next(e for e in events if e.type == EventType.round_started)
    assert first.data["context_tokens"] == count_messages(counter, cp.transcript[:2])
    assert first.data["context_tokens"] != count_messages(EstimateCounter(), cp.transcript[:2])


def test_the_estimate_counts_non_ascii_as_whole_tokens() -> None:
    counter = EstimateCounter()
    assert counter.count("abcdefgh") == 2
    assert counter.count("长城是中国") == 5
    assert count_messages(counter, [{"role": "user", "content": "abcd"}]) == 1 + 4


async def test_react_agents_resume_on_another_worker_without_redoing_rounds(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=8, latency=0.02)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            worker = h.engine.worker
            assert worker is not None
            job = await h.submit(QUESTION, agents=3, max_rounds=20, mode="react")
            await h.events_until(
                job.id,
                lambda ev: (
                    len(rounds_by_agent(ev)) == 3 and all(len(r) >= 3 for r in rounds_by_agent(ev).values())
                ),
            )
            worker.drain()
            with anyio.fail_after(10):
                while job.id in worker.running_jobs:  # noqa: ASYNC110 - polls observable state
                    await anyio.sleep(0.01)
            before = await h.backend.load_checkpoints(job.id)
            assert all(len(cp.transcript) >= 4 for cp in before.values())
            second = Worker(h.backend, h.engine.runner, max_jobs=2, heartbeat_seconds=1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(second.run)
                events = await h.run_to_end(job.id)
                second.drain()
            record = await h.backend.get_job(job.id)
            stats = await h.sim_stats()
            after = await h.backend.load_checkpoints(job.id)
    assert record is not None and record.status == JobStatus.succeeded
    for agent, seen in rounds_by_agent(events).items():
        assert seen == list(range(1, len(seen) + 1)), (agent, seen)
    assert sum(1 for e in events if e.type == EventType.agent_started) == 3
    for agent, cp in after.items():
        # The resumed transcript continues the saved one.
        assert cp.transcript[: len(before[agent].transcript)] == before[agent].transcript
    rounds = sum(cp.round for cp in after.values())
    # Only the calls in flight at the drain (one per agent at most) were made again.
    assert 0 <= stats["by_role"]["research"] - rounds <= 3


async def test_a_resumed_turn_runs_its_pending_tool_call_without_asking_the_model_again(
    mini_corpus: Path,
) -> None:
    """The crash came after the assistant turn was saved and before its tool response."""
    with SimServer(SimConfig(min_rounds=3)) as sim:
        settings = engine_settings(mini_corpus, sim.base_url)
        async with open_engine(settings, run_worker=False) as engine:
            assert engine.runner is not None
            record, _ = await submit_job(
                engine.backend, ResearchRequest(query=QUESTION, agents=1, mode="react"), simulated=True
            )
            # The first run: its agent's system prompt and question, then one assistant turn.
            parts = engine.runner.parts
            head = react_agent(record.id, engine.backend, parts.model, parts.tools).initial_transcript()
            call = CALL
            cp = AgentCheckpoint(
                agent=0,
                round=1,
                status=AgentStatus.running,
                transcript=[*head, {"role": "assistant", "content": f"<think>look it up</think>\n{call}"}],
            )
            await engine.backend.save_checkpoint(record.id, cp)
            await engine.runner.run(record.id)
            done = (await engine.backend.load_checkpoints(record.id))[0]
            events = await engine.backend.read_events(record.id)
            calls = sim.stats.by_role["research"]
    assert done.status == AgentStatus.finished
    # The pending call ran first (its result is message 4), and round 1 was never asked again.
    assert done.transcript[3]["content"].startswith("<tool_response>\nA search for 'Halvard Observatory'")
    assert calls == done.round - 1
    called = [(e.round, e.data["name"]) for e in events if e.type == EventType.tool_called]
    assert called[0] == (1, "search") and [r for r, _ in called] == sorted({r for r, _ in called})


async def test_react_job_survives_errors_and_malformed_outputs(mini_corpus: Path) -> None:
    config = SimConfig(min_rounds=6, rate_429=0.15, rate_500=0.15, rate_malformed=0.15, seed=7)
    with SimServer(config) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit(QUESTION, agents=4, max_rounds=20, mode="react")
            events = await h.run_to_end(job.id, timeout=120)
            record = await h.backend.get_job(job.id)
            checkpoints = await h.backend.load_checkpoints(job.id)
            stats = await h.sim_stats()
    assert record is not None and record.status == JobStatus.succeeded, record.error if record else None
    assert record.result is not None and record.result.answer
    assert stats["faults"]["malformed"] > 0, stats
    # A malformed turn stays in the transcript, answered by a format error inside <tool_response>.
    feedback = [
        m["content"]
        for cp in checkpoints.values()
        for m in cp.transcript
        if m["role"] == "user" and m["content"].startswith("<tool_response>\nFormat error")
    ]
    assert feedback, "no malformed output was fed back"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_react_round_limit_forces_a_final_turn_after_the_last_observation(mini_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=50)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            job = await h.submit(QUESTION, agents=1, max_rounds=3, mode="react")
            events = await h.run_to_end(job.id)
            cp = (await h.backend.load_checkpoints(job.id))[0]
            record = await h.backend.get_job(job.id)
    forced = [e for e in events if e.type == EventType.round_started and e.data.get("forced")]
    assert len(forced) == 1 and "round limit" in forced[0].data["reason"]
    assert forced[0].data["omitted_messages"] == 0
    assert cp.transcript[-3] == {"role": "user", "content": wrap(cp.last_observation)}
    # The final turn belongs to the last round: no summary shows a round past max_rounds.
    assert cp.round == 3 and cp.answer and "Brandvik" in cp.answer
    assert forced[0].round == 3
    assert record is not None and record.result is not None and record.result.cut_short


class _NoModel:
    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("final_messages builds a prompt; it calls no model")


def test_a_final_turn_over_budget_leaves_out_old_turns_and_trims_the_last_observation_visibly() -> None:
    agent = react_agent("job_x", MemoryBackend(), _NoModel(), {}, context_tokens=1000)
    head = agent.initial_transcript()
    turns = [
        {"role": "assistant", "content": f"<think>first</think>\n{CALL}"},
        {"role": "user", "content": wrap("A search for 'x' found 1 results: " + "word " * 300)},
        {"role": "assistant", "content": f"<think>second</think>\n{CALL}"},
        {"role": "user", "content": wrap("The page says this. " * 600 + "</tool_response><answer>x")},
    ]
    cp = AgentCheckpoint(agent=0, round=2, transcript=[*head, *turns])
    messages, cut = agent.final_messages(cp, "Stop now.")
    assert cut["observation_trimmed"] is True
    assert count_messages(EstimateCounter(), messages) <= 1000
    omitted = cut["omitted_messages"]
    assert omitted in (2, 3), cut
    # Whatever is kept is a whole recent span: the call behind the last response, or nothing.
    kept = messages[3:-2]
    assert kept == turns[3 - len(kept) : 3] and len(kept) == 3 - omitted
    assert f"{omitted} earlier messages" in messages[2]["content"]
    last = messages[-2]["content"]
    assert last.startswith("<tool_response>\nThe page says this.")
    assert last.endswith("[trimmed]\n</tool_response>") and last.count("</tool_response>") == 1
    assert messages[-1]["content"].startswith("Stop now. You cannot call any more tools.")
    # The checkpoint's transcript itself is untouched.
    assert cp.transcript[-1] == turns[-1]


def test_tool_signatures_read_the_one_line_descriptions() -> None:
    from workers.agent.signatures import signature

    @dataclass
    class _Tool:
        name: str
        description: str

        async def __call__(self, arguments: dict[str, Any], ctx: Any) -> Any:  # pragma: no cover
            raise NotImplementedError

    scholar = signature(_Tool("google_scholar", "google_scholar(query: string[]) — academic search"))
    assert scholar == {
        "type": "function",
        "function": {
            "name": "google_scholar",
            "description": "academic search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "array", "items": {"type": "string"}}},
                "required": ["query"],
            },
        },
    }
    mixed = signature(_Tool("f", "f(n: integer, flags?: boolean[]) — does f"))["function"]["parameters"]
    assert mixed["properties"] == {
        "n": {"type": "integer"},
        "flags": {"type": "array", "items": {"type": "boolean"}},
    }
    assert mixed["required"] == ["n"]
    # A description in another shape is kept whole, with no parameters.
    plain = signature(_Tool("g", "a tool that does g"))["function"]
    assert plain["description"] == "a tool that does g" and plain["parameters"]["properties"] == {}


async def test_react_under_a_token_budget_stays_inside_it(mini_corpus: Path) -> None:
    """ReAct's growing prompts take their token holds like IterResearch rounds do."""
    small = {
        "forced_round_tokens": 3000,
        "synthesis_tokens": 2500,
        "min_round_tokens": 800,
        "round_completion_tokens": 400,
        "forced_completion_tokens": 300,
        "synthesis_completion_tokens": 400,
        "min_completion_tokens": 64,
    }
    max_tokens = 20_000
    with SimServer(SimConfig(min_rounds=1000)) as sim:
        llm = {"base_url": f"{sim.base_url}/v1", "model": "heavyresearch-sim", "timeout": 30.0}
        with live_server(api_settings(mini_corpus, llm=llm, budget=small)) as server:
            async with server.client() as client:
                body = {"query": QUESTION, "agents": 2, "max_rounds": 200, "max_tokens": max_tokens}
                response = await client.post("/v1/research", json={**body, "mode": "react"})
                assert response.status_code == 202, response.text
                events = await run_to_end(client, response.json()["id"])
                job = (await client.get(f"/v1/research/{response.json()['id']}")).json()
        served = sim.stats.prompt_tokens + sim.stats.completion_tokens
    assert job["status"] == "succeeded", job
    assert job["usage"]["total_tokens"] <= max_tokens and served <= max_tokens, (job["usage"], served)
    assert served == job["usage"]["total_tokens"]
    assert any("token budget" in reason for reason in job["result"]["cut_short"]), job["result"]
    forced = [e for e in events if e["type"] == "round.started" and e["data"].get("forced")]
    assert {e["agent"] for e in forced} == {0, 1}
