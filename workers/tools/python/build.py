"""Chooses PythonInterpreter's sandboxes from settings, or says why there is none.

    sandbox.mode   sandboxes, in the order tried
    "auto"         the remote endpoints (if any), then the embedded sandbox (if it works here)
    "remote"       the remote endpoints only
    "embedded"     the embedded sandbox only
    "off"          none

No sandbox, no tool: code is never run outside one. The reason goes to the log and /readyz.
"""

from __future__ import annotations

import httpx

from workers.settings import SandboxSettings
from workers.tools.python.embedded import EmbeddedSandbox
from workers.tools.python.remote import RemoteSandbox
from workers.tools.python.tool import PythonInterpreterTool
from workers.tools.python.types import Sandbox


def build_python_tool(settings: SandboxSettings) -> tuple[PythonInterpreterTool | None, str]:
    """The tool (None when no sandbox is available) and a sentence saying what it runs on."""
    if settings.mode == "off":
        return None, "PythonInterpreter is off (sandbox.mode = off)"
    sandboxes: list[Sandbox] = []
    notes: list[str] = []
    client: httpx.AsyncClient | None = None
    if settings.mode in ("auto", "remote") and settings.endpoints:
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        sandboxes += [RemoteSandbox(url, settings, client) for url in settings.endpoints]
        notes.append(f"{len(settings.endpoints)} SandboxFusion endpoint(s)")
    elif settings.mode == "remote":
        notes.append("sandbox.mode = remote but sandbox.endpoints is empty")
    if settings.mode in ("auto", "embedded"):
        embedded, why = EmbeddedSandbox.create(settings)
        if embedded is not None:
            sandboxes.append(embedded)
        notes.append(why)
    if not sandboxes:
        return None, "PythonInterpreter is not offered: " + "; ".join(notes)
    return PythonInterpreterTool(sandboxes, settings, client), "PythonInterpreter runs on: " + "; ".join(
        notes
    )
