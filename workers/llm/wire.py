"""The chat-completions wire format: reading bodies, stream chunks, usage and error payloads.

Servers differ in small ways (vLLM and DashScope send `reasoning_content`, OpenRouter and Ollama
`reasoning`; some send content as a list of parts; some repeat usage on every chunk), so every
reader here is tolerant of what it does not need and strict only about what it does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from workers.errors import WireError
from workers.models import Usage

REASONING_FIELDS = ("reasoning_content", "reasoning")
_DETAIL_CHARS = 500


@dataclass
class Reply:
    """One completion as it accumulates, from a whole body or from stream chunks."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str = ""

    def add_message(self, message: dict[str, Any]) -> str:
        """Take a `message` or `delta` object; return the content it added."""
        text = _text(message.get("content"))
        if text:
            self.content.append(text)
        for name in REASONING_FIELDS:
            # Some gateways send both names with the same text: the first one present wins.
            thought = message.get(name)
            if isinstance(thought, str) and thought:
                self.reasoning.append(thought)
                break
        return text

    def add_envelope(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Take the fields around the choices; return the first choice, if any."""
        usage = parse_usage(payload.get("usage"))
        if usage is not None:
            # Servers that repeat usage on every chunk send running totals: the last one counts.
            self.usage = usage
        model = payload.get("model")
        if isinstance(model, str) and model:
            self.model = model
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        choice: dict[str, Any] = choices[0]
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
        return choice

    def add_chunks(self, chunks: list[dict[str, Any]]) -> list[str]:
        """Take one read's `chat.completion.chunk`s; return the content deltas they carry.
        One loop for them all: a server sends a chunk per token, and the layers of calls per
        chunk were a large part of a streamed call's cost."""
        texts: list[str] = []
        for chunk in chunks:
            choice = self.add_envelope(chunk)
            delta = choice.get("delta") if choice is not None else None
            if isinstance(delta, dict):
                text = self.add_message(delta)
                if text:
                    texts.append(text)
        return texts


def load_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise WireError(f"{what} is not JSON: {shorten(text)}") from exc
    if not isinstance(value, dict):
        raise WireError(f"{what} is not a JSON object: {shorten(text)}")
    return value


def parse_completion(payload: dict[str, Any]) -> Reply:
    """A whole (non-streamed) `chat.completion` body."""
    reply = Reply()
    choice = reply.add_envelope(payload)
    if choice is None:
        raise WireError(f"response has no choices: {shorten(json.dumps(payload))}")
    message = choice.get("message")
    if isinstance(message, dict):
        reply.add_message(message)
    return reply


def error_in_payload(payload: dict[str, Any]) -> tuple[int | None, str] | None:
    """An `{"error": …}` object sent with a 2xx status or inside a stream: (status code, message)."""
    error = payload.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        return status, shorten(str(error.get("message") or json.dumps(error)))
    return None, shorten(str(error))


def error_detail(body: str) -> str:
    """The server's own words for an error response, from the usual JSON shapes or raw text."""
    try:
        payload = json.loads(body)
    except ValueError:
        return shorten(body) or "(empty body)"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return shorten(str(error["message"]))
        for key in ("error", "message", "detail"):
            if payload.get(key):
                value = payload[key]
                return shorten(value if isinstance(value, str) else json.dumps(value))
    return shorten(body)


def parse_usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, calls=1)


def estimate_tokens(chars: int) -> int:
    """About four characters a token: good enough to budget by when the server sends no usage."""
    return math.ceil(chars / 4)


def shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Content as parts ([{"type": "text", "text": …}]), as some OpenAI-style servers send.
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
