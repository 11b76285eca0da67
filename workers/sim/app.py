"""The simulated model as an OpenAI-compatible HTTP server (SIMULATION, not a real LLM).

Endpoints: `POST /v1/chat/completions` (streaming and not), `GET /v1/models`, `GET /health`,
and the scripting surface `GET|POST /sim/config`, `GET /sim/stats`, `POST /sim/reset`. Every
response carries `X-Simulated: true` and every completion names the model `heavyresearch-sim`,
so a simulated answer cannot pass for a real one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.settings import SIMULATED_MODEL_ID
from workers.sim.faults import (
    FAULT_KINDS,
    MALFORMED_KINDS,
    FaultKind,
    SimConfig,
    decide_fault,
    malform,
)
from workers.sim.policy import Reply, SimRole, count_tokens, detect_role, respond

__all__ = ["MODEL_ID", "SimConfig", "SimState", "SimStats", "create_app"]

MODEL_ID = SIMULATED_MODEL_ID
MODEL_DESCRIPTION = (
    "SIMULATED model (heavyresearch sim-llm): a deterministic research policy for tests, demos "
    "and benchmarks. Not a real language model."
)
ROLES: tuple[SimRole, ...] = ("research", "synthesis", "summariser", "judge", "other")
# Characters per streamed delta: small enough that tags split across chunks, as with real models.
CHUNK_CHARS = 24


def _zeros(keys: tuple[str, ...]) -> Callable[[], dict[str, int]]:
    return lambda: dict.fromkeys(keys, 0)


class SimStats(BaseModel):
    """Counters since start (or the last `POST /sim/reset`)."""

    simulated: bool = True
    calls: int = 0
    completed: int = 0
    in_flight: int = 0
    # Calls whose client went away (or the server stopped) while the sim was still waiting.
    cancelled: int = 0
    by_role: dict[str, int] = Field(default_factory=_zeros(ROLES))
    faults: dict[str, int] = Field(default_factory=_zeros(FAULT_KINDS))
    malformed_kinds: dict[str, int] = Field(default_factory=_zeros(MALFORMED_KINDS))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The largest prompt seen, per role: what the bounded-context benchmark reads.
    max_prompt_tokens: dict[str, int] = Field(default_factory=_zeros(ROLES))

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())


@dataclass
class SimState:
    config: SimConfig
    stats: SimStats = field(default_factory=SimStats)
    # Set when the hosting server stops, so pending sleeps end at once instead of holding it up.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Faults since the config was last replaced: what `SimConfig.max_faults` caps.
    faults_under_config: int = 0

    def set_config(self, config: SimConfig) -> None:
        self.config = config
        self.faults_under_config = 0


class _StreamOptions(BaseModel):
    include_usage: bool = False


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if isinstance(part, dict))
        return self.content or ""


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = MODEL_ID
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    seed: int | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream_options: _StreamOptions | None = None


def _error(
    status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class _SimulatedHeader:
    """Adds `X-Simulated: true` to every response, errors and 404s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-simulated", b"true")]
            await send(message)

        await self.app(scope, receive, send_marked)


Waited = Literal["elapsed", "disconnected", "stopping"]


async def _wait(state: SimState, seconds: float, receive: Callable[[], Awaitable[Message]] | None) -> Waited:
    """Sleep, but give up as soon as the client disconnects or the server stops."""
    if seconds <= 0:
        return "elapsed"
    outcome: Waited = "elapsed"
    async with anyio.create_task_group() as tg:

        async def on_disconnect(receive: Callable[[], Awaitable[Message]]) -> None:
            nonlocal outcome
            while (await receive())["type"] != "http.disconnect":
                pass
            outcome = "disconnected"
            tg.cancel_scope.cancel()

        async def on_stop() -> None:
            nonlocal outcome
            await state.stopping.wait()
            outcome = "stopping"
            tg.cancel_scope.cancel()

        if receive is not None:
            tg.start_soon(on_disconnect, receive)
        tg.start_soon(on_stop)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return outcome


def _pieces(text: str) -> Iterator[str]:
    for i in range(0, len(text), CHUNK_CHARS):
        yield text[i : i + CHUNK_CHARS]


def _truncate(reply: Reply, max_tokens: int | None) -> tuple[Reply, str]:
    """Cut the output to `max_tokens` the way a server does: finish_reason "length"."""
    if max_tokens is None or count_tokens(reply.reasoning) + count_tokens(reply.content) <= max_tokens:
        return reply, "stop"
    budget = max_tokens * 4
    reasoning = reply.reasoning[:budget]
    content = reply.content[: max(0, budget - len(reasoning))]
    return Reply(role=reply.role, content=content, reasoning=reasoning), "length"


def create_app(config: SimConfig | None = None) -> FastAPI:
    """The simulated model server. Its state lives on `app.state.sim` (a `SimState`)."""
    state = SimState(config=config or SimConfig())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # A fresh event per run: an asyncio.Event belongs to the loop that first waits on it.
        state.stopping = asyncio.Event()
        yield
        state.stopping.set()

    app = FastAPI(
        title="heavyresearch-sim (SIMULATED model)", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.sim = state
    app.add_middleware(_SimulatedHeader)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "simulated": True, "model": MODEL_ID}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> Response:
        if model_id != MODEL_ID:
            return _error(
                404, f"The model '{model_id}' does not exist", "invalid_request_error", "model_not_found"
            )
        return JSONResponse(_model_card())

    @app.get("/sim/config")
    async def get_config() -> SimConfig:
        return state.config

    @app.post("/sim/config")
    async def set_config(new: SimConfig) -> SimConfig:
        state.set_config(new)
        return new

    @app.get("/sim/stats")
    async def get_stats() -> SimStats:
        return state.stats

    @app.post("/sim/reset")
    async def reset() -> SimStats:
        """Zero the counters (the call counter that seeds faults included)."""
        state.stats = SimStats(in_flight=state.stats.in_flight)
        return state.stats

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
            chat = _ChatRequest.model_validate(body)
        except ValueError as exc:  # JSONDecodeError and ValidationError are both ValueErrors
            message = _validation_message(exc) if isinstance(exc, ValidationError) else "body is not JSON"
            return _error(400, message, "invalid_request_error", "invalid_request")
        return await _complete(state, request, chat)

    return app


