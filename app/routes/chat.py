"""The OpenAI-compatible facade: a Heavy job as a model, for any OpenAI client.

`POST /v1/chat/completions` turns the last user message into a normal research job (owned by
the caller's tenant, its id in the `X-Job-Id` header and in the completion id `chatcmpl-<job>`),
then either waits for it and answers one completion, or streams progress as `reasoning_content`
deltas and the answer as `content` deltas, then a usage chunk and `[DONE]`. The stream only
reads the job's events, so a client that disconnects leaves the job running.

`model` picks a preset from `PRESETS`: a few research-body fields under a model id. A request's
`heavyresearch` object takes any field of the research body and wins over the preset.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.auth import KeyringDep, PrincipalDep
from app.deps import EngineDep, LifecycleDep, MetricsDep, ResolverDep, SettingsDep
from app.errors import ERROR_RESPONSES, UNKNOWN_FILE_RESPONSE, error_response
from app.routes.research import create_research
from app.schemas import MAX_AGENTS, ErrorResponse, ResearchCreate
from app.sse import follow
from workers.backend.base import Backend
from workers.events import Event, EventType
from workers.models import JobRecord, JobStatus
from workers.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=ERROR_RESPONSES)


@dataclass(frozen=True)
class Preset:
    """A model id of the facade: research-body fields it sets (any of `ResearchCreate`)."""

    id: str
    description: str
    fields: dict[str, Any] = field(default_factory=dict)


# Add a row to offer another model id (e.g. a `react` mode preset: fields={"mode": "react"}).
PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset("heavy", "Heavy Mode with the server's default agents and rounds."),
        Preset("heavy-2", "Heavy Mode, 2 agents.", {"agents": 2}),
        Preset("heavy-4", "Heavy Mode, 4 agents.", {"agents": 4}),
        Preset("heavy-8", "Heavy Mode, 8 agents (the papers' recommended trade-off).", {"agents": 8}),
        Preset("heavy-16", "Heavy Mode, 16 agents.", {"agents": 16}),
    )
}


def available_presets(settings: Settings) -> dict[str, Preset]:
    """The presets this server can run: none asking for more agents than it allows."""
    most = min(MAX_AGENTS, settings.agent.max_agents)
    return {k: p for k, p in PRESETS.items() if int(p.fields.get("agents", 0)) <= most}


CREATED = 1_700_000_000  # a fixed `created` for /v1/models: presets are not versioned


ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


# A user message with some text: the question (JSON Schema says it with `contains`).
_HAS_QUESTION = {
    "contains": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"const": "user"}, "content": {"type": "string", "pattern": "\\S"}},
    }
}


class ChatCompletionCreate(BaseModel):
    """The OpenAI chat-completions body. Sampling fields (temperature, …) are accepted and
    ignored: the research agents use the server's sampling settings."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(
        min_length=1,
        max_length=200,
        description="A preset: see `GET /v1/models`.",
        json_schema_extra={"enum": list(PRESETS)},
    )
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=1000,
        description="The conversation; its last user message with text is the research question.",
        json_schema_extra=_HAS_QUESTION,  # type: ignore[arg-type]
    )
    stream: bool = False
    heavyresearch: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Fields of the `POST /v1/research` body (agents, max_rounds, tools, …); they win over the preset."
        ),
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = CREATED
    owned_by: str = "heavyresearch"
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList, summary="The facade's models (Heavy Mode presets)")
async def list_models(principal: PrincipalDep, settings: SettingsDep) -> ModelList:
    presets = available_presets(settings).values()
    return ModelList(data=[ModelCard(id=p.id, description=p.description) for p in presets])


def _question(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role != "user":
            continue
        text = ""
        if isinstance(message.content, str):
            text = message.content
        elif isinstance(message.content, list):
            text = "\n".join(str(p.get("text", "")) for p in message.content if p.get("type") == "text")
        if text.strip():
            return text.strip()
    return ""


def _research_body(body: ChatCompletionCreate, settings: Settings) -> ResearchCreate:
    presets = available_presets(settings)
    preset = presets.get(body.model)
    if preset is None:
        raise RequestValidationError(
            [
                {
                    "type": "model_not_found",
                    "loc": ("body", "model"),
                    "msg": f"unknown model; one of {list(presets)}",
                }
            ]
        )
    question = _question(body.messages).strip()
    if not question:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body", "messages"), "msg": "no user message with text content"}]
        )
    options = body.heavyresearch or {}
    clash = sorted({"query", "stream"} & options.keys())
    if clash:
        loc = ("body", "heavyresearch", clash[0])
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": loc, "msg": "set by the chat request itself"}]
        )
    fields = {**preset.fields, **options, "query": question, "stream": False}
    try:
        return ResearchCreate.model_validate(fields)
    except ValidationError as exc:
        errors = [
            {**e, "loc": ("body", "messages" if e["loc"][:1] == ("query",) else "heavyresearch", *e["loc"])}
            for e in exc.errors()
        ]
        raise RequestValidationError(errors) from None


def _sources(record: JobRecord) -> str:
    result = record.result
    if result is None or not result.sources:
        return ""
    lines = [f"[{s.id}] {s.title or s.url} — {s.url}" for s in result.sources]
    return "\n\nSources:\n" + "\n".join(lines)


