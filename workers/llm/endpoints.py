"""Which endpoints serve each role, in order, and which setting names each one.

A role's list is its primary endpoint then `llm.fallbacks`. A role override with an empty
`base_url` means "use the research endpoint", with the role's own `model` when it names one.
An override or fallback with an empty `model` borrows the role's model, so a fallback may
repeat only what differs (usually the URL and key); the API key is never borrowed, as it
belongs to another host.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.errors import LLMConfigError
from workers.llm.types import Role
from workers.settings import EndpointSettings, LLMSettings

ROLES: tuple[Role, ...] = ("research", "synthesis", "summariser")


@dataclass(frozen=True)
class Endpoint:
    settings: EndpointSettings
    model: str
    # Where the user fixes this endpoint: the env prefix ("HR_LLM__", "HR_LLM__SYNTHESIS__") or,
    # for a fallback, its index in the HR_LLM__FALLBACKS list.
    env_prefix: str = "HR_LLM__"
    fallback_index: int | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def url(self) -> str:
        base = self.settings.base_url.rstrip("/")
        # Accept a full completions URL too; people paste whichever their provider documents.
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    @property
    def key(self) -> str:
        """The limiter key: one endpoint serving one model shares one cap."""
        return f"{self.base_url.rstrip('/')}#{self.model}"

    def env(self, field: str) -> str:
        """The environment variable (or list entry) that sets `field` for this endpoint."""
        if self.fallback_index is not None:
            return f"HR_LLM__FALLBACKS[{self.fallback_index}].{field}"
        return f"{self.env_prefix}{field.upper()}"

    def describe(self) -> str:
        return f"{self.base_url} ({self.model})" if self.model else self.base_url


def resolve_endpoints(llm: LLMSettings) -> dict[Role, tuple[Endpoint, ...]]:
    if not llm.base_url:
        raise LLMConfigError("no LLM endpoint configured: set HR_LLM__BASE_URL")
    research = Endpoint(settings=llm, model=llm.model, env_prefix="HR_LLM__")
    primaries: dict[Role, Endpoint] = {"research": research}
    overrides: dict[Role, tuple[EndpointSettings, str]] = {
        "synthesis": (llm.synthesis, "HR_LLM__SYNTHESIS__"),
        "summariser": (llm.summariser, "HR_LLM__SUMMARISER__"),
    }
    for role, (override, prefix) in overrides.items():
        if override.base_url:
            primaries[role] = Endpoint(
                settings=override, model=override.model or llm.model, env_prefix=prefix
            )
        elif override.model:
            # Another model on the research endpoint (settings refuse anything else set here).
            primaries[role] = Endpoint(settings=llm, model=override.model, env_prefix="HR_LLM__")
        else:
            primaries[role] = research
    for index, fallback in enumerate(llm.fallbacks):
        if not fallback.base_url:
            raise LLMConfigError(
                f"fallback endpoint has no base_url: set HR_LLM__FALLBACKS[{index}].base_url"
            )
    return {
        role: (
            primary,
            *(
                Endpoint(settings=fb, model=fb.model or primary.model, fallback_index=index)
                for index, fb in enumerate(llm.fallbacks)
            ),
        )
        for role, primary in primaries.items()
    }
