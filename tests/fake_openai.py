"""A scriptable OpenAI-compatible chat-completions server for tests, on a real uvicorn.

The server listens on a free 127.0.0.1 port in a background thread. Every URL prefix is an
endpoint of its own (`base_url("main")` → `http://127.0.0.1:PORT/main/v1`), so one server can
stand in for a primary endpoint and its fallbacks. Each endpoint answers from a queue of `Step`s
that the test scripts; once the queue is empty it answers a plain completion.

A test can also give an endpoint a `responder` (a function from the request body to a `Step`:
answer by role or round), a context window it enforces with the real servers' context-exceeded
400 bodies (`context_limit`), and the metadata servers report their window in (`metadata`:
llama.cpp's `/props`, vLLM's and llama.cpp's `/v1/models`).

The server records what it received and counts requests in flight, the most ever in flight, and
clients that hung up; a test waits on that state with `wait_until` (from async code, through
`anyio.to_thread.run_sync`) instead of sleeping.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


def _default_usage() -> dict[str, int] | None:
    return {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class Step:
    """How the endpoint answers one request."""

    content: str = "hello from the fake"
    reasoning: str = ""
    # "reasoning_content" (vLLM, DashScope) or "reasoning" (OpenRouter, Ollama).
    reasoning_field: str = "reasoning_content"
    usage: dict[str, int] | None = field(default_factory=_default_usage)
    finish_reason: str = "stop"
    # Characters per streamed content/reasoning chunk.
    chunk_chars: int = 4
    status: int = 200
    error: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    # Never answer; return only once the client hangs up.
    hang: bool = False
    # Wait for `FakeOpenAI.release()` before answering.
    hold: bool = False
    # Streaming: close the connection after this many chunks.
    drop_after: int | None = None
    send_done: bool = True
    # Send this body verbatim with status 200 instead of a completion.
    raw: str | None = None
    raw_content_type: str = "application/json"
    # Streaming: after this many chunks send nothing more and hold the connection open (a
    # stopping server does this) until the client hangs up.
    stall_after: int | None = None


# The bodies real servers send when a prompt is over the context window (status 400).
def overflow_body(wording: str, n_ctx: int, prompt_tokens: int, max_tokens: int) -> dict[str, Any]:
    if wording == "vllm":
        return {
            "object": "error",
            "message": (
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
                "the completion). Please reduce the length of the messages or completion."
            ),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    if wording == "llamacpp":
        return {
            "error": {
                "code": 400,
                "message": (
                    f"request ({prompt_tokens} tokens) exceeds the available context size ({n_ctx} tokens)"
                ),
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt_tokens,
                "n_ctx": n_ctx,
            }
        }
    if wording == "openai":
        return {
            "error": {
                "message": (
                    f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                    f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    raise ValueError(f"unknown wording {wording!r}")


def fake_prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's tokenizer: four characters a token, over every message's content."""
    return sum(math.ceil(len(str(m.get("content") or "")) / 4) for m in body.get("messages", []))


@dataclass(frozen=True)
class ContextLimit:
    n_ctx: int
    wording: str  # "vllm" (prompt + max_tokens must fit), "llamacpp" / "openai" (prompt must fit)


@dataclass(frozen=True)
class Received:
    name: str
    body: dict[str, Any]
    headers: dict[str, str]


class _Dropped(Exception):
    """Raised mid-stream so uvicorn closes the connection without finishing the body."""


