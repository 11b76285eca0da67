"""The `PythonInterpreter` tool: the model's code, run in the first sandbox that answers.

Call format (the released model's): ``<tool_call>{"name": "PythonInterpreter", "arguments": {}}
<code>…</code></tool_call>``; the parser moves the code into ``arguments.code``, which a model
may also send directly. A Markdown fence around the code is dropped.

Observation, as the released code returns it::

    stdout:
    …
    stderr:
    …

(each part only when non-empty), then a line ``[PythonInterpreter Error] …`` when a limit
stopped the run, and ``Finished execution.`` when there is nothing at all to show.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from workers.errors import RetryableError, ToolError
from workers.metrics import engine_metrics
from workers.settings import SandboxSettings
from workers.tools.base import ToolContext, ToolOutput
from workers.tools.python.types import RunResult, Sandbox
from workers.tools.render import trim_text

log = logging.getLogger(__name__)

DESCRIPTION = (
    "PythonInterpreter — run Python code in a sandbox (no network; print() what you need to see): "
    '<tool_call>{"name": "PythonInterpreter", "arguments": {}}<code>the code</code></tool_call>'
)
_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def limit_message(result: RunResult, settings: SandboxSettings) -> str | None:
    match result.limit:
        case "wall_time":
            return "[PythonInterpreter Error] TimeoutError: Execution timed out."
        case "cpu_time":
            return (
                f"[PythonInterpreter Error] TimeoutError: CPU time limit ({settings.cpu_seconds} s) exceeded."
            )
        case "output":
            return (
                f"[PythonInterpreter Error] OutputLimitExceeded: more than {settings.max_output_bytes} bytes "
                "of output; the program was stopped. Print less."
            )
        case "memory":
            return f"[PythonInterpreter Error] MemoryError: the memory limit is {settings.memory_mb} MiB."
    return None


def render_run(result: RunResult, settings: SandboxSettings, max_chars: int) -> str:
    parts: list[str] = []
    # The budget is split so a long stdout cannot hide the traceback in stderr.
    share = max(200, max_chars // 2) if result.stdout and result.stderr else max_chars
    if result.stdout:
        parts.append("stdout:\n" + trim_text(result.stdout, share))
    if result.stderr:
        parts.append("stderr:\n" + trim_text(result.stderr, share))
    note = limit_message(result, settings)
    if note:
        parts.append(note)
    text = "\n".join(parts)
    return text if text.strip() else "Finished execution."


def code_of(arguments: dict[str, Any]) -> str:
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolError(
            "no code given: put the program inside the tool call, "
            '<tool_call>{"name": "PythonInterpreter", "arguments": {}}<code>print(1 + 1)</code></tool_call>'
        )
    fenced = _FENCE.match(code)
    return fenced.group(1) if fenced else code


class PythonInterpreterTool:
    name = "PythonInterpreter"
    description = DESCRIPTION

    def __init__(
        self, sandboxes: list[Sandbox], settings: SandboxSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        if not sandboxes:
            raise ValueError("PythonInterpreter needs at least one sandbox")
        self.sandboxes = sandboxes
        self.settings = settings
        self._client = client

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        code = code_of(arguments)
        failures: list[str] = []
        for sandbox in self.sandboxes:
            try:
                result = await sandbox.run(code)
            except RetryableError as exc:
                engine_metrics().sandbox_runs.labels(sandbox.name, "unavailable").inc()
                log.warning("sandbox %s failed, trying the next: %s", sandbox.name, exc)
                failures.append(str(exc))
                continue
            engine_metrics().sandbox_run(sandbox.name, result.exit_code, result.limit, result.duration)
            text = render_run(result, self.settings, self.settings.observation_max_chars)
            return ToolOutput(text=text, provider=result.sandbox or sandbox.name)
        raise RetryableError("no sandbox could run the code: " + "; ".join(failures))

    async def aclose(self) -> None:
        for sandbox in self.sandboxes:
            await sandbox.aclose()
        if self._client is not None:
            await self._client.aclose()