def _usage(record: JobRecord) -> dict[str, int]:
    u = record.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _progress(event: Event) -> str | None:
    """One line of progress for `reasoning_content`, or None for events not worth a line."""
    d, who = event.data, f"agent {event.agent}"
    match event.type:
        case EventType.job_started:
            return "job started"
        case EventType.agent_started:
            return f"{who}: started" + (f" (angle: {d['angle']})" if d.get("angle") else "")
        case EventType.round_started:
            return f"{who}: round {event.round}" + (" (forced answer)" if d.get("forced") else "")
        case EventType.tool_called:
            args = json.dumps(d.get("arguments", {}), ensure_ascii=False)
            return f"{who}: {d.get('name')} {args[:200]}"
        case EventType.agent_finished:
            return f"{who}: finished"
        case EventType.agent_failed:
            return f"{who}: failed ({d.get('error')})"
        case EventType.synthesis_started:
            return f"synthesis: reading the reports of agents {d.get('agents')}"
        case _:
            return None


async def _wait_for_end(backend: Backend, job_id: str) -> JobRecord:
    async for _ in follow(backend, job_id, 0, anyio.Event()):
        pass
    record = await backend.get_job(job_id)
    assert record is not None  # a job is only deleted once finished, and by its owner
    return record


def _failure(record: JobRecord) -> tuple[int, str, str]:
    if record.status == JobStatus.cancelled:
        return 409, "job_cancelled", f"research job {record.id} was cancelled"
    return 502, "job_failed", f"research job {record.id} failed: {record.error or 'unknown error'}"


class _Chunks:
    def __init__(self, completion_id: str, model: str) -> None:
        self.id, self.model, self.created = completion_id, model, int(time.time())

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        return "data: " + json.dumps({**body, "choices": choices, **extra}, ensure_ascii=False) + "\n\n"


def _content_pieces(text: str, size: int = 200) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def _stream(backend: Backend, job_id: str, chunks: _Chunks) -> AsyncIterator[str]:
    yield chunks.chunk({"role": "assistant", "content": ""})
    async for event in follow(backend, job_id, 0, anyio.Event()):
        line = _progress(event)
        if line is not None:
            yield chunks.chunk({"reasoning_content": line + "\n"})
    record = await backend.get_job(job_id)
    if record is None or record.status != JobStatus.succeeded or record.result is None:
        status, type_, message = _failure(record) if record else (404, "not_found", "the job was deleted")
        yield "data: " + json.dumps({"error": {"type": type_, "message": message, "code": status}}) + "\n\n"
        yield "data: [DONE]\n\n"
        return
    for piece in _content_pieces(record.result.answer + _sources(record)):
        yield chunks.chunk({"content": piece})
    yield chunks.chunk({}, "stop")
    yield chunks.chunk(None, usage=_usage(record))
    yield "data: [DONE]\n\n"


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions: a Heavy Mode job as a model",
    responses={
        404: UNKNOWN_FILE_RESPONSE,
        200: {
            "description": (
                "A `chat.completion`, or with `stream: true` a `text/event-stream` of "
                "`chat.completion.chunk`s: progress as `reasoning_content`, the answer as `content`, "
                "then a chunk with `usage` and `data: [DONE]`. `X-Job-Id` names the job."
            ),
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {"data": {"type": "string"}},
                        "required": ["data"],
                    }
                },
            },
        },
        409: {"model": ErrorResponse, "description": "The job was cancelled before it answered."},
        429: {
            "model": ErrorResponse,
            "description": "Queue full or a tenant quota reached; see `Retry-After`.",
        },
        502: {"model": ErrorResponse, "description": "The research job failed."},
    },
)
async def chat_completions(
    body: ChatCompletionCreate,
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    lifecycle: LifecycleDep,
    principal: PrincipalDep,
    keyring: KeyringDep,
    resolver: ResolverDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> Response:
    research = _research_body(body, settings)
    submitted = await create_research(
        research, engine, settings, metrics, lifecycle, principal, keyring, resolver, idempotency_key, None
    )
    job_id = submitted.headers["Location"].rsplit("/", 1)[-1]
    completion_id = f"chatcmpl-{job_id}"
    headers = {"X-Job-Id": job_id}
    if body.stream:
        chunks = _Chunks(completion_id, body.model)
        return StreamingResponse(
            _stream(engine.backend, job_id, chunks),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    record = await _wait_for_end(engine.backend, job_id)
    if record.status != JobStatus.succeeded or record.result is None:
        status, type_, message = _failure(record)
        return error_response(status, type_, message, headers=headers)
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(record.created_at),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": record.result.answer + _sources(record)},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(record),
    }
    return JSONResponse(completion, headers=headers)


def document_options(schema: dict[str, Any], settings: Settings) -> None:
    """Show `heavyresearch` as what it is validated as: the research body without `query` and
    `stream` (copied after the server's own limits were written into that body)."""
    components = schema.get("components", {}).get("schemas", {})
    body, chat = components.get("ResearchCreate"), components.get("ChatCompletionCreate")
    if body is None or chat is None:
        return
    options = copy.deepcopy(body)
    options["title"] = "HeavyResearchOptions"
    options["description"] = "Fields of the `POST /v1/research` body; they win over the model's preset."
    options.pop("examples", None)
    for name in ("query", "stream"):
        options["properties"].pop(name, None)
    options["required"] = [r for r in options.get("required", []) if r not in ("query", "stream")]
    if not options["required"]:
        del options["required"]
    components["HeavyResearchOptions"] = options
    chat["properties"]["model"]["enum"] = list(available_presets(settings))
    chat["properties"]["heavyresearch"] = {
        "anyOf": [{"$ref": "#/components/schemas/HeavyResearchOptions"}, {"type": "null"}],
        "description": options["description"],
    }
