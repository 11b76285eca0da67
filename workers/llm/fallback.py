"""`FallbackModel`: a role's models tried in order, as pydantic-ai's `FallbackModel` does.

Each model is one endpoint (`EndpointModel`), which retries on its own; the chain moves to the
next only when one gives up with `RetryableError` (retries exhausted, its retry budget spent, or
a `Retry-After` longer than `retry_max_delay`). `LLMConfigError` and `ContextOverflow` end the
call at once: another endpoint would not fix the setting, and the caller trims the prompt.
Every endpoint's summary goes into the one `RetryableError` the call ends with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from workers.errors import ContextOverflow, LLMConfigError, RetryableError
from workers.llm.types import ChatMessage, ChatModel, ChatResult, DeltaCallback, ResetCallback, Role
from workers.metrics import engine_metrics
from workers.models import Usage


class FallbackModel:
    """A `ChatModel` over each role's chain of models (primary first)."""

    def __init__(self, chains: Mapping[Role, Sequence[ChatModel]]) -> None:
        if any(not chain for chain in chains.values()):
            raise ValueError("every role needs at least one model")
        self._chains = {role: tuple(chain) for role, chain in chains.items()}

    def chain(self, role: Role) -> tuple[ChatModel, ...]:
        try:
            return self._chains[role]
        except KeyError:
            raise ValueError(f"unknown LLM role {role!r}") from None

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
        chain = self.chain(role)
        calls = engine_metrics().llm_calls
        stream = _Stream(on_delta, on_reset) if on_delta is not None else None
        failures: list[str] = []
        attempts = 0
        retry_after: float | None = None
        lost = Usage()  # failed attempts of earlier endpoints that the server had
        for model in chain:
            if stream is not None:
                await stream.restart()
            try:
                result = await model.chat(
                    role,
                    messages,
                    seed=seed,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    on_delta=stream.delta if stream is not None else None,
                    on_reset=stream.reset if stream is not None else None,
                    stop=stop,
                )
            except RetryableError as exc:
                failures.append(str(exc))
                attempts += exc.attempts
                retry_after = exc.retry_after
                if exc.usage is not None:
                    lost = lost.add(exc.usage)
                continue
            except (LLMConfigError, ContextOverflow):
                calls.labels(role, "failed").inc()
                raise
            calls.labels(role, "ok").inc()
            return _with_lost(result, lost)
        calls.labels(role, "failed").inc()
        raise RetryableError(
            f"LLM {role} call failed after {attempts} attempt(s) on {len(chain)} endpoint(s): "
            + " | ".join(failures),
            retry_after=retry_after,
            usage=lost if lost.calls else None,
            attempts=attempts,
        )


class _Stream:
    """The caller's delta callbacks across the chain: deltas an endpoint streamed before it gave
    up are void, so the next endpoint's first attempt starts with a reset."""

    def __init__(self, on_delta: DeltaCallback, on_reset: ResetCallback | None) -> None:
        self._on_delta = on_delta
        self._on_reset = on_reset
        self._shown = False

    async def delta(self, text: str) -> None:
        self._shown = True
        await self._on_delta(text)

    async def reset(self) -> None:
        self._shown = False
        if self._on_reset is not None:
            await self._on_reset()

    async def restart(self) -> None:
        if self._shown:
            await self.reset()


def _with_lost(result: ChatResult, lost: Usage) -> ChatResult:
    if not lost.calls:
        return result
    usage = result.usage.add(lost).model_copy(update={"calls": result.usage.calls})
    return result.model_copy(
        update={"usage": usage, "estimated_tokens": result.estimated_tokens + lost.total_tokens}
    )
