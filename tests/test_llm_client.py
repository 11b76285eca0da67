"""The OpenAI-compatible LLM client against a scripted fake endpoint over real loopback HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.fake_openai import FakeOpenAI, Step
from tests.metric_samples import delta, samples
from workers.errors import LLMConfigError, RetryableError
from workers.llm import LocalLimiter, OpenAIChatModel
from workers.llm.sse import SSEDecoder, iter_sse_data
from workers.llm.types import ChatMessage
from workers.net.retry import backoff_delay, parse_retry_after
from workers.settings import LLMSettings

MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You are a research agent."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def make_settings(fake: FakeOpenAI, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "base_url": fake.base_url("main"),
        "api_key": "sk-test",
        "model": "tongyi-test",
        "timeout": 10.0,
        "max_retries": 2,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
    }
    values.update(overrides)
    return LLMSettings.model_validate(values)


async def until(fake: FakeOpenAI, predicate: Callable[[FakeOpenAI], bool]) -> None:
    """Wait (without sleeping) for the fake to reach a state."""
    reached = await anyio.to_thread.run_sync(fake.wait_until, predicate)
    assert reached, "the fake endpoint never reached the expected state"


def gate_state(passed: int, held: int) -> Callable[[FakeOpenAI], bool]:
    return lambda f: f.passed_gate == passed and f.held == held


class Deltas:
    def __init__(self) -> None:
        self.parts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.parts.append(text)


# -- happy paths -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_streaming_call_sends_sampling_settings_and_reads_reasoning(fake: FakeOpenAI) -> None:
    fake.script("main", Step(content="Paris.", reasoning="France's capital is Paris."))
    llm = make_settings(fake, stream=False)
    deltas = Deltas()
    async with OpenAIChatModel.from_settings(llm) as model:
        result = await model.chat("research", MESSAGES, seed=7, on_delta=deltas)

    assert result.content == "Paris."
    assert result.reasoning == "France's capital is Paris."
    assert result.usage.prompt_tokens == 11
    assert result.usage.completion_tokens == 7
    assert result.usage.calls == 1
    assert result.finish_reason == "stop"
    assert result.endpoint == fake.base_url("main")
    assert result.model == "tongyi-test"
    assert deltas.parts == []

    [request] = fake.received("main")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {
        "model": "tongyi-test",
        "messages": MESSAGES,
        "temperature": llm.temperature,
        "top_p": llm.top_p,
        "presence_penalty": llm.presence_penalty,
        "max_tokens": llm.max_output_tokens,
        "stream": False,
        "seed": 7,
    }


@pytest.mark.anyio
async def test_streaming_call_delivers_deltas_and_reads_reasoning_field(fake: FakeOpenAI) -> None:
    fake.script(
        "main",
        Step(
            content="The capital of France is Paris.",
            reasoning="Recall European capitals.",
            reasoning_field="reasoning",
            usage={"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        ),
    )
    deltas = Deltas()
    async with OpenAIChatModel.from_settings(make_settings(fake, api_key="")) as model:
        result = await model.chat("research", MESSAGES, temperature=0.85, max_tokens=256, on_delta=deltas)

    assert result.content == "The capital of France is Paris."
    # One delta per read of the stream: how many depends on how the chunks arrive (a busy
    # machine reads them all at once), not on the client.
    assert deltas.parts and all(deltas.parts)
    assert "".join(deltas.parts) == result.content
    assert result.reasoning == "Recall European capitals."
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (30, 12)

    [request] = fake.received("main")
    assert "authorization" not in request.headers
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["temperature"] == 0.85
    assert request.body["max_tokens"] == 256
    assert "seed" not in request.body


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_usage_is_estimated_when_the_endpoint_sends_none(fake: FakeOpenAI, stream: bool) -> None:
    fake.script("main", Step(content="x" * 40, reasoning="y" * 9, usage=None))
    async with OpenAIChatModel.from_settings(make_settings(fake, stream=stream)) as model:
        result = await model.chat("research", MESSAGES)

    prompt_chars = sum(len(m["content"]) for m in MESSAGES)
    assert result.usage.prompt_tokens == math.ceil(prompt_chars / 4)
    assert result.usage.completion_tokens == math.ceil(49 / 4)
    assert result.usage.calls == 1


@pytest.mark.anyio
async def test_roles_use_their_own_endpoint_or_the_research_one(fake: FakeOpenAI) -> None:
    llm = make_settings(fake, synthesis={"base_url": fake.base_url("synth"), "api_key": "sk-synth"})
    async with OpenAIChatModel.from_settings(llm) as model:
        synthesis = await model.chat("synthesis", MESSAGES)
        summary = await model.chat("summariser", MESSAGES)

    assert synthesis.endpoint == fake.base_url("synth")
    [synth_request] = fake.received("synth")
    # An override without a model borrows the research model; its key is its own.
    assert synth_request.body["model"] == "tongyi-test"
    assert synth_request.headers["authorization"] == "Bearer sk-synth"
    assert summary.endpoint == fake.base_url("main")
    assert fake.count("main") == 1


# -- retries and fallbacks ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_retry_after_is_honoured(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=429, headers={"Retry-After": "0"}), Step(content="after the pause"))
    # Jittered backoff here could be up to ten minutes: finishing at once means Retry-After won.
    llm = make_settings(fake, retry_base_delay=600, retry_max_delay=600)
    async with OpenAIChatModel.from_settings(llm) as model:
        with anyio.fail_after(10):
            result = await model.chat("research", MESSAGES)

    assert result.content == "after the pause"
    assert fake.count("main") == 2


@pytest.mark.anyio
async def test_503_retry_after_as_http_date(fake: FakeOpenAI) -> None:
    past = format_datetime(datetime(2020, 1, 1, tzinfo=UTC), usegmt=True)
    fake.script("main", Step(status=503, headers={"Retry-After": past}), Step(content="back"))
    llm = make_settings(fake, retry_base_delay=600, retry_max_delay=600)
    async with OpenAIChatModel.from_settings(llm) as model:
        with anyio.fail_after(10):
            result = await model.chat("research", MESSAGES)

    assert result.content == "back"
    assert fake.count("main") == 2


@pytest.mark.anyio
async def test_500_then_success(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=500), Step(status=502), Step(content="third time lucky"))
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "third time lucky"
    assert fake.count("main") == 3


@pytest.mark.anyio
async def test_hang_times_out_is_retried_then_falls_back(fake: FakeOpenAI) -> None:
    fake.script("main", Step(hang=True), Step(hang=True))
    fake.script("backup", Step(content="from the fallback"))
    llm = make_settings(
        fake,
        timeout=0.3,
        max_retries=1,
        fallbacks=[{"base_url": fake.base_url("backup"), "model": "backup-model", "timeout": 5}],
    )
    async with OpenAIChatModel.from_settings(llm) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "from the fallback"
    assert result.endpoint == fake.base_url("backup")
    assert result.model == "backup-model"
    assert fake.count("main") == 2
    assert fake.count("backup") == 1
    # The timed-out requests were really abandoned, not left running.
    await until(fake, lambda f: f.disconnects == 2)


@pytest.mark.anyio
async def test_connection_dropped_mid_stream_is_retried(fake: FakeOpenAI) -> None:
    text = "A complete answer after a dropped connection."
    fake.script("main", Step(content=text, drop_after=2), Step(content=text))
    deltas = Deltas()
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES, on_delta=deltas)

    assert result.content == text
    assert fake.count("main") == 2
    # The cut attempt's first deltas went out before the retry streamed the whole answer again.
    assert "".join(deltas.parts).endswith(text)
    assert "".join(deltas.parts) != text


@pytest.mark.anyio
async def test_a_retried_stream_tells_the_caller_to_drop_what_it_showed(fake: FakeOpenAI) -> None:
    text = "A complete answer after a dropped connection."
    fake.script("main", Step(content=text, drop_after=2), Step(content=text))
    shown: list[str] = []
    resets = 0

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def on_reset() -> None:
        nonlocal resets
        resets += 1
        shown.clear()

    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES, on_delta=on_delta, on_reset=on_reset)

    assert resets == 1
    assert "".join(shown) == result.content == text


@pytest.mark.anyio
async def test_no_reset_when_the_failed_attempt_sent_nothing(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=500), Step(content="fine"))
    resets = 0

    async def on_reset() -> None:
        nonlocal resets
        resets += 1

    async def ignore(piece: str) -> None:
        return None

    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES, on_delta=ignore, on_reset=on_reset)

    assert result.content == "fine"
    assert resets == 0


@pytest.mark.anyio
async def test_stream_without_done_or_finish_is_treated_as_dropped(fake: FakeOpenAI) -> None:
    cut = 'data: {"choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": null}]}\n\n'
    fake.script("main", Step(raw=cut, raw_content_type="text/event-stream"), Step(content="whole"))
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "whole"
    assert fake.count("main") == 2


@pytest.mark.anyio
async def test_error_inside_a_200_stream_and_garbled_body_are_retried(fake: FakeOpenAI) -> None:
    in_stream = 'data: {"error": {"message": "Provider returned error", "code": 502}}\n\n'
    fake.script(
        "main",
        Step(raw=in_stream, raw_content_type="text/event-stream"),
        Step(raw="<html>bad gateway</html>", raw_content_type="text/html"),
        Step(content="fine"),
    )
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "fine"
    assert fake.count("main") == 3


def _chunk(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


@pytest.mark.anyio
async def test_an_event_holding_two_chunks_is_malformed_even_among_good_ones(fake: FakeOpenAI) -> None:
    # The chunks of one read are parsed together; an event that is two JSON objects must not
    # pass as two chunks.
    two = f"{_chunk('b')},{_chunk('c')}"
    stream = f"data: {_chunk('a')}\n\ndata: {two}\n\ndata: {_chunk('d')}\n\ndata: [DONE]\n\n"
    fake.script("main", Step(raw=stream, raw_content_type="text/event-stream"), Step(content="fine"))
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "fine"
    assert fake.count("main") == 2


@pytest.mark.anyio
async def test_what_streamed_before_an_error_chunk_is_shown_then_reset(fake: FakeOpenAI) -> None:
    error = json.dumps({"error": {"message": "Provider returned error", "code": 502}})
    stream = f"data: {_chunk('half an ')}\n\ndata: {_chunk('answer')}\n\ndata: {error}\n\n"
    fake.script("main", Step(raw=stream, raw_content_type="text/event-stream"), Step(content="whole"))
    shown: list[str] = []
    seen_before_reset: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def on_reset() -> None:
        seen_before_reset.append("".join(shown))
        shown.clear()

    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        result = await model.chat("research", MESSAGES, on_delta=on_delta, on_reset=on_reset)

    assert seen_before_reset == ["half an answer"]
    assert "".join(shown) == result.content == "whole"


@pytest.mark.anyio
async def test_stream_requested_but_json_answered_is_accepted(fake: FakeOpenAI) -> None:
    body = '{"choices": [{"index": 0, "message": {"content": "plain"}, "finish_reason": "stop"}]}'
    fake.script("main", Step(raw=body))
    async with OpenAIChatModel.from_settings(make_settings(fake, model="")) as model:
        result = await model.chat("research", MESSAGES)

    assert result.content == "plain"
    assert "model" not in fake.received("main")[0].body


@pytest.mark.anyio
async def test_exhausted_endpoints_raise_retryable_with_a_summary(fake: FakeOpenAI) -> None:
    fake.script("main", *[Step(status=500, error="boom")] * 3)
    fake.script("backup", *[Step(status=502, error="upstream down")] * 3)
    llm = make_settings(fake, fallbacks=[{"base_url": fake.base_url("backup"), "max_retries": 2}])
    async with OpenAIChatModel.from_settings(llm) as model:
        with pytest.raises(RetryableError) as caught:
            await model.chat("research", MESSAGES)

    message = str(caught.value)
    assert "6 attempt(s) on 2 endpoint(s)" in message
    assert fake.base_url("main") in message
    assert fake.base_url("backup") in message
    assert "HTTP 500: boom" in message
    assert "HTTP 502: upstream down" in message
    assert (fake.count("main"), fake.count("backup")) == (3, 3)


@pytest.mark.anyio
async def test_retry_after_beyond_the_max_delay_moves_to_the_fallback(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=429, headers={"Retry-After": "120"}))
    llm = make_settings(fake, fallbacks=[{"base_url": fake.base_url("backup")}])
    async with OpenAIChatModel.from_settings(llm) as model:
        with anyio.fail_after(10):
            result = await model.chat("research", MESSAGES)

    assert result.endpoint == fake.base_url("backup")
    assert fake.count("main") == 1


@pytest.mark.anyio
async def test_retry_after_beyond_the_max_delay_without_fallback_reports_it(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=429, headers={"Retry-After": "120"}))
    async with OpenAIChatModel.from_settings(make_settings(fake)) as model:
        with pytest.raises(RetryableError) as caught:
            await model.chat("research", MESSAGES)

    assert caught.value.retry_after == 120
    assert fake.count("main") == 1


@pytest.mark.anyio
async def test_what_a_given_up_endpoint_streamed_is_reset_before_the_fallback_streams(
    fake: FakeOpenAI,
) -> None:
    text = "An answer the primary could not finish."
    fake.script("main", Step(content=text, drop_after=2))
    fake.script("backup", Step(content=text))
    shown: list[str] = []
    resets = 0

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def on_reset() -> None:
        nonlocal resets
        resets += 1
        shown.clear()

    llm = make_settings(fake, max_retries=0, fallbacks=[{"base_url": fake.base_url("backup")}])
    async with OpenAIChatModel.from_settings(llm) as model:
        result = await model.chat("research", MESSAGES, on_delta=on_delta, on_reset=on_reset)

    assert result.endpoint == fake.base_url("backup")
    assert resets == 1
    assert "".join(shown) == result.content == text
    # The primary's cut attempt was charged: its estimate is in the call's usage.
    assert result.estimated_tokens > 0
    assert result.usage.prompt_tokens > 11
    assert result.usage.calls == 1


@pytest.mark.anyio
async def test_metrics_count_attempts_per_endpoint_and_the_call_once(fake: FakeOpenAI) -> None:
    fake.script("main", Step(status=500), Step(status=500))
    llm = make_settings(fake, max_retries=1, fallbacks=[{"base_url": fake.base_url("backup")}])
    before = samples()
    async with OpenAIChatModel.from_settings(llm) as model:
        result = await model.chat("research", MESSAGES)
    after = samples()

    assert result.endpoint == fake.base_url("backup")
    main, backup = (f"{fake.base_url(name)}#tongyi-test" for name in ("main", "backup"))
    attempts = "hr_llm_attempts_total"
    assert delta(before, after, attempts, endpoint=main, role="research", outcome="retryable_error") == 2
    assert delta(before, after, attempts, endpoint=backup, role="research", outcome="ok") == 1
    assert delta(before, after, "hr_llm_retries_total", endpoint=main) == 1
    assert delta(before, after, "hr_llm_calls_total", role="research", outcome="ok") == 1
    assert delta(before, after, "hr_llm_calls_total", outcome="failed") == 0


# -- fail fast ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (401, "invalid api key", ["HR_LLM__API_KEY", "401"]),
        (403, "forbidden", ["HR_LLM__API_KEY", "403"]),
        (404, "model not found", ["HR_LLM__MODEL", "HR_LLM__BASE_URL"]),
        (400, "Unsupported parameter: 'logprobs'", ["Unsupported parameter: 'logprobs'"]),
        (422, "top_p must be at most 1", ["top_p must be at most 1"]),
    ],
)
async def test_config_errors_fail_fast_without_retry_or_fallback(
    fake: FakeOpenAI, status: int, error: str, expected: list[str]
) -> None:
    fake.script("main", Step(status=status, error=error))
    llm = make_settings(fake, fallbacks=[{"base_url": fake.base_url("backup")}])
    async with OpenAIChatModel.from_settings(llm) as model:
        with pytest.raises(LLMConfigError) as caught:
            await model.chat("research", MESSAGES)

    for part in expected:
        assert part in str(caught.value)
    assert fake.count("main") == 1
    assert fake.count("backup") == 0


@pytest.mark.anyio
async def test_config_errors_name_the_role_and_fallback_settings(fake: FakeOpenAI) -> None:
    fake.script("synth", Step(status=401))
    fake.script("summ", Step(status=404))
    fake.script("main", Step(status=500), Step(status=500), Step(status=500))
    fake.script("backup", Step(status=403))
    llm = make_settings(
        fake,
        synthesis={"base_url": fake.base_url("synth")},
        summariser={"base_url": fake.base_url("summ")},
        fallbacks=[{"base_url": fake.base_url("backup")}],
    )
    async with OpenAIChatModel.from_settings(llm) as model:
        with pytest.raises(LLMConfigError, match=r"HR_LLM__SYNTHESIS__API_KEY"):
            await model.chat("synthesis", MESSAGES)
        with pytest.raises(LLMConfigError, match=r"HR_LLM__SUMMARISER__MODEL"):
            await model.chat("summariser", MESSAGES)
        with pytest.raises(LLMConfigError, match=r"HR_LLM__FALLBACKS\[0\]\.api_key"):
            await model.chat("research", MESSAGES)


def test_no_endpoint_configured_names_the_setting() -> None:
    with pytest.raises(LLMConfigError, match="HR_LLM__BASE_URL"):
        OpenAIChatModel.from_settings(LLMSettings())


@pytest.mark.anyio
async def test_chat_before_start_is_a_clear_error(fake: FakeOpenAI) -> None:
    model = OpenAIChatModel.from_settings(make_settings(fake))
    with pytest.raises(RuntimeError, match="not started"):
        await model.chat("research", MESSAGES)


# -- concurrency and cancellation --------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrency_cap_per_endpoint(fake: FakeOpenAI) -> None:
    calls = 6
    fake.script("main", *[Step(hold=True, content=f"answer {i}") for i in range(calls)])
    results: list[str] = []
    async with OpenAIChatModel.from_settings(make_settings(fake, max_concurrency=2)) as model:

        async def one() -> None:
            results.append((await model.chat("research", MESSAGES)).content)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(calls):
                    tg.start_soon(one)
                # Let requests through one at a time; each time the cap must be full, never over.
                for done in range(calls):
                    await until(fake, gate_state(passed=done, held=min(2, calls - done)))
                    assert fake.in_flight <= 2
                    fake.release()

    assert sorted(results) == sorted(f"answer {i}" for i in range(calls))
    assert fake.max_in_flight == 2


@pytest.mark.anyio
@pytest.mark.timeout(15)  # a shielded request would never return: fail fast instead of hanging
async def test_cancelled_caller_aborts_the_http_request(fake: FakeOpenAI) -> None:
    fake.script("main", Step(hang=True))
    async with OpenAIChatModel.from_settings(make_settings(fake, timeout=600)) as model:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(model.chat, "research", MESSAGES)
                await until(fake, lambda f: f.count("main") == 1)
                cancelled_at = anyio.current_time()
                tg.cancel_scope.cancel()
        assert anyio.current_time() - cancelled_at < 2
        # The server saw the client hang up: the request was aborted, not left running.
        await until(fake, lambda f: f.disconnects == 1)
    assert fake.count("main") == 1


# -- building blocks ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_local_limiter_paces_requests_per_minute() -> None:
    limiter = LocalLimiter(burst=2)
    with anyio.fail_after(5):
        for _ in range(2):
            async with limiter.slot("k", 10, rpm=60):
                pass
    # The third is due a second after the first, so it cannot start within a fifth of one.
    with anyio.move_on_after(0.2) as scope:
        async with limiter.slot("k", 10, rpm=60):
            pytest.fail("admitted faster than 60 requests per minute allows")
    assert scope.cancelled_caught
    # Other endpoints have their own budget.
    with anyio.fail_after(5):
        async with limiter.slot("other", 10, rpm=60):
            pass


def test_retry_after_parsing() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after("1.5", now=now) == 1.5
    assert parse_retry_after("-4", now=now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_backoff_is_full_jitter_under_a_cap() -> None:
    assert backoff_delay(0, 0.5, 20, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 20, rand=lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 20, rand=lambda: 1.0) == 20.0
    assert backoff_delay(10, 0.5, 20, rand=lambda: 0.0) == 0.0
    assert backoff_delay(10_000, 0.5, 20, rand=lambda: 0.5) == 10.0


@pytest.mark.anyio
async def test_sse_data_events() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": comment", "event: message", "data: {", 'data:  "a": 1}', "", "", "data:[DONE]"]:
            yield line

    assert [data async for data in iter_sse_data(lines())] == ['{\n "a": 1}', "[DONE]"]


def test_sse_decoder_takes_bytes_as_they_arrive() -> None:
    decoder = SSEDecoder()
    text = 'data: {"content": "Zürich 北京"}\r\n\r\ndata: [DONE]'.encode()
    # Cut inside a multi-byte character and between the CR and LF.
    inside, crlf = text.index("ü".encode()) + 1, text.index(b"\r\n") + 1
    pieces = [text[:inside], text[inside:crlf], text[crlf:]]
    events = [data for piece in pieces for data in decoder.feed(piece)]
    assert events == ['{"content": "Zürich 北京"}']
    assert decoder.close() == ["[DONE]"]
