"""The tool seam: what an agent can call, and what a call returns.

A tool raises `ToolError` for a bad call (fed back to the model); anything else is a bug or an
outage and is reported as a failed tool call, also fed back, so the agent can try another way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

from workers.backend.base import Backend
from workers.errors import ToolError
from workers.models import Source
from workers.tools.sources import JobSources


@dataclass(frozen=True)
class ToolContext:
    job_id: str
    agent: int
    backend: Backend
    # The running job's registry; without one (a tool called outside a job run) sources are
    # registered in the store directly.
    sources: JobSources | None = None

    async def register_source(self, url: str, title: str) -> Source:
        """The url's stable id in the job's source registry (same url, same id)."""
        if self.sources is not None:
            return self.sources.register(url, title)
        return await self.backend.register_source(self.job_id, url, title)


class ToolOutput(BaseModel):
    """What the model sees (`text`) plus what the service records about it."""

    text: str
    sources: list[Source] = Field(default_factory=list)
    provider: str | None = None
    cached: bool = False


class Tool(Protocol):
    name: str
    # One line for the prompt's tool list: the call's JSON shape and what it does.
    description: str

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput: ...


def string_list(arguments: dict[str, Any], key: str) -> list[str]:
    """Read a `string[]` argument, accepting a bare string as models often send one."""
    value = arguments.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ToolError(f"argument '{key}' must be a non-empty list of strings")
    return [v.strip() for v in value]