class FakeOpenAI:
    """`certfile` (a PEM with key and chain, for 127.0.0.1): serve HTTPS."""

    def __init__(self, *, certfile: str | None = None) -> None:
        self._certfile = certfile
        self._cond = threading.Condition(threading.RLock())
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self._received: list[Received] = []
        self._gate = threading.Semaphore(0)
        self.in_flight = 0
        self.max_in_flight = 0
        self.held = 0
        self.passed_gate = 0
        self.disconnects = 0
        self.overflows = 0  # context-exceeded 400s sent
        self.served_prompt_tokens = 0  # usage of the completions answered
        self.served_completion_tokens = 0
        self._responders: dict[str, Callable[[dict[str, Any]], Step]] = {}
        self._limits: dict[str, ContextLimit] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._app = Starlette(
            routes=[
                Route("/{name}/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/{name}/v1/models", self._models, methods=["GET"]),
                Route("/{name}/props", self._props, methods=["GET"]),
            ]
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        # Listening before uvicorn runs: early connections wait in the backlog, so nobody has to
        # wait for the server thread to come up.
        sock.listen(128)
        config = uvicorn.Config(
            self._asgi,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            interface="asgi3",
            loop="asyncio",
            timeout_graceful_shutdown=2,
            ssl_certfile=self._certfile,
        )
        self._socket = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        # Let every held request go so the server can drain.
        for _ in range(1000):
            self._gate.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting and inspection ------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() the fake first"
        port: int = self._socket.getsockname()[1]
        return port

    def base_url(self, name: str = "main") -> str:
        scheme = "https" if self._certfile else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{name}/v1"

    def script(self, name: str, *steps: Step) -> None:
        with self._cond:
            self._scripts[name].extend(steps)

    def respond(self, name: str, responder: Callable[[dict[str, Any]], Step]) -> None:
        """Answer `name`'s requests with `responder(body)` once its script is empty."""
        with self._cond:
            self._responders[name] = responder

    def context_limit(self, name: str, n_ctx: int, wording: str) -> None:
        """Answer 400 context-exceeded, in `wording`'s body, to prompts over `n_ctx` tokens."""
        with self._cond:
            self._limits[name] = ContextLimit(n_ctx, wording)

    def metadata(
        self, name: str, *, props: dict[str, Any] | None = None, models: dict[str, Any] | None = None
    ) -> None:
        """What `/props` and `/v1/models` answer for `name` (404 when not set)."""
        with self._cond:
            if props is not None:
                self._metadata.setdefault(name, {})["props"] = props
            if models is not None:
                self._metadata.setdefault(name, {})["models"] = models

    def received(self, name: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self._received if name is None or r.name == name]

    def count(self, name: str | None = None) -> int:
        return len(self.received(name))

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    def wait_until(self, predicate: Callable[[FakeOpenAI], bool], timeout: float = 10.0) -> bool:
        """Block until `predicate(self)` holds (re-checked on every change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _change(self, update: Callable[[], None]) -> None:
        with self._cond:
            update()
            self._cond.notify_all()

    # -- the server --------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        def enter() -> None:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def leave() -> None:
            self.in_flight -= 1

        # Counted around the whole exchange, streamed body included.
        self._change(enter)
        try:
            await self._app(scope, receive, send)
        finally:
            self._change(leave)

    async def _completions(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.json()
        with self._cond:
            if self._scripts[name]:
                step = self._scripts[name].popleft()
            elif name in self._responders:
                step = self._responders[name](body)
            else:
                step = Step()
            limit = self._limits.get(name)
            self._received.append(Received(name, body, dict(request.headers)))
            self._cond.notify_all()
        if limit is not None:
            prompt = fake_prompt_tokens(body)
            wanted = int(body.get("max_tokens") or 0)
            used = prompt + wanted if limit.wording == "vllm" else prompt
            if used > limit.n_ctx:
                self._change(lambda: setattr(self, "overflows", self.overflows + 1))
                return JSONResponse(
                    overflow_body(limit.wording, limit.n_ctx, prompt, wanted), status_code=400
                )

        if step.hold:
            await self._wait_at_gate()
        if step.hang:
            # Past the body, the next ASGI message is the client hanging up.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self._change(lambda: setattr(self, "disconnects", self.disconnects + 1))
            return Response(status_code=499)
        if step.status != 200:
            error = {"error": {"message": step.error, "type": "scripted", "code": step.status}}
            return JSONResponse(error, status_code=step.status, headers=step.headers)
        if step.raw is not None:
            return Response(step.raw, media_type=step.raw_content_type, headers=step.headers)
        if step.usage is not None:

            def served(usage: dict[str, int] = step.usage) -> None:
                self.served_prompt_tokens += usage.get("prompt_tokens", 0)
                self.served_completion_tokens += usage.get("completion_tokens", 0)

            self._change(served)
        model = str(body.get("model", "fake-model"))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chunks(step, model, include_usage), media_type="text/event-stream", headers=step.headers
            )
        message: dict[str, Any] = {"role": "assistant", "content": step.content}
        if step.reasoning:
            message[step.reasoning_field] = step.reasoning
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": step.finish_reason}],
        }
        if step.usage is not None:
            completion["usage"] = step.usage
        return JSONResponse(completion, headers=step.headers)

    async def _models(self, request: Request) -> Response:
        found = self._metadata.get(request.path_params["name"], {}).get("models")
        return (
            JSONResponse(found)
            if found is not None
            else JSONResponse({"error": "not found"}, status_code=404)
        )

    async def _props(self, request: Request) -> Response:
        found = self._metadata.get(request.path_params["name"], {}).get("props")
        return (
            JSONResponse(found)
            if found is not None
            else JSONResponse({"error": "not found"}, status_code=404)
        )

    async def _wait_at_gate(self) -> None:
        self._change(lambda: setattr(self, "held", self.held + 1))
        try:
            await anyio.to_thread.run_sync(self._gate.acquire, abandon_on_cancel=True)
        finally:

            def passed() -> None:
                self.held -= 1
                self.passed_gate += 1

            self._change(passed)

    async def _chunks(self, step: Step, model: str, include_usage: bool) -> AsyncIterator[str]:
        envelope = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}

        def frame(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**envelope, 'choices': choices, **extra})}\n\n"

        def pieces(text: str) -> list[str]:
            size = max(1, step.chunk_chars)
            return [text[i : i + size] for i in range(0, len(text), size)]

        deltas: list[dict[str, str]] = [{step.reasoning_field: p} for p in pieces(step.reasoning)]
        deltas += [{"content": p} for p in pieces(step.content)]
        # A comment first, as OpenRouter sends while it queues: clients must skip it.
        yield ": keep-alive\n\n"
        yield frame([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        for sent, delta in enumerate(deltas):
            if step.drop_after is not None and sent >= step.drop_after:
                raise _Dropped
            if step.stall_after is not None and sent >= step.stall_after:
                # Headers and some chunks went out; now silence until the client gives up.
                await anyio.sleep_forever()
            yield frame([{"index": 0, "delta": delta, "finish_reason": None}])
        yield frame([{"index": 0, "delta": {}, "finish_reason": step.finish_reason}])
        if include_usage and step.usage is not None:
            yield frame([], usage=step.usage)
        if step.send_done:
            yield "data: [DONE]\n\n"
