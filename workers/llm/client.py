"""`EndpointModel`: chat completions from one OpenAI-compatible endpoint (vLLM, SGLang, Ollama,
llama.cpp server, OpenRouter, DashScope, OpenAI), over the shared HTTP client (`http.py`).
A role's endpoints in order (primary, then `llm.fallbacks`) are a `FallbackModel` over these.

An endpoint is retried for up to `retry_budget` seconds (an outage is ridden out by time, not by a count of
attempts; `max_retries` only caps the count); each attempt runs inside a limiter slot and a
deadline of `timeout` seconds covering the whole response, stream included, and a streamed
attempt that receives no byte for `read_timeout` seconds ends at once (a stopping server holds
connections open without sending). Between attempts it waits full-jitter exponential backoff, or
exactly what a 429/503 asked for in `Retry-After`; a server asking for longer than
`retry_max_delay` is out of service for this call, and the endpoint gives up at once.

Before sending, `max_tokens` is fitted to what the prompt leaves of the model's context window
(`workers.llm.context`); a prompt that leaves too little raises `ContextOverflow` unsent.

    outcome of an attempt                              what `chat` does
    2xx with a completion                              returns a ChatResult
    408, 429, 5xx, timeout, connect error, connection  retries, then raises RetryableError
      dropped mid-stream, a 2xx that is no completion    summarising its attempts (the fallback
                                                         chain then tries the next endpoint)
    400 context exceeded (vLLM, llama.cpp, OpenAI)     learns the window; retries once with a
                                                         smaller max_tokens when the prompt fits,
                                                         else raises ContextOverflow (trim, retry)
    401/403, 404, 400 and any other 4xx, bad base_url  raises LLMConfigError at once, naming the
                                                         setting to fix

Content deltas of a streamed call go to `on_delta` as they arrive. A retried attempt streams again
from its start; before it, `on_reset` is called when the failed attempt had sent deltas, so a
caller showing them can clear what it showed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import pydantic_core

from workers.errors import ContextOverflow, HeavyResearchError, LLMConfigError, RetryableError, WireError
from workers.llm.context import (
    ContextWindows,
    Overflow,
    allowed_prompt_chars,
    estimate_prompt_tokens,
    fit_max_tokens,
    parse_overflow,
    prompt_chars,
)
from workers.llm.endpoints import Endpoint
from workers.llm.http import HTTPClient, Response
from workers.llm.limiter import Limiter
from workers.llm.sse import SSEDecoder
from workers.llm.types import ChatMessage, ChatResult, DeltaCallback, ResetCallback, Role
from workers.llm.wire import (
    Reply,
    error_detail,
    error_in_payload,
    estimate_tokens,
    load_object,
    parse_completion,
)
from workers.metrics import engine_metrics
from workers.models import Usage
from workers.net.retry import backoff_delay, parse_retry_after
from workers.settings import LLMSettings

logger = logging.getLogger(__name__)

USER_AGENT = "heavyresearch"


class EndpointModel:
    """A `ChatModel` over one OpenAI-compatible endpoint: its retries, limiter slot, deadline,
    stream and context fitting. `role` only labels metrics and logs; which endpoints serve a
    role is the `FallbackModel`'s business. The HTTP client and the context windows are shared
    with the other endpoints' models and owned by `OpenAIChatModel`."""

    def __init__(
        self,
        llm: LLMSettings,
        endpoint: Endpoint,
        *,
        limiter: Limiter,
        http: Callable[[], HTTPClient],
        windows: ContextWindows,
    ) -> None:
        self._llm = llm
        self.endpoint = endpoint
        self._limiter = limiter
        self._http = http
        self._windows = windows

    async def chat(
        self,
        role: Role,
        messages: list[ChatMessage],
        *,
        seed: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: DeltaCallback | None = None,
        on_reset: ResetCallback | None = None,
        stop: list[str] | None = None,
    ) -> ChatResult:
        http = self._http()
        endpoint = self.endpoint
        if not endpoint.url.startswith(("http://", "https://")):
            raise LLMConfigError(
                f"cannot call {endpoint.url}: not an http(s) URL; check {endpoint.env('base_url')}"
            )
        metrics = engine_metrics()
        tap = _DeltaTap(on_delta) if on_delta is not None else None
        # Attempts the server had when they failed: estimated, and added to the call's usage.
        lost = Usage()
        body = self._body(endpoint, messages, seed, temperature, max_tokens, stream=on_delta is not None)
        if stop:
            body["stop"] = list(stop)
        await self._fit(http, endpoint, messages, body)
        reasons: list[str] = []
        tries = endpoint.settings.max_retries + 1
        budget_ends = time.monotonic() + endpoint.settings.retry_budget
        refitted = False
        attempt = 0
        last_retry_after: float | None = None
        while True:
            if tap is not None:
                tap.chars = 0
            if tap is not None and tap.sent:
                # A failed attempt had streamed part of its answer: the caller drops it.
                tap.sent = False
                if on_reset is not None:
                    await on_reset()
            queued = time.perf_counter()
            sent = queued
            try:
                async with self._limiter.slot(
                    endpoint.key, endpoint.settings.max_concurrency, endpoint.settings.requests_per_minute
                ):
                    sent = time.perf_counter()
                    metrics.limiter_wait.labels(endpoint.key, role).observe(sent - queued)
                    reply = await self._attempt(http, endpoint, body, tap)
            except _Overflowed as exc:
                metrics.llm_attempt(endpoint.key, role, "overflow", time.perf_counter() - sent)
                if refitted:
                    raise self._overflow(endpoint, messages, exc.overflow) from None
                refitted = True
                self._refit(endpoint, messages, body, exc.overflow)
                continue
            except RetryableError as exc:
                metrics.llm_attempt(endpoint.key, role, "retryable_error", time.perf_counter() - sent)
                if exc.charged:
                    lost = lost.add(_lost_usage(messages, tap.chars if tap is not None else 0))
                reasons.append(str(exc))
                last_retry_after = exc.retry_after
                attempt += 1
                if attempt >= tries:
                    break
                delay = self._delay(attempt - 1, exc.retry_after)
                if delay is None:
                    reasons.append(
                        f"asked to wait {exc.retry_after:g}s, over retry_max_delay "
                        f"{self._llm.retry_max_delay:g}s: next endpoint"
                    )
                    break
                left = budget_ends - time.monotonic()
                if left <= 0:
                    reasons.append(f"retry budget of {endpoint.settings.retry_budget:g}s spent")
                    break
                delay = min(delay, left)
                logger.warning(
                    "LLM %s call to %s failed (attempt %d, %.0fs of retry budget left): %s; "
                    "retrying in %.2fs",
                    role,
                    endpoint.describe(),
                    attempt,
                    left,
                    exc,
                    delay,
                )
                metrics.llm_retries.labels(endpoint.key, role).inc()
                await anyio.sleep(delay)
            except LLMConfigError:
                metrics.llm_attempt(endpoint.key, role, "config_error", time.perf_counter() - sent)
                raise
            else:
                metrics.llm_attempt(endpoint.key, role, "ok", time.perf_counter() - sent, reply.usage)
                if reply.usage is not None:
                    self._windows.observe(endpoint, prompt_chars(messages), reply.usage.prompt_tokens)
                return _result(reply, endpoint, messages, lost)
        logger.warning("LLM %s endpoint %s given up: %s", role, endpoint.describe(), "; ".join(reasons))
        raise RetryableError(
            f"{endpoint.describe()}: {attempt} attempt(s): " + "; ".join(reasons[-3:]),
            retry_after=last_retry_after,
            usage=lost if lost.calls else None,
            attempts=attempt + int(refitted),
        )

    async def _fit(
        self, http: HTTPClient, endpoint: Endpoint, messages: list[ChatMessage], body: dict[str, Any]
    ) -> None:
        """Cut `max_tokens` to what the prompt leaves of the context; raise `ContextOverflow`
        (unsent) when the prompt itself is too long."""
        window = await self._windows.length(endpoint, http)
        if window is None:
            return
        estimate = estimate_prompt_tokens(messages, self._ratio(endpoint))
        fitted = fit_max_tokens(window, estimate, body["max_tokens"], self._llm.min_output_tokens)
        if fitted is None:
            raise self._overflow(endpoint, messages, Overflow(window, None, "estimated before sending"))
        body["max_tokens"] = fitted

    def _refit(
        self, endpoint: Endpoint, messages: list[ChatMessage], body: dict[str, Any], overflow: Overflow
    ) -> None:
        """After a context-exceeded 400: learn the window and ask for fewer tokens, or, when the
        prompt alone leaves too little, hand the caller a ContextOverflow to trim by."""
        window = overflow.context_length
        if window is not None:
            self._windows.learn(endpoint, window)
        if overflow.prompt_tokens is not None:
            self._windows.observe(endpoint, prompt_chars(messages), overflow.prompt_tokens)
        if window is None or overflow.prompt_tokens is None:
            # The server did not say by how much: halve the completion and try once more.
            prompt = overflow.prompt_tokens or estimate_prompt_tokens(messages, self._ratio(endpoint))
            fitted = fit_max_tokens(window, prompt, body["max_tokens"] // 2, self._llm.min_output_tokens)
        else:
            fitted = fit_max_tokens(
                window, overflow.prompt_tokens, body["max_tokens"], self._llm.min_output_tokens
            )
        if fitted is None or (window is not None and fitted >= body["max_tokens"]):
            raise self._overflow(endpoint, messages, overflow)
        logger.warning(
            "LLM endpoint %s: context exceeded (%s); retrying once with max_tokens %d",
            endpoint.describe(),
            overflow.message,
            fitted,
        )
        body["max_tokens"] = fitted

    def _overflow(
        self, endpoint: Endpoint, messages: list[ChatMessage], overflow: Overflow
    ) -> ContextOverflow:
        window = overflow.context_length or self._windows.known(endpoint)
        chars = prompt_chars(messages)
        if window is None:
            # Nothing said about sizes: ask for a prompt a third shorter.
            allowed = chars * 2 // 3
        else:
            ratio = self._ratio(endpoint)
            tokens = overflow.prompt_tokens or estimate_prompt_tokens(messages, ratio)
            allowed = allowed_prompt_chars(window, self._llm.min_output_tokens, tokens, chars, ratio)
        return ContextOverflow(
            f"the prompt ({chars} characters) does not fit the context of {endpoint.describe()}"
            f" ({window or 'unknown'} tokens): {overflow.message}",
            prompt_chars=min(allowed, max(0, chars - 1)),
            context_length=window,
        )

    def _ratio(self, endpoint: Endpoint) -> float:
        return self._windows.chars_per_token(endpoint, self._llm.chars_per_token)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next attempt on the same endpoint; None to move to the next one."""
        if retry_after is not None:
            return retry_after if retry_after <= self._llm.retry_max_delay else None
        return backoff_delay(attempt, self._llm.retry_base_delay, self._llm.retry_max_delay)

    def _body(
        self,
        endpoint: Endpoint,
        messages: list[ChatMessage],
        seed: int | None,
        temperature: float | None,
        max_tokens: int | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        """The request body; streams only when the caller consumes deltas (it costs CPU)."""
        stream = stream and endpoint.settings.stream
        body: dict[str, Any] = {}
        # llama.cpp and single-model vLLM serve whatever they loaded; an empty id is left out.
        if endpoint.model:
            body["model"] = endpoint.model
        body.update(
            messages=list(messages),
            temperature=self._llm.temperature if temperature is None else temperature,
            top_p=self._llm.top_p,
            presence_penalty=self._llm.presence_penalty,
            max_tokens=self._llm.max_output_tokens if max_tokens is None else max_tokens,
            stream=stream,
        )
        if seed is not None:
            body["seed"] = seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _attempt(
        self,
        http: HTTPClient,
        endpoint: Endpoint,
        body: dict[str, Any],
        on_delta: DeltaCallback | None,
    ) -> Reply:
        limit = endpoint.settings.timeout
        headers = {
            "Accept": "text/event-stream" if body["stream"] else "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if endpoint.settings.api_key:
            headers["Authorization"] = f"Bearer {endpoint.settings.api_key}"
        # A streamed reply sends bytes all along: silence for `read_timeout` means the server
        # is gone or stopping. A whole-body reply is silent until done, so only the total applies.
        read = min(limit, endpoint.settings.read_timeout) if body["stream"] else limit
        content = json.dumps(body).encode()
        try:
            # The deadline covers the whole call, the stream included.
            with anyio.fail_after(limit):
                async with http.request(
                    "POST", endpoint.url, body=content, headers=headers, read_timeout=read
                ) as response:
                    if not response.is_success:
                        raise _status_error(
                            endpoint, response.status, response.headers, await response.read()
                        )
                    content_type = response.headers.get("content-type", "")
                    # A server that ignores `stream: true` answers with one JSON body: accept it.
                    if body["stream"] and not content_type.startswith("application/json"):
                        return await _read_stream(endpoint, response, on_delta)
                    payload = load_object((await response.read()).decode("utf-8", "replace"), "response body")
                    _raise_for_payload_error(endpoint, payload)
                    return parse_completion(payload)
        except TimeoutError as exc:
            raise RetryableError(f"no complete response within {limit:g}s (timeout)", charged=True) from exc
        except WireError as exc:
            raise RetryableError(f"malformed response: {exc}") from exc


class _Overflowed(HeavyResearchError):
    """An attempt got a context-exceeded 400 (internal to `chat`, which refits or raises)."""

    def __init__(self, overflow: Overflow) -> None:
        super().__init__(overflow.message)
        self.overflow = overflow


class _DeltaTap:
    """Passes deltas on and remembers whether the current attempt sent any."""

    def __init__(self, on_delta: DeltaCallback) -> None:
        self.on_delta = on_delta
        self.sent = False
        self.chars = 0  # received in the current attempt

    async def __call__(self, text: str) -> None:
        self.sent = True
        self.chars += len(text)
        await self.on_delta(text)


async def _read_stream(endpoint: Endpoint, response: Response, on_delta: DeltaCallback | None) -> Reply:
    reply = Reply()
    done = False
    decoder = SSEDecoder()
    async for piece in response.iter_bytes():
        events = decoder.feed(piece)
        # Read on to the end of the body after [DONE]: a half-read response cannot go back
        # to the connection pool, and every call would then pay for a new connection.
        if events and not done:
            done = await _take(endpoint, reply, events, on_delta)
    events = decoder.close()
    if events and not done:
        done = await _take(endpoint, reply, events, on_delta)
    # Some servers omit [DONE]; a finish_reason is as good. Neither means the stream was cut.
    if not done and reply.finish_reason is None:
        raise RetryableError("stream ended before the completion finished (connection dropped)", charged=True)
    return reply


async def _take(endpoint: Endpoint, reply: Reply, events: list[str], on_delta: DeltaCallback | None) -> bool:
    """Adds the stream events of one read to the reply, up to a `[DONE]` marker (True when
    there was one). Their content goes to `on_delta` as one delta: a server sends a chunk per
    token, and a callback per chunk was a large part of a call's cost."""
    done = False
    for i, data in enumerate(events):
        if len(data) < 16 and data.strip() == "[DONE]":
            events, done = events[:i], True
            break
    chunks, bad = _load_chunks(events)
    failed = next((i for i, chunk in enumerate(chunks) if chunk.get("error") is not None), None)
    texts = reply.add_chunks(chunks if failed is None else chunks[:failed])
    # What came before a bad or error chunk was streamed, and counts.
    if texts and on_delta is not None:
        await on_delta("".join(texts))
    if failed is not None:
        _raise_for_payload_error(endpoint, chunks[failed])
    if bad is not None:
        raise bad
    return done


def _load_chunks(events: list[str]) -> tuple[list[dict[str, Any]], WireError | None]:
    """The events' JSON objects, parsed in one call when they are well formed (one call per
    chunk costs more than the parsing; pydantic's parser takes a third less time than `json`);
    else one by one up to the first bad one, and its error. What pydantic refuses and `json`
    takes (a lone surrogate escape) goes the slow way, so the two read the same streams."""
    if len(events) > 1:
        try:
            values = pydantic_core.from_json("[" + ",".join(events) + "]")
        except ValueError:
            values = None
        # An event holding two objects (`{…},{…}`) would parse too: the count tells.
        if isinstance(values, list) and len(values) == len(events) and all(type(v) is dict for v in values):
            return values, None
    chunks: list[dict[str, Any]] = []
    for data in events:
        try:
            chunks.append(load_object(data, "stream chunk"))
        except WireError as exc:
            return chunks, exc
    return chunks, None


def _lost_usage(messages: list[ChatMessage], streamed_chars: int) -> Usage:
    return Usage(
        prompt_tokens=estimate_tokens(prompt_chars(messages)),
        completion_tokens=estimate_tokens(streamed_chars),
        calls=1,
    )


def _result(reply: Reply, endpoint: Endpoint, messages: list[ChatMessage], lost: Usage) -> ChatResult:
    content, reasoning = "".join(reply.content), "".join(reply.reasoning)
    usage = reply.usage or Usage(
        prompt_tokens=estimate_tokens(sum(len(m["content"]) for m in messages)),
        completion_tokens=estimate_tokens(len(content) + len(reasoning)),
        calls=1,
    )
    return ChatResult(
        content=content,
        reasoning=reasoning,
        # Failed attempts the server had cost tokens too: estimated, and said so.
        usage=usage.add(lost).model_copy(update={"calls": usage.calls}),
        estimated_tokens=lost.total_tokens,
        finish_reason=reply.finish_reason,
        endpoint=endpoint.base_url,
        model=endpoint.model or reply.model,
    )


def _raise_for_payload_error(endpoint: Endpoint, payload: dict[str, Any]) -> None:
    found = error_in_payload(payload)
    if found is None:
        return
    status, message = found
    if status is None:
        # No status to judge by: upstream provider failures (OpenRouter) look like this.
        raise RetryableError(f"endpoint reported an error: {message}")
    raise _classify(endpoint, status, message, None)


def _status_error(
    endpoint: Endpoint, status: int, headers: Mapping[str, str], raw: bytes
) -> HeavyResearchError:
    text = raw.decode("utf-8", "replace")
    overflow = parse_overflow(status, text)
    if overflow is not None:
        return _Overflowed(overflow)
    detail = error_detail(text)
    if 300 <= status < 400 and "location" in headers:
        detail = f"redirected to {headers['location']}"
    return _classify(endpoint, status, detail, headers.get("retry-after"))


def _classify(endpoint: Endpoint, status: int, detail: str, retry_after: str | None) -> HeavyResearchError:
    where = f"LLM endpoint {endpoint.describe()}"
    if status == 408 or status == 429 or status >= 500:
        wait = parse_retry_after(retry_after) if status in (429, 503) else None
        return RetryableError(f"HTTP {status}: {detail}", retry_after=wait)
    if status in (401, 403):
        return LLMConfigError(
            f"{where} refused the credentials (HTTP {status}: {detail}); check {endpoint.env('api_key')}"
        )
    if status == 404:
        return LLMConfigError(
            f"{where} answered 404 ({detail}); check {endpoint.env('model')} / {endpoint.env('base_url')}"
        )
    if 300 <= status < 400:
        return LLMConfigError(f"{where} {detail} (HTTP {status}); check {endpoint.env('base_url')}")
    return LLMConfigError(
        f"{where} rejected the request (HTTP {status}): {detail}; check {endpoint.env('model')} "
        "and the request settings (HR_LLM__MAX_OUTPUT_TOKENS, HR_LLM__TEMPERATURE, HR_LLM__TOP_P, "
        "HR_LLM__PRESENCE_PENALTY)"
    )
