"""What a sandbox run returns, and the seam every sandbox implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when the run was stopped before it exited
    # Why the run was stopped, when it was: "wall_time", "cpu_time", "output", "memory".
    limit: str | None = None
    duration: float = 0.0
    sandbox: str = ""  # "embedded", or the remote endpoint that ran it


class Sandbox(Protocol):
    name: str

    async def run(self, code: str) -> RunResult:
        """Run `code` as a Python program. Raises `RetryableError` when the sandbox itself is
        unreachable or broken (the next sandbox in the chain is tried)."""

    async def aclose(self) -> None: ...
