"""`heavyresearch serve`: the HTTP API on uvicorn (the app is named by import string, so the
engine package never imports the web edge)."""

from __future__ import annotations

import uvicorn

from workers.settings import Settings


def serve(settings: Settings, *, host: str | None, port: int | None) -> int:
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port if port is not None else settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    return 0
