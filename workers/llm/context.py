"""The model's context window: how long it is, how much of it a prompt takes, what is left.

A small model on llama.cpp may have 2,048 tokens per slot; asking it for `max_tokens` 8192, or
sending it a prompt past its window, gets HTTP 400. So each call's `max_tokens` is fitted to what
the prompt leaves, and a prompt that would not fit raises `ContextOverflow` before it is sent.

The window's length comes from the endpoint's `context_length` setting, else from the server
(asked once per endpoint, the answer cached):

    server      where                                         field
    llama.cpp   GET {root}/props                              default_generation_settings.n_ctx
    vLLM        GET {base_url}/models                         data[].max_model_len
    llama.cpp   GET {base_url}/models (training context)      data[].meta.n_ctx_train

and is learnt from a context-exceeded 400, whose wording names it. Those wordings:

    vLLM       This model's maximum context length is 2048 tokens. However, you requested 2300
               tokens (1200 in the messages, 1100 in the completion). …
    llama.cpp  request (4476 tokens) exceeds the available context size (4096 tokens)
               (type exceed_context_size_error, with n_prompt_tokens and n_ctx), or, older:
               the request exceeds the available context size, try increasing it
    OpenAI     code context_length_exceeded; This model's maximum context length is 8192 tokens.
               However, your messages resulted in 9000 tokens. …
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from workers.errors import RetryableError
from workers.llm.endpoints import Endpoint
from workers.llm.http import HTTPClient
from workers.llm.types import ChatMessage

log = logging.getLogger(__name__)

# Tokens a chat template adds around each message (role markers, separators).
_PER_MESSAGE_TOKENS = 8
_DISCOVERY_TIMEOUT = 5.0
_OVERFLOW_MARKERS = (
    "context_length_exceeded",
    "exceed_context_size",
    "maximum context length",
    "exceeds the available context size",
    "context size",
    "context window",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)
_MAX_CONTEXT = re.compile(r"maximum context length is (\d+)", re.I)
_AVAILABLE = re.compile(r"available context size \((\d+)", re.I)
_REQUEST_TOKENS = re.compile(r"request \((\d+) tokens\)", re.I)
_IN_MESSAGES = re.compile(r"(\d+) in the messages", re.I)
_RESULTED = re.compile(r"messages resulted in (\d+) tokens", re.I)
_INPUT_TOKENS = re.compile(r"has (\d+) input tokens", re.I)


@dataclass(frozen=True)
class Overflow:
    """A server's context-exceeded answer, with what it said about sizes (None: not said)."""

    context_length: int | None
    prompt_tokens: int | None
    message: str


def estimate_prompt_tokens(messages: Sequence[ChatMessage], chars_per_token: float) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return math.ceil(chars / chars_per_token) + _PER_MESSAGE_TOKENS * len(messages)


def prompt_chars(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m["content"]) for m in messages)


def parse_overflow(status: int, body: str) -> Overflow | None:
    """The context-exceeded 400 of vLLM, llama.cpp or OpenAI; None for any other answer."""
    if status not in (400, 413):
        return None
    lowered = body.lower()
    if not any(marker in lowered for marker in _OVERFLOW_MARKERS):
        return None
    context = _first_int(body, _MAX_CONTEXT, _AVAILABLE)
    prompt = _first_int(body, _IN_MESSAGES, _RESULTED, _INPUT_TOKENS, _REQUEST_TOKENS)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        # llama.cpp says it in fields, too.
        context = _int(error.get("n_ctx")) or context
        prompt = _int(error.get("n_prompt_tokens")) or prompt
    return Overflow(context_length=context, prompt_tokens=prompt, message=" ".join(body.split())[:300])


def fit_max_tokens(context_length: int | None, prompt_tokens: int, wanted: int, minimum: int) -> int | None:
    """`max_tokens` for a call: what was wanted, cut to what the prompt leaves; None when the
    prompt leaves less than `minimum` (it must be trimmed first)."""
    if context_length is None:
        return wanted
    room = context_length - prompt_tokens
    if room < minimum:
        return None
    return min(wanted, room)


