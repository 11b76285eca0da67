"""`TracedModel`: a `ChatModel` whose every call is a span (`chat <role>`), around any other.

Attributes follow OpenTelemetry's GenAI conventions where they have one (`gen_ai.*`); the
endpoint that answered, after retries and fallbacks, is `heavyresearch.llm.endpoint`.
"""

from __future__ import annotations

from workers import tracing
from workers.llm.types import ChatMessage, ChatModel, ChatResult, DeltaCallback, ResetCallback, Role


class TracedModel:
    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner

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
        asked: tracing.Attributes = {
            "gen_ai.operation.name": "chat",
            "heavyresearch.llm.role": role,
            "gen_ai.request.temperature": temperature,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.seed": seed,
            "heavyresearch.llm.streamed": on_delta is not None,
        }
        with tracing.span(f"chat {role}", asked) as span:
            result = await self.inner.chat(
                role,
                messages,
                seed=seed,
                temperature=temperature,
                max_tokens=max_tokens,
                on_delta=on_delta,
                on_reset=on_reset,
                stop=stop,
            )
            span.set(
                {
                    "heavyresearch.llm.endpoint": result.endpoint,
                    "gen_ai.response.model": result.model,
                    "gen_ai.response.finish_reasons": result.finish_reason,
                    "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": result.usage.completion_tokens,
                }
            )
            return result
