"""The LLM seam's types: one chat call in, one result out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, TypedDict

from pydantic import BaseModel, Field

from workers.models import Usage

Role = Literal["research", "synthesis", "summariser"]
DeltaCallback = Callable[[str], Awaitable[None]]
# Called when a streamed attempt that already sent deltas failed and the call starts over:
# what was streamed so far is void.
ResetCallback = Callable[[], Awaitable[None]]


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatResult(BaseModel):
    content: str
    # From `reasoning_content` / `reasoning` fields; `<think>` inside content stays in content.
    reasoning: str = ""
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    endpoint: str = ""
    model: str = ""
    # Part of `usage` that is an estimate: failed attempts the server had (resets, stalls).
    estimated_tokens: int = 0


class ChatModel(Protocol):
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
        """One completion, cut at the first of `stop` when given. Retries what is retryable;
        raises `LLMConfigError` for what is not, and `RetryableError` once retries and
        fallbacks are exhausted."""