def _model_card() -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "object": "model",
        "created": 0,
        "owned_by": "heavyresearch (simulation)",
        "description": MODEL_DESCRIPTION,
    }


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"invalid request: {where}: {first['msg']}"


async def _complete(state: SimState, request: Request, chat: _ChatRequest) -> Response:
    # Latency counts from the request's arrival, as a model server's time to first token does:
    # the sim's own work happens inside it instead of being added on top.
    arrived = anyio.current_time()
    config = state.config  # one snapshot per call: a runtime change applies to the next call
    stats = state.stats
    stats.calls += 1
    call = stats.calls
    messages = [{"role": m.role, "content": m.text()} for m in chat.messages]
    role = detect_role(messages)
    stats.by_role[role] += 1
    fault = decide_fault(
        config, request_seed=chat.seed, call=call, role=role, faults_so_far=state.faults_under_config
    )
    if fault is not None:
        stats.faults[fault] += 1
        state.faults_under_config += 1
    if fault == "429":
        return _error(
            429,
            "Simulated rate limit: retry after 0 seconds",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers={"Retry-After": "0"},
        )
    if fault == "500":
        return _error(500, "Simulated internal server error", "server_error", "internal_error")

    stats.in_flight += 1
    streaming = False
    try:
        if fault == "hang":
            waited = await _wait(state, config.hang_seconds, request.receive)
            if waited != "elapsed":
                stats.cancelled += 1
            return _error(504, f"Simulated hang ({waited})", "server_error", "timeout")
        reply = _reply(config, chat, messages, fault, stats)
        reply, finish = _truncate(reply, chat.max_completion_tokens or chat.max_tokens)
        prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(reply.content) + count_tokens(reply.reasoning),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        stats.prompt_tokens += usage["prompt_tokens"]
        stats.completion_tokens += usage["completion_tokens"]
        stats.max_prompt_tokens[role] = max(stats.max_prompt_tokens[role], prompt_tokens)
        head = {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": MODEL_ID,
            "system_fingerprint": MODEL_ID,
        }
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            streaming = True
            chunks = _stream(state, config, head, reply, finish, usage if include_usage else None)
            return StreamingResponse(
                chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        pace = usage["completion_tokens"] / config.tokens_per_second if config.tokens_per_second else 0.0
        left = config.latency + pace - (anyio.current_time() - arrived)
        waited = await _wait(state, max(left, 0.0), request.receive)
        if waited == "disconnected":
            stats.cancelled += 1
        else:
            stats.completed += 1
        message = {
            "role": "assistant",
            "content": reply.content,
            "reasoning_content": reply.reasoning or None,
        }
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage})
    finally:
        # A stream is still running after this returns; it settles the counter when it ends.
        if not streaming:
            state.stats.in_flight -= 1


def _reply(
    config: SimConfig,
    chat: _ChatRequest,
    messages: list[dict[str, str]],
    fault: FaultKind | None,
    stats: SimStats,
) -> Reply:
    # The server's seed shifts every request seed, so `sim-llm --seed N` changes whole runs.
    seed = (chat.seed or 0) + config.seed
    reply = respond(messages, seed=seed, min_rounds=config.min_rounds)
    if fault == "malformed":
        kind = MALFORMED_KINDS[(stats.faults["malformed"] - 1) % len(MALFORMED_KINDS)]
        stats.malformed_kinds[kind] += 1
        reply = malform(reply, kind)
    return reply


async def _stream(
    state: SimState,
    config: SimConfig,
    head: dict[str, Any],
    reply: Reply,
    finish: str,
    usage: dict[str, int] | None,
) -> AsyncIterator[str]:
    """SSE chunks in OpenAI's order: role, reasoning deltas, content deltas, finish, usage, [DONE].

    Starlette cancels this generator when the client disconnects, which ends any pending sleep.
    """
    finished = False

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        data: dict[str, Any] = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if usage is not None:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    async def pace(piece: str) -> None:
        if config.tokens_per_second:
            await _wait(state, count_tokens(piece) / config.tokens_per_second, None)

    try:
        await _wait(state, config.latency, None)
        yield chunk({"role": "assistant", "content": ""})
        for piece in _pieces(reply.reasoning):
            await pace(piece)
            yield chunk({"reasoning_content": piece})
        for piece in _pieces(reply.content):
            await pace(piece)
            yield chunk({"content": piece})
        yield chunk({}, finish)
        if usage is not None:
            tail = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield f"data: {json.dumps(tail)}\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        # `state.stats` again, not a captured copy: `/sim/reset` may have swapped it meanwhile.
        state.stats.in_flight -= 1
        if finished:
            state.stats.completed += 1
        else:
            state.stats.cancelled += 1
