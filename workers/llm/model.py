"""`OpenAIChatModel`: the LLM client the engine uses. It owns the HTTP client and builds, from
settings, one `EndpointModel` per endpoint of each role's chain (primary, then `llm.fallbacks`)
under a `FallbackModel`; calls go to that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

from workers.llm.client import EndpointModel
from workers.llm.context import ContextWindows
from workers.llm.endpoints import Endpoint, resolve_endpoints
from workers.llm.fallback import FallbackModel
from workers.llm.http import HTTPClient
from workers.llm.limiter import Limiter, LocalLimiter
from workers.llm.types import ChatMessage, ChatResult, DeltaCallback, ResetCallback, Role
from workers.settings import LLMSettings


class OpenAIChatModel:
    """A `ChatModel` over OpenAI-compatible HTTP endpoints. Use as `async with`, or call
    `start()` and `aclose()`: the HTTP client lives between the two."""

    def __init__(
        self, llm: LLMSettings, endpoints: Mapping[Role, Sequence[Endpoint]], *, limiter: Limiter
    ) -> None:
        self._endpoints = {role: tuple(chain) for role, chain in endpoints.items()}
        self._http: HTTPClient | None = None
        # One window per endpoint whichever role reaches it: what one role learns serves all.
        windows = ContextWindows()
        self._model = FallbackModel(
            {
                role: [
                    EndpointModel(llm, endpoint, limiter=limiter, http=self._client, windows=windows)
                    for endpoint in chain
                ]
                for role, chain in self._endpoints.items()
            }
        )

    @classmethod
    def from_settings(cls, llm: LLMSettings, *, limiter: Limiter | None = None) -> OpenAIChatModel:
        """Raises `LLMConfigError` when no endpoint is configured (`HR_LLM__BASE_URL` empty)."""
        chosen = limiter if limiter is not None else LocalLimiter()
        return cls(llm, resolve_endpoints(llm), limiter=chosen)

    def endpoints(self, role: Role) -> tuple[Endpoint, ...]:
        """The endpoints a `role` call tries, in order."""
        try:
            return self._endpoints[role]
        except KeyError:
            raise ValueError(f"unknown LLM role {role!r}") from None

    def _client(self) -> HTTPClient:
        if self._http is None:
            raise RuntimeError("OpenAIChatModel is not started: use `async with` or await start()")
        return self._http

    async def start(self) -> None:
        if self._http is None:
            self._http = HTTPClient()

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
        return await self._model.chat(
            role,
            messages,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            on_delta=on_delta,
            on_reset=on_reset,
            stop=stop,
        )
