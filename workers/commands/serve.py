"""`heavyresearch serve`: the HTTP API on uvicorn (the app is named by import string, so the
engine package never imports the web edge)."""

from __future__ import annotations

import logging
import socket

import uvicorn

from workers.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, plus one line saying where the service is, once it accepts connections."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info(
                    "serving on http://%s:%d (web page /, API docs /docs) with backend=%s, model=%s",
                    shown,
                    port,
                    describe_backend(self._settings),
                    describe_model(self._settings),
                )


def describe_backend(settings: Settings) -> str:
    if settings.backend == "sqlite":
        return f"sqlite ({settings.sqlite.resolved_path()})"
    return settings.backend


def describe_model(settings: Settings) -> str:
    if not settings.llm.base_url:
        return "SIMULATED (in-process; set HR_LLM__BASE_URL for a real LLM)"
    simulated = " (SIMULATED)" if settings.simulated else ""
    return f"{settings.llm.model or '(server default)'} at {settings.llm.base_url}{simulated}"


def serve(settings: Settings, *, host: str | None, port: int | None) -> int:
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port if port is not None else settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    server = _Server(config, settings)
    server.run()
    return 0 if server.started else 3  # uvicorn's own exit code for a failed start
