"""The OpenAI-compatible facade, driven by the official `openai` SDK, unchanged, against a real
uvicorn: a Heavy job as a model, streaming and not, `GET /v1/models`, the job behind it owned
by the caller's tenant, and a disconnecting client that leaves the job running. The jobs run
on the SIMULATED model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.routes.chat import PRESETS
from tests.server import LiveServer, api_settings, live_server, run_to_end
from tests.test_tenants import ALICE, BOB, TENANTS, auth

pytestmark = pytest.mark.anyio

QUESTION = "What is the tallest mountain in Valdoria?"


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, server={"tenants": TENANTS})) as server:
        yield server


def sdk(server: LiveServer, key: str = ALICE) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(trust_env=False, timeout=60),
    )


async def test_models_lists_the_presets(api: LiveServer) -> None:
    async with sdk(api) as client:
        models = await client.models.list()
    ids = [m.id for m in models.data]
    assert ids == list(PRESETS) and {"heavy", "heavy-8"} <= set(ids)
    assert all(m.owned_by == "heavyresearch" for m in models.data)


async def test_a_completion_is_a_job_of_the_callers_tenant(api: LiveServer) -> None:
    async with sdk(api) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="heavy-2",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": QUESTION},
            ],
            extra_body={"heavyresearch": {"max_rounds": 6, "metadata": {"via": "sdk"}}},
        )
        completion = raw.parse()
    job_id = raw.headers["x-job-id"]
    assert completion.id == f"chatcmpl-{job_id}"
    assert completion.model == "heavy-2"
    content = completion.choices[0].message.content or ""
    assert completion.choices[0].finish_reason == "stop"
    assert "Sources:" in content and "[1]" in content
    assert completion.usage is not None and completion.usage.total_tokens > 0

    async with api.client() as http:
        job = (await http.get(f"/v1/research/{job_id}", headers=auth(ALICE))).json()
        assert job["status"] == "succeeded" and job["request"]["agents"] == 2
        assert job["request"]["max_rounds"] == 6 and job["request"]["query"] == QUESTION
        assert job["result"]["answer"] in content
        assert (await http.get(f"/v1/research/{job_id}", headers=auth(BOB))).status_code == 404


async def test_streaming_sends_progress_as_reasoning_then_the_answer_and_usage(api: LiveServer) -> None:
    reasoning, content, usage, finish = [], [], [], []
    async with sdk(api) as client:
        stream = await client.chat.completions.create(
            model="heavy-2",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            extra_body={"heavyresearch": {"max_rounds": 6}},
        )
        ids = set()
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage.append(chunk.usage)
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                if extra.get("reasoning_content"):
                    reasoning.append(extra["reasoning_content"])
                if choice.delta.content:
                    content.append(choice.delta.content)
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    text = "".join(reasoning)
    assert "agent 0: round 1" in text and "agent 1: round 1" in text and "synthesis" in text
    assert "search" in text  # the tool calls
    assert "Sources:" in "".join(content)
    assert finish == ["stop"] and len(usage) == 1 and usage[0].total_tokens > 0
    (completion_id,) = ids
    assert completion_id.startswith("chatcmpl-job_")


async def test_a_client_that_disconnects_leaves_the_job_running(mini_corpus: Path) -> None:
    settings = api_settings(mini_corpus, sim={"latency": 0.2}, server={"tenants": TENANTS})
    with live_server(settings) as server:
        async with (
            sdk(server) as client,
            client.chat.completions.with_streaming_response.create(
                model="heavy-2", messages=[{"role": "user", "content": QUESTION}], stream=True
            ) as response,
        ):
            job_id = response.headers["x-job-id"]
            async for chunk in await response.parse():
                if chunk.choices and (chunk.choices[0].delta.model_extra or {}).get("reasoning_content"):
                    break  # leave mid-job
        async with server.client(headers=auth(ALICE)) as http:
            events = await run_to_end(http, job_id)
            assert events[-1]["type"] == "job.succeeded"


async def test_errors_reach_the_sdk_as_its_own_exceptions(api: LiveServer) -> None:
    async with sdk(api) as client:
        with pytest.raises(openai.UnprocessableEntityError, match="unknown model"):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.UnprocessableEntityError, match="agents"):
            await client.chat.completions.create(
                model="heavy",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"heavyresearch": {"agents": 0}},
            )
    async with sdk(api, key="not-a-key") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
