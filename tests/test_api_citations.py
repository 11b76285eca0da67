"""Fabricated citations of every form, end to end: a model (a scripted fake of an OpenAI-compatible
server) cites sources the job never retrieved in its reports, answers and synthesis; the job's
result carries none of them, anywhere, and lists each one with where it was removed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, Step
from tests.server import LiveServer, api_settings, live_server, run_to_end

pytestmark = pytest.mark.anyio

SEARCH = (
    "<think>look it up</think><report>nothing yet</report>"
    '<tool_call>{"name": "search", "arguments": {"query": ["Merrowgate capital"]}}</tool_call>'
)
AGENT = (
    "<think>enough</think><report>Merrowgate is the capital [S1] [S90]. Census [77]; survey [S1-S30]; "
    "both [S1, S95]. See [the atlas](https://fake.example/atlas) and "
    "[Merrowgate](https://valdoria.example/wiki/Merrowgate), [S1](https://fake.example/one), "
    "https://fake.example/raw.</report><answer>Merrowgate [S1][S90] https://fake.example/raw</answer>"
)
SYNTHESIS = (
    "<report>All agents agree: Merrowgate [S1]. Also [88] and [S1, S99]; see "
    "https://fake.example/syn and [made up](https://fake.example/made).</report>"
    "<answer>Merrowgate [S1][S77] ([made up](https://fake.example/made))</answer>"
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def api(mini_corpus: Path, fake: FakeOpenAI) -> Iterator[LiveServer]:
    llm = {"base_url": fake.base_url("main"), "model": "tongyi-test", "stream": False}
    with live_server(api_settings(mini_corpus, llm=llm)) as server:
        yield server


def unknown_ids(text: str, known: set[str]) -> list[str]:
    return [sid for sid in re.findall(r"S\d+", text) if sid not in known]


async def test_fabricated_citations_are_removed_everywhere_and_listed(
    api: LiveServer, fake: FakeOpenAI
) -> None:
    # Two agents: whichever order their calls come in, each searches at least once before the
    # scripted answers run out, and the synthesis call comes last.
    fake.script("main", Step(SEARCH), Step(SEARCH), Step(AGENT), Step(AGENT), Step(SYNTHESIS))
    async with api.client() as client:
        response = await client.post(
            "/v1/research", json={"query": "What is the capital of Valdoria?", "agents": 2}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await run_to_end(client, job_id)
        job: dict[str, Any] = (await client.get(f"/v1/research/{job_id}")).json()
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["synthesis"] == "model"
    texts = {
        "answer": result["answer"],
        "report": result["report"],
        **{f"agent_reports.{k}": v for k, v in result["agent_reports"].items()},
        **{f"agents.{a['agent']}.answer": a["answer"] for a in job["agents"]},
    }
    for where, text in texts.items():
        assert "fake.example" not in text, (where, text)
    # Agents' texts keep job-wide ids; none of them is one the job never retrieved.
    retrieved = {f"S{n}" for n in range(1, 6)}
    for where in ("agent_reports.0", "agent_reports.1", "agents.0.answer", "agents.1.answer"):
        assert not unknown_ids(texts[where], retrieved), texts[where]
        assert "[S1]" in texts[where]
    assert "[Merrowgate](https://valdoria.example/wiki/Merrowgate)" in texts["agent_reports.0"]
    # The result cites by number, and only the sources it lists.
    numbers = {
        int(n)
        for group in re.findall(r"\[([\d, ]+)\]", result["answer"] + result["report"])
        for n in group.split(",")
    }
    assert numbers and numbers <= {s["id"] for s in result["sources"]}
    assert all(s["url"].startswith("https://valdoria.example/") for s in result["sources"])
    assert result["answer"].startswith("Merrowgate [1]")
    # Each removal is listed with where it was.
    removed = result["removed_citations"]
    places = {r["where"] for r in removed}
    assert places == set(texts), places
    written = {r["citation"] for r in removed if r["where"] == "agent_reports.0"}
    assert written >= {"[S90]", "[77]", "[S1-S30]", "[S1, S95]", "https://fake.example/raw"}, written
    assert (
        "[the atlas](https://fake.example/atlas)" in written and "[S1](https://fake.example/one)" in written
    )
    assert {r["citation"] for r in removed if r["where"] == "answer"} >= {
        "[S77]",
        "[made up](https://fake.example/made)",
    }
    assert result["citations_removed"] == sum(len(r["removed"]) for r in removed)
