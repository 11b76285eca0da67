"""The simulated model server, tested through HTTP against a real uvicorn on a loopback port."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from workers.settings import config_dir
from workers.sim import MODEL_ID, SimConfig, SimServer, count_tokens
from workers.sim.faults import MALFORMED_KINDS
from workers.sim.policy import MAX_FINDING_CHARS, MAX_FINDINGS, MAX_VISITED

QUESTION = "Who wrote the novel that inspired the film Blade Runner?"
CITATION = re.compile(r"\[(S\d+)\]")

# A tiny corpus: (title, url, text) by source id.
DOCS: dict[str, tuple[str, str, str]] = {
    "S1": (
        "Blade Runner",
        "https://example.org/blade-runner",
        "Blade Runner is a 1982 science fiction film directed by Ridley Scott. The film is based on "
        "the novel Do Androids Dream of Electric Sheep? by Philip K. Dick. It stars Harrison Ford.",
    ),
    "S2": (
        "Philip K. Dick",
        "https://example.org/philip-k-dick",
        "Philip K. Dick was an American science fiction writer. He wrote the novel Do Androids Dream "
        "of Electric Sheep?, which inspired the film Blade Runner. He died in 1982.",
    ),
    "S3": (
        "Ridley Scott",
        "https://example.org/ridley-scott",
        "Ridley Scott is an English film director. He directed Alien and the film Blade Runner.",
    ),
    "S4": (
        "Science fiction film",
        "https://example.org/sf-film",
        "Science fiction film is a genre. Many novels inspired films in this genre over the years.",
    ),
}


def render(name: str, **values: object) -> str:
    text = (config_dir() / "prompts" / f"{name}.md").read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def research_messages(
    question: str = QUESTION,
    *,
    report: str = "",
    last_action: str = "(none yet)",
    observation: str = "(none yet)",
    round_no: int = 1,
    max_rounds: int = 12,
) -> list[dict[str, str]]:
    tools = (
        '- search: {"query": string[]} web search\n'
        '- visit: {"url": string[], "goal": string} read pages and extract what serves the goal'
    )
    return [
        {"role": "system", "content": render("research_system", date="2025-01-01", tools=tools)},
        {
            "role": "user",
            "content": render(
                "research_round",
                question=question,
                report=report or "(empty: this is the first round)",
                last_action=last_action,
                last_observation=observation,
                round=round_no,
                max_rounds=max_rounds,
            ),
        },
    ]


def search_observation(queries: list[str]) -> str:
    blocks = []
    for query in queries:
        words = set(query.lower().split())
        hits = [(sid, doc) for sid, doc in DOCS.items() if words & set(re.findall(r"\w+", doc[2].lower()))]
        lines = [f"A search for '{query}' found {len(hits)} results:"]
        for n, (sid, (title, url, text)) in enumerate(hits, start=1):
            lines += [f"{n}. [{sid}] {title}", f"   URL: {url}", f"   {text[:80]}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def visit_observation(urls: list[str], goal: str) -> str:
    blocks = []
    for url in urls:
        found = [(sid, doc) for sid, doc in DOCS.items() if doc[1] == url]
        if not found:
            blocks.append(f"[not found] {url}: not in the local corpus")
            continue
        sid, (title, _, text) = found[0]
        blocks.append(f"[{sid}] {title}\nURL: {url}\nGoal: {goal}\n{text}")
    return "\n\n".join(blocks)


@dataclass
class Output:
    content: str
    reasoning: str
    think: str
    report: str
    tool_call: dict[str, Any] | None
    answer: str | None


def parse_output(content: str, reasoning: str) -> Output:
    think = re.search(r"<think>(.*?)</think>", content, re.DOTALL)
    report = re.search(r"<report>\n?(.*?)\n?</report>", content, re.DOTALL)
    call = re.search(r"<tool_call>\s*(.*?)\s*</tool_call>", content, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
    return Output(
        content=content,
        reasoning=reasoning,
        think=reasoning or (think.group(1) if think else ""),
        report=report.group(1) if report else "",
        tool_call=json.loads(call.group(1)) if call else None,
        answer=answer.group(1) if answer else None,
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer() as server:
        yield server


@pytest.fixture
def client(sim: SimServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=10.0) as http:
        http.post("/sim/config", json={}).raise_for_status()
        http.post("/sim/reset").raise_for_status()
        yield http


def configure(client: httpx.Client, **config: Any) -> None:
    client.post("/sim/config", json=config).raise_for_status()


def chat(
    client: httpx.Client, messages: list[dict[str, str]], *, seed: int = 0, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "seed": seed, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def turn(client: httpx.Client, messages: list[dict[str, str]], seed: int = 0) -> Output:
    message = chat(client, messages, seed=seed)["choices"][0]["message"]
    return parse_output(message["content"], message["reasoning_content"] or "")


def stream_events(client: httpx.Client, payload: dict[str, Any]) -> list[Any]:
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-simulated"] == "true"
        data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


# --- protocol --------------------------------------------------------------------------------


def test_every_surface_says_it_is_simulated(client: httpx.Client) -> None:
    models = client.get("/v1/models")
    assert models.headers["x-simulated"] == "true"
    (card,) = models.json()["data"]
    assert card["id"] == MODEL_ID
    assert "simulated" in card["description"].lower()
    health = client.get("/health")
    assert health.json()["simulated"] is True
    assert health.headers["x-simulated"] == "true"
    assert client.get("/nowhere").headers["x-simulated"] == "true"
    assert client.get("/sim/stats").json()["simulated"] is True


def test_non_streaming_completion_has_openai_shape_and_usage(client: httpx.Client) -> None:
    messages = research_messages()
    body = chat(client, messages, seed=2)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL_ID
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["reasoning_content"]  # even seed: reasoning travels in its own field
    usage = body["usage"]
    assert usage["prompt_tokens"] == sum(count_tokens(m["content"]) for m in messages)
    assert usage["completion_tokens"] == count_tokens(message["content"]) + count_tokens(
        message["reasoning_content"]
    )
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_completion_has_openai_chunks_in_order(client: httpx.Client) -> None:
    messages = research_messages()
    whole = chat(client, messages, seed=4)
    chunks = stream_events(
        client,
        {"messages": messages, "seed": 4, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]
    final = chunks[-2]["choices"][0]
    assert final["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    kinds = ["reasoning_content" if "reasoning_content" in d else "content" for d in deltas]
    assert kinds == sorted(kinds, reverse=True)  # all reasoning first, then content
    assert len(kinds) > 2
    message = whole["choices"][0]["message"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]

    plain = stream_events(client, {"messages": messages, "seed": 4, "stream": True})
    assert all("usage" not in c for c in plain)
    assert plain[-1]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_cuts_the_output_with_finish_reason_length(client: httpx.Client) -> None:
    body = chat(client, research_messages(), seed=1, max_tokens=5)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] <= 5


def test_bad_requests_get_openai_errors(client: httpx.Client) -> None:
    missing = client.post("/v1/chat/completions", json={"model": MODEL_ID})
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in missing.json()["error"]["message"]
    garbage = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400


# --- the research policy ---------------------------------------------------------------------


def test_same_seed_same_output_and_seeds_differ(client: httpx.Client) -> None:
    first = [turn(client, research_messages(), seed) for seed in range(4)]
    again = [turn(client, research_messages(), seed) for seed in range(4)]
    assert [(o.content, o.reasoning) for o in first] == [(o.content, o.reasoning) for o in again]
    queries = [json.dumps(o.tool_call) for o in first]
    assert all(o.tool_call and o.tool_call["name"] == "search" for o in first)
    assert len(set(queries)) == len(queries)
    for output in first:
        assert output.tool_call is not None
        for query in output.tool_call["arguments"]["query"]:
            assert set(query.split()) <= {"wrote", "novel", "inspired", "film", "blade", "runner"}

    # After the same search, different seeds visit different hits.
    observation = search_observation(["blade runner novel"])
    visits = []
    for seed in range(2):
        out = turn(client, research_messages(observation=observation, round_no=2), seed)
        assert out.tool_call is not None
        assert out.tool_call["name"] == "visit"
        assert out.tool_call["arguments"]["goal"]
        visits.append(out.tool_call["arguments"]["url"])
    assert visits[0] != visits[1]
    hit_urls = {doc[1] for doc in DOCS.values()}
    assert all(set(urls) <= hit_urls for urls in visits)


def test_reasoning_field_for_even_seeds_think_tags_for_odd(client: httpx.Client) -> None:
    even = turn(client, research_messages(), seed=0)
    odd = turn(client, research_messages(), seed=1)
    assert even.reasoning
    assert "<think>" not in even.content
    assert not odd.reasoning
    assert odd.content.startswith("<think>")
    assert even.think
    assert odd.think


def test_agent_conversation_reaches_an_answer_citing_only_seen_sources(client: httpx.Client) -> None:
    configure(client, min_rounds=4)
    for seed in range(4):
        report, last_action, observation = "", "(none yet)", "(none yet)"
        seen: set[str] = set()
        for round_no in range(1, 13):
            out = turn(
                client,
                research_messages(
                    report=report, last_action=last_action, observation=observation, round_no=round_no
                ),
                seed,
            )
            assert out.report
            assert out.think
            assert set(CITATION.findall(out.report)) <= seen
            report = out.report
            if out.answer is not None:
                break
            assert out.tool_call is not None
            last_action = json.dumps(out.tool_call)
            args = out.tool_call["arguments"]
            if out.tool_call["name"] == "search":
                observation = search_observation(args["query"])
            else:
                observation = visit_observation(args["url"], args["goal"])
            seen |= set(CITATION.findall(observation))
        else:
            pytest.fail(f"seed {seed}: no answer in 12 rounds")
        assert round_no >= 4  # min_rounds
        cited = set(CITATION.findall(out.answer))
        assert cited
        assert cited <= seen
        assert "Findings:" in out.report


def test_report_stays_bounded_over_forty_rounds(client: httpx.Client) -> None:
    configure(client, min_rounds=1000)
    question = "Which river flows through the ancient city of Babylon in Mesopotamia?"
    filler = "The Euphrates river flows through the ancient city of Babylon in Mesopotamia, records say"
    report, observation, next_id = "", "(none yet)", 1
    sizes: list[int] = []
    prompts: list[int] = []
    for round_no in range(1, 41):
        messages = research_messages(
            question, report=report, observation=observation, round_no=round_no, max_rounds=64
        )
        body = chat(client, messages, seed=3)
        out = parse_output(body["choices"][0]["message"]["content"], "")
        assert out.tool_call is not None, f"round {round_no} did not act"
        report = out.report
        sizes.append(len(report))
        prompts.append(body["usage"]["prompt_tokens"])
        findings = [line for line in report.splitlines() if line.startswith("- ") and CITATION.search(line)]
        assert len(findings) <= MAX_FINDINGS
        assert all(len(line) <= MAX_FINDING_CHARS + 2 for line in findings)
        visited = next(line for line in report.splitlines() if line.startswith("Visited:")).split()[1:]
        assert len(visited) <= MAX_VISITED
        # Fresh synthetic sources every round, each page long and relevant, so nothing saturates.
        if out.tool_call["name"] == "search":
            lines = ["A search for 'x' found 5 results:"]
            for n in range(1, 6):
                lines += [
                    f"{n}. [S{next_id}] Babylon river {next_id}",
                    f"   URL: https://example.org/p{next_id}",
                ]
                lines += [f"   {filler} {next_id}."]
                next_id += 1
            observation = "\n".join(lines)
        else:
            blocks = []
            for url in out.tool_call["arguments"]["url"]:
                sid = f"S{next_id}"
                next_id += 1
                body_text = " ".join(
                    f"{filler}, part {sid}-{k}, with many more words to pad it out." for k in range(30)
                )
                blocks.append(f"[{sid}] Page {sid}\nURL: {url}\nGoal: g\n{body_text}")
            observation = "\n\n".join(blocks)
    assert max(sizes) <= 5000
    # Flat, not growing: the second half of the run is no bigger than the first half's peak.
    assert max(sizes[20:]) <= max(sizes[:20]) * 1.2
    assert max(prompts[20:]) <= max(prompts[:20]) * 1.2


def test_forced_final_round_answers_at_once(client: httpx.Client) -> None:
    configure(client, min_rounds=50)
    # A report with a finding, as built in an earlier round.
    observation = visit_observation(["https://example.org/philip-k-dick"], "who wrote it")
    earlier = turn(client, research_messages(observation=observation, round_no=3), seed=0)
    assert earlier.tool_call is not None  # min_rounds not reached: still researching
    for seed, report in ((0, earlier.report), (1, "")):
        user = render(
            "research_final",
            question=QUESTION,
            report=report or "(empty)",
            reason="The round limit is reached.",
        )
        out = turn(client, [{"role": "user", "content": user}], seed)
        assert out.tool_call is None
        assert out.answer
        assert out.report
    final = turn(
        client,
        [
            {
                "role": "user",
                "content": render("research_final", question=QUESTION, report=earlier.report, reason=""),
            }
        ],
        0,
    )
    assert final.answer is not None
    assert "[S2]" in final.answer


# --- synthesis, summariser, other prompts ------------------------------------------------------


def synthesis_messages(agents: list[tuple[str, str]]) -> list[dict[str, str]]:
    reports = "\n\n".join(
        render("synthesis_agent", agent=n, answer=answer, report=report)
        for n, (answer, report) in enumerate(agents, 1)
    )
    return [
        {"role": "system", "content": render("synthesis_system", date="2025-01-01")},
        {"role": "user", "content": render("synthesis_user", question=QUESTION, reports=reports)},
    ]


def test_synthesis_takes_the_majority_answer_and_merges_its_findings(client: httpx.Client) -> None:
    agents = [
        ("Philip K. Dick [S2]", "Findings:\n- Philip K. Dick wrote the novel. [S2]\nVisited: https://a"),
        ("Ridley Scott [S3]", "Findings:\n- Ridley Scott directed it. [S3]\n- Scott again. [S9]"),
        ("philip k. dick", "Findings:\n- The film is based on a novel by Philip K. Dick. [S1]"),
    ]
    body = chat(client, synthesis_messages(agents))
    out = parse_output(body["choices"][0]["message"]["content"], "")
    assert out.think
    assert out.answer == "Philip K. Dick [S2]"
    assert set(CITATION.findall(out.report)) == {"S1", "S2"}
    assert "simulated" in out.report.lower()
    assert client.get("/sim/stats").json()["by_role"]["synthesis"] == 1


def test_synthesis_tie_goes_to_the_better_cited_side(client: httpx.Client) -> None:
    agents = [
        ("Ridley Scott", "Findings:\n- Ridley Scott directed it. [S3]"),
        ("Philip K. Dick", "Findings:\n- He wrote the novel. [S2]\n- The film is based on his novel. [S1]"),
        ("", "Findings:\n- none yet"),
    ]
    out = parse_output(chat(client, synthesis_messages(agents))["choices"][0]["message"]["content"], "")
    assert out.answer == "Philip K. Dick"


def test_summariser_extracts_goal_relevant_sentences_as_json(client: httpx.Client) -> None:
    page = DOCS["S2"][2]
    user = f"## Goal\nWho wrote the novel behind Blade Runner?\n\n## Page\n{page}"
    body = chat(client, [{"role": "user", "content": user}])
    extracted = json.loads(body["choices"][0]["message"]["content"])
    assert set(extracted) == {"rational", "evidence", "summary"}
    assert "wrote the novel" in extracted["evidence"]
    assert client.get("/sim/stats").json()["by_role"]["summariser"] == 1


def test_unknown_prompt_gets_a_polite_plain_answer(client: httpx.Client) -> None:
    body = chat(client, [{"role": "user", "content": "Hello, how are you?"}])
    content = body["choices"][0]["message"]["content"]
    assert "simulated" in content.lower()
    assert "<tool_call>" not in content
    assert client.get("/sim/stats").json()["by_role"]["other"] == 1


# --- faults ----------------------------------------------------------------------------------


def test_429_fault_asks_for_an_immediate_retry(client: httpx.Client) -> None:
    configure(client, rate_429=1.0)
    response = client.post("/v1/chat/completions", json={"messages": research_messages()})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0"
    assert response.headers["x-simulated"] == "true"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert client.get("/sim/stats").json()["faults"]["429"] == 1


def test_500_fault(client: httpx.Client) -> None:
    configure(client, rate_500=1.0)
    response = client.post("/v1/chat/completions", json={"messages": research_messages(), "stream": True})
    assert response.status_code == 500
    assert response.json()["error"]["message"]
    assert client.get("/sim/stats").json()["faults"]["500"] == 1


def test_malformed_fault_rotates_through_broken_outputs(client: httpx.Client) -> None:
    configure(client, rate_malformed=1.0)
    messages = research_messages(observation=search_observation(["blade runner"]), round_no=2)
    for _ in MALFORMED_KINDS:
        body = chat(client, messages, seed=1)
        content = body["choices"][0]["message"]["content"]
        calls = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", content, re.DOTALL)
        answers = re.findall(r"<answer>.*?</answer>", content, re.DOTALL)
        well_formed = "</report>" in content and len(calls) + len(answers) == 1 and not answers
        if well_formed:
            with pytest.raises(json.JSONDecodeError):
                json.loads(calls[0])
    stats = client.get("/sim/stats").json()
    assert stats["faults"]["malformed"] == len(MALFORMED_KINDS)
    assert set(stats["malformed_kinds"].values()) == {1}


def test_hang_is_cut_short_by_the_client_timeout(client: httpx.Client) -> None:
    configure(client, rate_hang=1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"messages": research_messages()}, timeout=0.3)
    assert client.get("/sim/stats").json()["faults"]["hang"] == 1
    # A short hang ends in an error the client can retry.
    configure(client, rate_hang=1.0, hang_seconds=0)
    response = client.post("/v1/chat/completions", json={"messages": research_messages()})
    assert response.status_code == 504


def test_faults_are_deterministic_and_scriptable(client: httpx.Client) -> None:
    configure(client, fault_rate=0.5, seed=7)

    def run() -> list[int]:
        client.post("/sim/reset").raise_for_status()
        return [
            client.post(
                "/v1/chat/completions", json={"messages": research_messages(), "seed": n % 3}
            ).status_code
            for n in range(24)
        ]

    first = run()
    assert first == run()
    assert {200, 429, 500} <= set(first)
    assert client.get("/sim/stats").json()["calls"] == 24

    configure(client, rate_429=1.0, max_faults=1)
    statuses = [
        client.post("/v1/chat/completions", json={"messages": research_messages()}).status_code
        for _ in range(2)
    ]
    assert statuses == [429, 200]

    configure(client, rate_500=1.0, fault_roles=["synthesis"])
    assert client.post("/v1/chat/completions", json={"messages": research_messages()}).status_code == 200
    synthesis = client.post("/v1/chat/completions", json={"messages": synthesis_messages([("a", "b")])})
    assert synthesis.status_code == 500


def test_config_endpoint_validates_and_round_trips(client: httpx.Client, sim: SimServer) -> None:
    configure(client, min_rounds=7, latency=0.0, fault_rate=0.3, rate_hang=0.1)
    config = client.get("/sim/config").json()
    assert config["min_rounds"] == 7
    assert SimConfig.model_validate(config).fault_rates() == pytest.approx(
        {"429": 0.2 / 3, "500": 0.2 / 3, "hang": 0.1, "malformed": 0.2 / 3}
    )
    assert sim.config.min_rounds == 7
    assert client.post("/sim/config", json={"rate_429": 0.7, "rate_500": 0.7}).status_code == 422
    assert client.post("/sim/config", json={"latency": -1}).status_code == 422
    assert client.post("/sim/config", json={"no_such_knob": 1}).status_code == 422
    assert client.get("/sim/config").json()["min_rounds"] == 7


def test_stats_count_calls_by_role_and_tokens(client: httpx.Client, sim: SimServer) -> None:
    chat(client, research_messages())
    chat(client, [{"role": "user", "content": "hi"}])
    stats = client.get("/sim/stats").json()
    assert stats["calls"] == stats["completed"] == 2
    assert stats["in_flight"] == 0
    assert stats["by_role"]["research"] == stats["by_role"]["other"] == 1
    assert stats["max_prompt_tokens"]["research"] == sum(
        count_tokens(m["content"]) for m in research_messages()
    )
    assert stats["prompt_tokens"] > 0
    assert stats["completion_tokens"] > 0
    assert sim.stats.calls == 2
    assert client.post("/sim/reset").json()["calls"] == 0


def test_latency_holds_back_the_first_token(client: httpx.Client) -> None:
    configure(client, latency=3600)
    payload = {"messages": research_messages(), "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=payload, timeout=0.3) as response:
        # Headers come at once; the first token is what waits.
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            next(response.iter_lines())
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"messages": research_messages()}, timeout=0.3)

    configure(client, tokens_per_second=0.001)
    with client.stream("POST", "/v1/chat/completions", json=payload, timeout=0.3) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines).removeprefix("data: "))
        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert next(lines) == ""  # the end of the role chunk's SSE event
        # The role chunk is free; every later chunk is paced.
        with pytest.raises(httpx.ReadTimeout):
            next(lines)

    configure(client)
    assert chat(client, research_messages())["choices"][0]["finish_reason"] == "stop"


def test_server_context_managers_give_a_working_base_url() -> None:
    with SimServer(SimConfig(min_rounds=5)) as sim:
        assert sim.openai_base_url == f"{sim.base_url}/v1"
        response = httpx.get(f"{sim.openai_base_url}/models")
        assert response.json()["data"][0]["id"] == MODEL_ID
        assert httpx.get(f"{sim.base_url}/sim/config").json()["min_rounds"] == 5
    with pytest.raises(RuntimeError):
        _ = sim.base_url


@pytest.mark.anyio
async def test_server_runs_as_an_async_context_manager() -> None:
    async with SimServer() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        assert (await http.get("/health")).json()["simulated"] is True
