"""A messy model's outputs, end to end: what the parser repairs is counted in the job's usage
(`format_recoveries`) and listed in the round's `usage` event; what it cannot use is counted as a
format error. The model is a scripted fake of an OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, Step
from tests.server import LiveServer, api_settings, live_server, run_to_end

pytestmark = pytest.mark.anyio

# Round 1: `queries` for `query`, then an observation the model made up after its own call.
MESSY_CALL = (
    "<think>search</think><report>nothing yet</report>"
    '<tool_call>{"name": "search", "arguments": {"queries": "Merrowgate"}}</tool_call>\n'
    "[Tool Observation] Merrowgate is the capital."
)
# Round 2: unusable (no action at all). Round 3: a plain answer after </think>, no <answer> tag.
NO_ACTION = "I will look into this and come back with a report shortly."
PLAIN_ANSWER = "<think>the page says so</think>\nMerrowgate is the capital of Valdoria."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def api(mini_corpus: Path, fake: FakeOpenAI) -> Iterator[LiveServer]:
    llm = {"base_url": fake.base_url("main"), "model": "tongyi-test", "stream": False}
    with live_server(api_settings(mini_corpus, llm=llm)) as server:
        yield server


async def test_recoveries_are_counted_in_usage_and_listed_in_events(
    api: LiveServer, fake: FakeOpenAI
) -> None:
    fake.script("main", Step(MESSY_CALL), Step(NO_ACTION), Step(PLAIN_ANSWER))
    async with api.client() as client:
        response = await client.post(
            "/v1/research", json={"query": "What is the capital of Valdoria?", "agents": 1}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        events = await run_to_end(client, job_id)
        job: dict[str, Any] = (await client.get(f"/v1/research/{job_id}")).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["answer"] == "Merrowgate is the capital of Valdoria."
    called = [e for e in events if e["type"] == "tool.called"]
    assert [e["data"]["arguments"] for e in called] == [{"query": ["Merrowgate"]}]
    usage = job["usage"]
    assert usage["format_recoveries"] == 4, usage  # alias, bare string, invented text, plain answer
    assert usage["format_errors"] == 1, usage
    assert job["agents"][0]["usage"]["format_recoveries"] == 4
    listed = {e["round"]: e["data"].get("format_recoveries", []) for e in events if e["type"] == "usage"}
    assert len(listed[1]) == 3 and any("[Tool Observation]" in r for r in listed[1]), listed
    assert listed[2] == []
    assert len(listed[3]) == 1 and "plain text" in listed[3][0], listed
