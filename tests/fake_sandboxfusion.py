"""A local fake of a SandboxFusion server (`POST /run_code`), on 127.0.0.1.

It never runs the code it is sent (that would run model code outside a sandbox): it answers
with scripted results shaped as SandboxFusion's documented `RunCodeResponse`, and records every
request so tests can check what was sent.

Modes: `ok` (stdout says how many characters of code arrived), `timeout` (run_result status
TimeLimitExceeded), `failed` (the program's own error: status Failed, a traceback on stderr),
`sandbox_error` (status SandboxError), `500` (an HTTP error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fake_search_apis import LoopbackServer


@dataclass
class FakeSandboxFusion:
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: LoopbackServer | None = None

    def __enter__(self) -> Self:
        self.server = LoopbackServer(Starlette(routes=[Route("/run_code", self._run_code, methods=["POST"])]))
        self.server.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    async def _run_code(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        run = {"status": "Finished", "execution_time": 0.01, "return_code": 0, "stdout": "", "stderr": ""}
        status = "Success"
        if self.mode == "500":
            return JSONResponse({"detail": "internal error"}, status_code=500)
        if self.mode == "sandbox_error":
            return JSONResponse({"status": "SandboxError", "message": "no executor", "run_result": None})
        if self.mode == "ok":
            run["stdout"] = f"ran {len(body['code'])} characters\n"
        elif self.mode == "timeout":
            status = "Failed"
            run.update(status="TimeLimitExceeded", execution_time=body["run_timeout"], return_code=None)
        elif self.mode == "failed":
            status = "Failed"
            run.update(
                status="Finished", return_code=1, stderr="Traceback (most recent call last):\nValueError\n"
            )
        return JSONResponse(
            {"status": status, "message": "", "compile_result": None, "run_result": run, "files": {}}
        )