def allowed_prompt_chars(
    context_length: int, minimum_output: int, prompt_tokens: int, chars: int, chars_per_token: float
) -> int:
    """How many prompt characters leave `minimum_output` tokens free: scaled by this prompt's own
    characters per token when its token count is known, else by the conservative estimate."""
    ratio = chars / prompt_tokens if prompt_tokens > 0 else chars_per_token
    budget = context_length - minimum_output - 2 * _PER_MESSAGE_TOKENS
    # The lower of the two: trimmed to this, the prompt passes the client's own check too.
    return max(0, int(budget * min(ratio, chars_per_token)))


class ContextWindows:
    """The context length of every endpoint, from settings, the server, or what a 400 said; and
    each endpoint's characters per token, learnt from the token counts it reports."""

    def __init__(self) -> None:
        self._known: dict[str, int | None] = {}
        self._ratios: dict[str, float] = {}
        self._lock = anyio.Lock()

    def observe(self, endpoint: Endpoint, chars: int, tokens: int) -> None:
        """A prompt of `chars` characters was `tokens` tokens on this endpoint's tokenizer."""
        # Outside 1-8 characters a token the counts are not a tokenizer's (a proxy's fixed usage).
        if tokens > 0 and 1.0 <= chars / tokens <= 8.0:
            self._ratios[endpoint.key] = chars / tokens

    def chars_per_token(self, endpoint: Endpoint, default: float) -> float:
        """The endpoint's own ratio when known (a tenth under, for prompts that tokenise worse),
        else the conservative `default`."""
        learnt = self._ratios.get(endpoint.key)
        return default if learnt is None else max(1.0, learnt * 0.9)

    def learn(self, endpoint: Endpoint, context_length: int) -> None:
        if self._known.get(endpoint.key) != context_length:
            log.info("LLM endpoint %s: context length %d tokens", endpoint.describe(), context_length)
        self._known[endpoint.key] = context_length

    def known(self, endpoint: Endpoint) -> int | None:
        """The length already known (set, discovered or learnt), without asking the server."""
        return endpoint.settings.context_length or self._known.get(endpoint.key)

    async def length(self, endpoint: Endpoint, http: HTTPClient) -> int | None:
        if endpoint.settings.context_length:
            return endpoint.settings.context_length
        if endpoint.key in self._known:
            return self._known[endpoint.key]
        async with self._lock:
            if endpoint.key not in self._known:
                found = await discover(endpoint, http)
                if found is not None:
                    log.info("LLM endpoint %s reports a %d-token context", endpoint.describe(), found)
                self._known[endpoint.key] = found
        return self._known[endpoint.key]


async def discover(endpoint: Endpoint, http: HTTPClient) -> int | None:
    """Ask the server for its context length; None when it does not say (or cannot be reached:
    a down server is the retry loop's business, not this one's)."""
    base = endpoint.base_url.rstrip("/").removesuffix("/chat/completions")
    root = base.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {endpoint.settings.api_key}"} if endpoint.settings.api_key else {}
    # /props first: llama.cpp's per-slot n_ctx is the real limit; n_ctx_train may be far larger.
    for url, read in ((f"{root}/props", _from_props), (f"{base}/models", _from_models)):
        try:
            with anyio.fail_after(_DISCOVERY_TIMEOUT):
                async with http.request(
                    "GET", url, headers=headers, read_timeout=_DISCOVERY_TIMEOUT
                ) as response:
                    if not response.is_success:
                        continue
                    raw = await response.read()
        except (RetryableError, TimeoutError, ValueError):
            continue
        try:
            payload = json.loads(raw)
        except ValueError:
            continue
        found = read(payload, endpoint.model)
        if found:
            return found
    return None


def _from_props(payload: Any, model: str) -> int | None:
    if not isinstance(payload, dict):
        return None
    settings = payload.get("default_generation_settings")
    if isinstance(settings, dict):
        return _int(settings.get("n_ctx"))
    return _int(payload.get("n_ctx"))


def _from_models(payload: Any, model: str) -> int | None:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    entries = [d for d in data if isinstance(d, dict)]
    chosen = [d for d in entries if d.get("id") == model] or entries[:1]
    for entry in chosen:
        meta = entry.get("meta")
        found = _int(entry.get("max_model_len")) or _int(entry.get("context_length"))
        if not found and isinstance(meta, dict):
            found = _int(meta.get("n_ctx")) or _int(meta.get("n_ctx_train"))
        if found:
            return found
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _first_int(text: str, *patterns: re.Pattern[str]) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None
