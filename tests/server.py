"""The real API on uvicorn, on a free 127.0.0.1 port, in a background thread; and an SSE reader.

Tests talk to it with a real httpx client over loopback, the way users do. The app runs on the
memory backend with the engine in-process, the SIMULATED model, and a corpus built from
`tests/data/mini_corpus.jsonl`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from app.main import create_app
from workers.settings import Settings

STARTUP_TIMEOUT = 30.0
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled"}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def api_settings(corpus: Path, **overrides: Any) -> Settings:
    """Memory backend, simulated model (no LLM URL), the given corpus; `overrides` nest like the
    settings (`sim={"latency": 0.2}`)."""
    base: dict[str, Any] = {
        "backend": "memory",
        "llm": {"base_url": "", "max_retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.05},
        "corpus": {"path": str(corpus), "auto_build": False},
        "server": {"sse_keepalive": 1.0},
    }
    return Settings(**_merge(base, overrides))


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: FastAPI = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name=f"api-{self.port}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # Polling a flag another thread sets: there is no event to wait on in uvicorn's API.
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server exited during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start within {STARTUP_TIMEOUT} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(30.0), trust_env=False, **kwargs
        )


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- SSE ------------------------------------------------------------------------------------------


@dataclass
class SSEMessage:
    event: str = "message"
    id: str | None = None
    data: str = ""

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


@dataclass
class SSEStream:
    """What one streaming request saw: its messages, and how many keep-alive comments."""

    messages: list[SSEMessage] = field(default_factory=list)
    comments: int = 0
    ended: bool = False  # the server closed the stream (rather than the client leaving)
    retry: int | None = None  # the last `retry:` hint (milliseconds), if the server sent one

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m.json for m in self.messages]


async def parse_sse(response: httpx.Response, stream: SSEStream) -> AsyncIterator[SSEMessage]:
    """Yields each message as it arrives (text/event-stream framing: blank line ends a message)."""
    current = SSEMessage()
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                current.data = "\n".join(data)
                stream.messages.append(current)
                yield current
            current, data = SSEMessage(), []
            continue
        if line.startswith(":"):
            stream.comments += 1
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry" and value.isdigit():
            stream.retry = int(value)
    stream.ended = True


async def read_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    method: str = "GET",
    json_body: Any = None,
) -> SSEStream:
    """Stream `path` until the server ends it, or until `limit` messages, then disconnect."""
    stream = SSEStream()
    if limit == 0:
        return stream
    async with open_stream(client, path, headers=headers, method=method, json_body=json_body) as response:
        async for _ in parse_sse(response, stream):
            if limit is not None and len(stream.messages) >= limit:
                break
    return stream


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    json_body: Any = None,
) -> AsyncIterator[httpx.Response]:
    all_headers = {"Accept": "text/event-stream", **(headers or {})}
    async with client.stream(method, path, headers=all_headers, json=json_body) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        yield response


async def run_to_end(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job, waiting for its terminal one."""
    stream = await read_stream(client, f"/v1/research/{job_id}/events")
    assert stream.ended and stream.events and stream.events[-1]["type"] in TERMINAL, stream.events[-3:]
    return stream.events


async def wait_for_event(
    client: httpx.AsyncClient, job_id: str, type_: str, *, round_: int | None = None
) -> dict[str, Any]:
    """The job's first event of `type_` (in round `round_`, if given), as soon as it exists."""
    async with open_stream(client, f"/v1/research/{job_id}/events") as response:
        async for message in parse_sse(response, SSEStream()):
            if message.event == type_ and (round_ is None or message.json["round"] == round_):
                return message.json
            if message.event in TERMINAL:
                raise AssertionError(f"job ended ({message.event}) before any {type_}")
    raise AssertionError(f"stream closed before any {type_}")
