"""A SandboxFusion-compatible remote sandbox: `POST <endpoint>/run_code`, what the released code calls.

Request ``{"code", "language": "python", "run_timeout", "memory_limit_MB"}``; answer
``{"status": "Success" | "Failed" | "SandboxError", "message", "run_result": {"status":
"Finished" | "TimeLimitExceeded" | "Error", "execution_time", "return_code", "stdout",
"stderr"}}``. "Failed" is the program's own failure (a non-zero exit, a timeout) and is shown
to the model; "SandboxError", an HTTP error or no answer is the sandbox's, and the next
endpoint is tried. A fleet of workers pointed at one pool of endpoints shares it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from workers.errors import RetryableError
from workers.settings import SandboxSettings
from workers.tools.python.types import RunResult

log = logging.getLogger(__name__)


class RemoteSandbox:
    def __init__(self, endpoint: str, settings: SandboxSettings, client: httpx.AsyncClient) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.name = f"remote {self.endpoint}"
        self.settings = settings
        self.client = client

    async def run(self, code: str) -> RunResult:
        s = self.settings
        body = {
            "code": code,
            "language": "python",
            "run_timeout": s.wall_seconds,
            "memory_limit_MB": s.memory_mb,
        }
        started = time.monotonic()
        try:
            response = await self.client.post(
                f"{self.endpoint}/run_code", json=body, timeout=s.wall_seconds + s.remote_timeout
            )
        except httpx.HTTPError as exc:
            raise RetryableError(f"sandbox {self.endpoint} unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise RetryableError(f"sandbox {self.endpoint} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise RetryableError(f"sandbox {self.endpoint} answered with something that is not JSON") from exc
        return self._result(data, time.monotonic() - started)

    def _result(self, data: Any, duration: float) -> RunResult:
        if not isinstance(data, dict) or data.get("status") == "SandboxError":
            message = data.get("message", "") if isinstance(data, dict) else ""
            raise RetryableError(f"sandbox {self.endpoint} failed: {message or 'SandboxError'}")
        run = data.get("run_result") or {}
        if not isinstance(run, dict):
            raise RetryableError(f"sandbox {self.endpoint} sent no run_result")
        status = run.get("status")
        limit = "wall_time" if status == "TimeLimitExceeded" else None
        code = run.get("return_code")
        max_bytes = self.settings.max_output_bytes
        stdout, stderr = str(run.get("stdout") or ""), str(run.get("stderr") or "")
        if len(stdout) + len(stderr) > max_bytes:
            limit = limit or "output"
            stdout = stdout[:max_bytes]
            stderr = stderr[: max(0, max_bytes - len(stdout))]
        return RunResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=code if isinstance(code, int) else None,
            limit=limit,
            duration=float(run.get("execution_time") or duration),
            sandbox=self.endpoint,
        )

    async def aclose(self) -> None:
        return None  # the client is the tool's
