"""Context-aware calls and outage tolerance of the LLM client, against the scripted fake server:
the real servers' window metadata, their context-exceeded 400 bodies, a server that stalls
mid-stream, and one that is down for a while (a SIMULATED outage through `OutageProxy`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, Step, fake_prompt_tokens
from tests.test_llm_client import MESSAGES, Deltas, make_settings
from workers.errors import ContextOverflow, LLMConfigError, RetryableError
from workers.llm import OpenAIChatModel
from workers.llm.context import parse_overflow
from workers.sim.outage import OutageProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


LONG: list[Any] = [
    {"role": "system", "content": "You are a research agent."},
    {"role": "user", "content": "evidence " * 1000},  # 9,000 characters
]


@pytest.mark.parametrize(
    ("metadata", "n_ctx"),
    [
        ({"props": {"default_generation_settings": {"n_ctx": 2048}, "total_slots": 4}}, 2048),  # llama.cpp
        (
            {"models": {"object": "list", "data": [{"id": "tongyi-test", "max_model_len": 3000}]}},
            3000,
        ),  # vLLM
        (
            {"models": {"data": [{"id": "m", "meta": {"n_ctx_train": 4096, "n_vocab": 49152}}]}},
            4096,
        ),  # llama.cpp
    ],
)
async def test_max_tokens_fits_the_window_the_server_reports(
    fake: FakeOpenAI, metadata: dict[str, Any], n_ctx: int
) -> None:
    fake.metadata("main", **metadata)
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        await model.chat("research", MESSAGES)
    sent = fake.received("main")[0].body
    assert sent["max_tokens"] < n_ctx
    assert sent["max_tokens"] + fake_prompt_tokens(sent) <= n_ctx


async def test_context_length_setting_wins_over_the_server(fake: FakeOpenAI) -> None:
    fake.metadata("main", props={"default_generation_settings": {"n_ctx": 100_000}})
    async with OpenAIChatModel.from_settings(make_settings(fake, context_length=1024)) as model:
        await model.chat("research", MESSAGES)
    assert fake.received("main")[0].body["max_tokens"] < 1024


async def test_vllm_overflow_from_max_tokens_is_retried_once_with_fewer_tokens(fake: FakeOpenAI) -> None:
    fake.context_limit("main", 2048, "vllm")
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES)
        # The window is learnt: the next call fits at once.
        await model.chat("research", MESSAGES)

    assert result.content == "hello from the fake"
    assert fake.overflows == 1
    first, second, third = (r.body for r in fake.received("main"))
    assert first["max_tokens"] == 8192
    assert fake_prompt_tokens(second) + second["max_tokens"] <= 2048
    assert fake_prompt_tokens(third) + third["max_tokens"] <= 2048


@pytest.mark.parametrize("wording", ["llamacpp", "vllm", "openai"])
async def test_a_prompt_over_the_window_is_a_context_overflow_not_a_config_error(
    fake: FakeOpenAI, wording: str
) -> None:
    fake.context_limit("main", 1000, wording)
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        with pytest.raises(ContextOverflow) as caught:
            await model.chat("research", LONG)

    assert not isinstance(caught.value, LLMConfigError)
    chars = sum(len(m["content"]) for m in LONG)
    # The caller is told how far to trim: to under the window, measured in characters.
    assert 0 < caught.value.prompt_chars < chars
    assert caught.value.prompt_chars / 4 <= 1000
    assert caught.value.context_length == 1000
    # Sent once, or twice when the first 400 could be put down to max_tokens (vLLM); never more.
    assert 1 <= fake.count("main") <= 2


async def test_a_prompt_known_not_to_fit_is_not_sent(fake: FakeOpenAI) -> None:
    async with OpenAIChatModel.from_settings(make_settings(fake, context_length=1000)) as model:
        with pytest.raises(ContextOverflow):
            await model.chat("research", LONG)
    assert fake.count("main") == 0


def test_overflow_wordings_are_read() -> None:
    vllm = parse_overflow(
        400,
        '{"object":"error","message":"This model\'s maximum context length is 6048 tokens. However, you '
        "requested 6616 tokens (568 in the messages, 6048 in the completion). Please reduce the length "
        'of the messages or completion.","type":"BadRequestError","param":null,"code":400}',
    )
    assert vllm is not None and (vllm.context_length, vllm.prompt_tokens) == (6048, 568)
    old_llamacpp = parse_overflow(
        400,
        '{"error":{"code":400,"message":"the request exceeds the available context size, '
        'try increasing it"}}',
    )
    assert old_llamacpp is not None and old_llamacpp.context_length is None
    assert parse_overflow(400, '{"error":{"message":"Unsupported parameter: logprobs"}}') is None
    assert parse_overflow(500, "maximum context length is 10 tokens") is None


async def test_a_stream_that_stalls_ends_at_the_read_timeout_and_is_retried(fake: FakeOpenAI) -> None:
    fake.script("main", Step(content="abcdefgh" * 4, stall_after=2), Step(content="complete"))
    deltas = Deltas()
    resets = 0

    async def on_reset() -> None:
        nonlocal resets
        resets += 1

    llm = make_settings(fake, timeout=60.0, read_timeout=0.5)
    async with OpenAIChatModel.from_settings(llm) as model:
        result = await model.chat("research", MESSAGES, on_delta=deltas, on_reset=on_reset)

    assert result.content == "complete"
    assert fake.count("main") == 2
    assert resets == 1  # the stalled attempt's two chunks were withdrawn
    # The stalled attempt had the prompt and sent two chunks: counted, as an estimate.
    assert result.estimated_tokens > 0
    assert result.usage.total_tokens == 11 + 7 + result.estimated_tokens
    assert result.usage.calls == 1


async def test_retries_go_on_for_the_retry_budget_not_a_count(fake: FakeOpenAI) -> None:
    fake.respond("main", lambda body: Step(status=503))
    llm = make_settings(
        fake, max_retries=10_000, retry_budget=0.6, retry_base_delay=0.01, retry_max_delay=0.05
    )
    async with OpenAIChatModel.from_settings(llm) as model:
        with pytest.raises(RetryableError) as caught:
            await model.chat("research", MESSAGES)
    assert "retry budget of 0.6s spent" in str(caught.value)
    assert fake.count("main") > 5  # the old fixed count of attempts


async def test_a_call_rides_out_a_short_outage(fake: FakeOpenAI) -> None:
    with OutageProxy(fake.port) as proxy:
        proxy.down_for(1.0)
        llm = make_settings(
            fake, max_retries=10_000, retry_budget=20.0, retry_base_delay=0.05, retry_max_delay=0.2
        )
        llm = llm.model_copy(update={"base_url": f"http://127.0.0.1:{proxy.port}/main/v1"})
        async with OpenAIChatModel.from_settings(llm) as model:
            result = await model.chat("research", MESSAGES)
    assert result.content == "hello from the fake"
    assert proxy.outages == 1 and fake.count("main") == 1
    # Refused connections never reached the server: nothing is charged for them.
    assert result.estimated_tokens == 0 and result.usage.total_tokens == 18
