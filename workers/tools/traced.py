"""`TracedTool`: a tool whose every call is a span (`execute_tool <name>`), around any other.

A call that raises (a `ToolError` fed back to the model, an upstream outage) ends its span with
status ERROR; what an answered call used is in `heavyresearch.tool.provider` / `.cached`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers import tracing
from workers.tools.base import Tool, ToolContext, ToolOutput


class TracedTool:
    def __init__(self, inner: Tool) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        asked: tracing.Attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": self.name,
            tracing.JOB_ID: ctx.job_id,
            tracing.AGENT: ctx.agent,
        }
        with tracing.span(f"execute_tool {self.name}", asked) as span:
            output = await self.inner(arguments, ctx)
            span.set(
                {
                    "heavyresearch.tool.provider": output.provider,
                    "heavyresearch.tool.cached": output.cached,
                    "heavyresearch.tool.sources": len(output.sources),
                }
            )
            return output


def traced_tools(tools: Mapping[str, Tool]) -> dict[str, Tool]:
    return {name: TracedTool(tool) for name, tool in tools.items()}
