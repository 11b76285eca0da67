"""The engine against fakes of what real model servers and small models do (issue 11).

The research model is the scripted fake (`tests.fake_openai`), answering by agent (the request's
seed) and round (read from the workspace). Each test reproduces one behaviour seen with a real
llama.cpp server and a small model: output that never follows the format, output that copies
the prompt, a context window too small for the workspace, a server that goes away mid-job (a
SIMULATED outage through `OutageProxy`), a stream that stalls, and synthesis without `<answer>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.engine_harness import harness
from tests.fake_openai import FakeOpenAI, Step, fake_prompt_tokens
from workers.agent.outcome import job_outcome, non_answer_reason, prompt_texts
from workers.agent.prompts import PromptSet
from workers.events import Event, EventType
from workers.models import AgentStatus, JobStatus
from workers.sim.outage import OutageProxy

pytestmark = pytest.mark.anyio

Responder = Callable[[dict[str, Any]], Step]
QUESTION = "What is the capital of France?"
SEARCH = '<tool_call>{"name": "search", "arguments": {"query": ["capital of France"]}}</tool_call>'
GOOD_REPORT = "<report>- France's capital is Paris [S1].</report>"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def user_text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def is_synthesis(body: dict[str, Any]) -> bool:
    return "## Agent reports" in user_text(body)


def is_forced(body: dict[str, Any]) -> bool:
    return "## Instruction" in user_text(body)


def round_of(body: dict[str, Any]) -> int:
    found = re.search(r"## Round\s+(\d+)", user_text(body))
    return int(found.group(1)) if found else 0


def researcher(answer_in_round: int = 2, synthesis: str | None = None) -> Responder:
    """Search until `answer_in_round`, then answer Paris; synthesis answers `synthesis`."""

    def respond(body: dict[str, Any]) -> Step:
        if is_synthesis(body):
            return Step(content=synthesis or f"<think>all agree</think>{GOOD_REPORT}<answer>Paris</answer>")
        if is_forced(body) or round_of(body) >= answer_in_round:
            return Step(content=f"<think>done</think>{GOOD_REPORT}<answer>Paris [S1]</answer>")
        return Step(content=f"<think>look it up</think>{GOOD_REPORT}{SEARCH}")

    return respond


def overrides(fake: FakeOpenAI, name: str = "main", **llm: Any) -> dict[str, Any]:
    return {
        "llm": {"base_url": fake.base_url(name), "model": "small-model", "retry_budget": 1.0, **llm},
    }


def of_type(events: list[Event], type_: EventType) -> list[Event]:
    return [e for e in events if e.type == type_]


async def run_job(corpus: Path, settings: dict[str, Any], timeout: float = 60.0, **job: Any) -> Any:
    url = settings["llm"]["base_url"].removesuffix("/v1")
    async with harness(corpus, url, **settings) as h:
        record = await h.submit(job.pop("query", QUESTION), **job)
        events = await h.run_to_end(record.id, timeout=timeout)
        final = await h.backend.get_job(record.id)
    assert final is not None
    return final, events


# -- honest outcomes ---------------------------------------------------------------------------


async def test_a_model_that_never_follows_the_format_fails_the_job_as_no_answer(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    fake.respond("main", lambda body: Step(content="I think it might be Paris, or maybe Lyon."))
    record, events = await run_job(mini_corpus, overrides(fake), agents=2, max_rounds=2)

    assert record.status == JobStatus.failed
    assert record.error.startswith("no research agent found an answer")
    assert events[-1].type == EventType.job_failed and events[-1].data["outcome"] == "no_answer"
    assert record.result is None
    assert job_outcome(record) == "no_answer"  # what the webhook payload says
    for agent in record.agents:
        assert agent.status == AgentStatus.no_answer and agent.answer is None
        assert agent.rounds == 2  # the forced answer is part of round 2, not a round 3
    finished = of_type(events, EventType.agent_finished)
    assert {e.data["status"] for e in finished} == {"no_answer"}
    assert not any(is_synthesis(r.body) for r in fake.received())
    assert max(e.round or 0 for e in events) == 2


async def test_a_model_that_copies_the_prompt_is_no_answer_and_left_out(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    copied = "your final answer to the question"
    assert non_answer_reason(copied, prompt_text=prompt_texts(PromptSet.load())) is not None
    honest = researcher()

    def respond(body: dict[str, Any]) -> Step:
        if body.get("seed") == 0 and not is_synthesis(body):
            # Agent 0 copies the prompt's own words into its report and answer.
            return Step(content=f"<report>the whole report, rewritten</report><answer>{copied}</answer>")
        return honest(body)

    fake.respond("main", respond)
    record, _ = await run_job(mini_corpus, overrides(fake), agents=2, max_rounds=3)

    assert record.status == JobStatus.succeeded, record.error
    assert record.result.answer.startswith("Paris")
    assert record.result.synthesis == "single"  # one real answer: no synthesis call, no vote
    assert record.result.agents_used == [1] and record.result.agents_failed == [0]
    assert record.agents[0].status == AgentStatus.no_answer
    # In ordinary rounds the copied answer was fed back as an error rather than accepted.
    assert any("is not an answer" in user_text(r.body) for r in fake.received() if r.body.get("seed") == 0)
    assert not any(is_synthesis(r.body) for r in fake.received())
    for text in prompt_texts(PromptSet.load()):
        # No prompt offers a placeholder to copy as content.
        assert "(none yet)" not in text and "the final answer</answer>" not in text


async def test_streamed_synthesis_without_answer_is_withdrawn_before_the_fallback(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    fake.respond(
        "main", researcher(synthesis="<think>weighing</think><report>" + "They agree. " * 20 + "</report>")
    )
    record, events = await run_job(mini_corpus, overrides(fake), agents=2, max_rounds=3)

    assert record.status == JobStatus.succeeded
    assert record.result.synthesis == "majority" and record.result.answer.startswith("Paris")
    deltas = of_type(events, EventType.synthesis_delta)
    assert any(d.data.get("text") for d in deltas)
    last = deltas[-1]
    assert last.data["reset"] is True and "majority" in last.data["reason"]
    assert last.seq < events[-1].seq and events[-1].type == EventType.job_succeeded


# -- context -----------------------------------------------------------------------------------


@pytest.mark.parametrize("wording", ["llamacpp", "vllm"])
async def test_a_workspace_over_the_window_is_trimmed_and_sent_again(
    fake: FakeOpenAI, mini_corpus: Path, wording: str
) -> None:
    honest = researcher(answer_in_round=3)

    def respond(body: dict[str, Any]) -> Step:
        if round_of(body) == 1 and not fake.overflows:
            # The window: round 1's prompt and 220 tokens; the next rounds' observations overflow it.
            fake.context_limit("main", fake_prompt_tokens(body) + 220, wording)
        return honest(body)

    fake.respond("main", respond)
    settings = overrides(fake, min_output_tokens=64, max_output_tokens=256)
    settings["agent"] = {"observation_max_chars": 5000}
    record, events = await run_job(mini_corpus, settings, agents=1, max_rounds=4)

    assert record.status == JobStatus.succeeded, record.error
    assert not of_type(events, EventType.agent_failed)
    trimmed = [r for r in fake.received() if "[Trimmed to fit the model's context" in user_text(r.body)]
    assert trimmed, "no workspace was trimmed"
    limit = fake_prompt_tokens(fake.received()[0].body) + 220
    assert all(fake_prompt_tokens(r.body) <= limit for r in trimmed)


# -- outages -----------------------------------------------------------------------------------


async def test_a_server_that_goes_away_mid_job_pauses_the_agents_and_the_job_succeeds(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    fake.respond("main", researcher(answer_in_round=4))
    with OutageProxy(fake.port) as proxy:
        settings = overrides(fake, retry_budget=0.5, retry_base_delay=0.05, retry_max_delay=0.1)
        settings["llm"]["base_url"] = f"http://127.0.0.1:{proxy.port}/main/v1"
        settings["agent"] = {"outage_pause": 0.2, "outage_budget": 60.0}

        async def outage() -> None:
            # Down for 2.5 s once the agents are into their second round.
            await anyio.to_thread.run_sync(fake.wait_until, lambda f: f.count("main") >= 3)
            proxy.down_for(2.5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(outage)
            record, events = await run_job(mini_corpus, settings, agents=2, max_rounds=6)

    assert proxy.outages == 1
    assert record.status == JobStatus.succeeded, record.error
    assert not of_type(events, EventType.agent_failed)
    paused = of_type(events, EventType.agent_paused)
    assert paused and all(e.data["outage_budget"] == 60.0 for e in paused)
    assert {e.agent for e in of_type(events, EventType.agent_resumed)} == {e.agent for e in paused}
    assert all(a.status == AgentStatus.finished for a in record.agents)


async def test_past_the_outage_budget_agents_answer_from_their_reports(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    fake.respond("main", researcher(answer_in_round=10))
    with OutageProxy(fake.port) as proxy:
        settings = overrides(fake, retry_budget=0.3, retry_base_delay=0.05, retry_max_delay=0.1)
        settings["llm"]["base_url"] = f"http://127.0.0.1:{proxy.port}/main/v1"
        settings["agent"] = {"outage_pause": 0.2, "outage_budget": 1.0}

        async def outage() -> None:
            await anyio.to_thread.run_sync(fake.wait_until, lambda f: f.count("main") >= 4)
            proxy.down()  # for good

        async with anyio.create_task_group() as tg:
            tg.start_soon(outage)
            record, events = await run_job(mini_corpus, settings, agents=2, max_rounds=10)

    assert record.status == JobStatus.succeeded, record.error
    assert not of_type(events, EventType.agent_failed)
    for agent in record.agents:
        assert agent.status == AgentStatus.finished
        assert "outage budget" in agent.stop_reason and "taken from the report" in agent.stop_reason
        assert "Paris" in agent.answer
    assert record.result.synthesis == "majority"  # the synthesis model is down too


async def test_a_stalled_stream_ends_at_the_read_timeout(fake: FakeOpenAI, mini_corpus: Path) -> None:
    honest = researcher(synthesis=f"<think>ok</think>{GOOD_REPORT}<answer>Paris, says the synthesis</answer>")
    stalled: list[int] = []

    def respond(body: dict[str, Any]) -> Step:
        step = honest(body)
        if is_synthesis(body) and not stalled:
            # A stopping server: the stream starts, then no byte more, connection held open.
            stalled.append(1)
            step.stall_after = 3
        return step

    fake.respond("main", respond)
    settings = overrides(fake, read_timeout=0.5, timeout=120.0)
    record, events = await run_job(mini_corpus, settings, agents=2, max_rounds=3)

    assert record.status == JobStatus.succeeded, record.error
    assert record.result.synthesis == "model" and "synthesis" in record.result.answer
    resets = [e for e in of_type(events, EventType.synthesis_delta) if e.data.get("reset")]
    assert len(resets) == 1


# -- tokens and rounds ---------------------------------------------------------------------------


async def test_calls_abandoned_at_the_deadline_are_counted_as_estimates(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    # Every call streams three chunks and then stalls: the deadline, then the grace, cut them.
    fake.respond("main", lambda body: Step(content=f"{GOOD_REPORT}<answer>Paris</answer>", stall_after=3))
    settings = overrides(fake, read_timeout=60.0)
    settings["agent"] = {"forced_answer_grace": 0.5}
    record, events = await run_job(mini_corpus, settings, agents=1, max_rounds=3, max_seconds=1.0)

    usage = of_type(events, EventType.usage)
    estimated = [e for e in usage if e.data.get("estimated")]
    assert len(estimated) == 2  # the round cut by the deadline, and the forced call cut by the grace
    assert all(e.data["prompt_tokens"] > 0 and e.data["completion_tokens"] > 0 for e in estimated)
    assert record.usage.total_tokens == sum(
        e.data["prompt_tokens"] + e.data["completion_tokens"] for e in usage
    )
    assert record.agents[0].usage.calls == 2


async def test_agent_failed_names_the_round_it_failed_in(fake: FakeOpenAI, mini_corpus: Path) -> None:
    honest = researcher(answer_in_round=5)
    fake.respond("main", lambda body: Step(status=401) if round_of(body) == 2 else honest(body))
    record, events = await run_job(mini_corpus, overrides(fake), agents=1, max_rounds=5)

    assert record.status == JobStatus.failed
    (failed,) = of_type(events, EventType.agent_failed)
    assert failed.round == 2 and failed.data["round"] == 2
    assert failed.data["error"].startswith("round 2:")


async def test_a_synthesis_cut_at_the_deadline_is_counted_and_withdrawn(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    honest = researcher(answer_in_round=1)

    def respond(body: dict[str, Any]) -> Step:
        step = honest(body)
        if is_synthesis(body):
            step.content, step.stall_after = "<think>" + "weighing the reports " * 20, 5
        return step

    fake.respond("main", respond)
    settings = overrides(fake, read_timeout=60.0)
    settings["agent"] = {"forced_answer_grace": 0.5}
    record, events = await run_job(mini_corpus, settings, agents=2, max_rounds=3, max_seconds=2.0)

    assert record.status == JobStatus.succeeded, record.error
    assert record.result.synthesis == "majority"
    (synthesis_usage,) = [e for e in of_type(events, EventType.usage) if e.data.get("role") == "synthesis"]
    assert synthesis_usage.data["estimated"] is True
    assert synthesis_usage.data["prompt_tokens"] > 0 and synthesis_usage.data["completion_tokens"] > 0
    agents_total = sum(a.usage.total_tokens for a in record.agents)
    spent = synthesis_usage.data["prompt_tokens"] + synthesis_usage.data["completion_tokens"]
    assert record.usage.total_tokens == agents_total + spent
    reset = of_type(events, EventType.synthesis_delta)[-1]
    assert reset.data["reset"] is True and "ran out of time" in reset.data["reason"]


async def test_a_research_call_held_open_by_a_stopping_server_ends_at_the_read_timeout(
    fake: FakeOpenAI, mini_corpus: Path
) -> None:
    honest = researcher(answer_in_round=3)
    stalled: list[int] = []

    def respond(body: dict[str, Any]) -> Step:
        step = honest(body)
        if round_of(body) == 2 and not stalled:
            stalled.append(1)
            step.stall_after = 2
        return step

    fake.respond("main", respond)
    # No deadline on the job: only the read timeout (not the 120 s total) ends the stalled call.
    settings = overrides(fake, read_timeout=0.5, timeout=120.0, retry_budget=30.0)
    record, events = await run_job(mini_corpus, settings, agents=1, max_rounds=4, timeout=30.0)

    assert record.status == JobStatus.succeeded, record.error
    assert stalled and not of_type(events, EventType.agent_failed)
    assert all(r.body["stream"] for r in fake.received())
    assert record.agents[0].rounds == 3
