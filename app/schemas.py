"""The public contract of the HTTP API: request bodies and response shapes.

These models are what the OpenAPI document shows, so every field carries its limits, a
description and an example. Engine models (`workers.models`) never go out on the wire
directly: the views below copy from them, so an engine refactor cannot silently change the API.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.models import (
    AgentStatus,
    BudgetReport,
    JobRecord,
    JobStatus,
    Mode,
    RemovedCitation,
    Usage,
    WebhookState,
    WebhookStatus,
)

# Tools a request may name (the five the released model was trained on). A job gets those of
# them this server really has: PythonInterpreter only with a working sandbox.
TOOL_NAMES = ("search", "visit", "google_scholar", "PythonInterpreter", "parse_file")
ToolName = Literal["search", "visit", "google_scholar", "PythonInterpreter", "parse_file"]

# Hard ceilings of the public contract; a server may be configured stricter, never looser.
MAX_AGENTS = 16
MAX_ROUNDS = 256
MAX_METADATA_BYTES = 8 * 1024
MAX_ANGLES = 16
MAX_ANGLE_CHARS = 500
MAX_TIME_BUDGET = 86_400

EXAMPLE_QUERY = "Which element has the highest melting point, and how was it measured?"
EXAMPLE_JOB_ID = "job_019a3f2b7c1d9e4a6b8f0c2d"


def json_integers(model: type[BaseModel], data: Any) -> Any:
    """Integral floats (`12.0`) as ints for the int fields: JSON Schema counts them as
    integers, and strict validation would not."""
    if not isinstance(data, dict):
        return data
    ints = {name for name, f in model.model_fields.items() if f.annotation in (int, int | None)}
    return {
        k: int(v) if k in ints and isinstance(v, float) and v.is_integer() and abs(v) < 2**63 else v
        for k, v in data.items()
    }


# Unicode's White_Space characters: what the schema's `\S` pattern (JSON Schema regex) treats as
# blank. Python's own str.strip() also drops control characters such as U+001C, which the
# schema accepts as content, so stripping with it would refuse requests the schema allows.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
# "Holds something that is not whitespace", spelt the same for every regex engine (pydantic's,
# and the JSON Schema one a client's tooling uses), which do not agree on what `\S` means.
NOT_BLANK = f"[^{WHITESPACE}]"


class ResearchCreate(BaseModel):
    """Body of `POST /v1/research`. Fields left out take the server's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        # JSON types exactly as the schema says: no "4" for 4, no 0 for false.
        strict=True,
        json_schema_extra={
            "examples": [
                {"query": EXAMPLE_QUERY},
                {
                    "query": EXAMPLE_QUERY,
                    "agents": 8,
                    "max_rounds": 64,
                    "tools": ["search", "visit"],
                    "max_seconds": 600,
                    "angles": ["primary sources", "recent measurements"],
                    "metadata": {"ticket": "R-1042"},
                },
            ]
        },
    )

    query: str = Field(
        min_length=1,
        pattern=NOT_BLANK,
        description=(
            "The research question. Leading and trailing whitespace is dropped; the longest "
            "accepted query is the server setting `server.max_query_chars` (4000 by default)."
        ),
        examples=[EXAMPLE_QUERY],
    )
    agents: int | None = Field(
        default=None,
        ge=1,
        le=MAX_AGENTS,
        description=(
            "Parallel IterResearch agents (Heavy Mode's n). Default: the server setting "
            "`agent.default_agents` (4). Gains flatten after 8."
        ),
        examples=[4],
    )
    max_rounds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROUNDS,
        description="Round limit per agent. Default: the server setting `agent.default_max_rounds` (32).",
        examples=[32],
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Model id to ask the research endpoint for, instead of the configured one.",
        examples=["alibaba/tongyi-deepresearch-30b-a3b"],
    )
    tools: list[ToolName] | None = Field(
        default=None,
        min_length=1,
        max_length=len(TOOL_NAMES),
        description=(
            "Tools the agents may call, of `search`, `visit`, `google_scholar`, `PythonInterpreter` "
            "(code runs only in a sandbox) and `parse_file` (the job's `files`). Default: all of them. "
            "A named tool this server does not have (no sandbox, say) is left out. Duplicates are ignored."
        ),
        examples=[["search", "visit"]],
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1000,
        le=1_000_000_000,
        description=(
            "Token budget for the whole job (prompt + completion, every agent and the synthesis). "
            "When it is spent the agents answer from their reports and the result says so. Forced "
            "answers and the synthesis are reserved for inside it (`result.budget` shows how much), "
            "so the job never spends more; a budget too small for one round per agent after those "
            "reservations is refused with 422, naming the least that would do."
        ),
        examples=[2_000_000],
    )
    max_seconds: float | None = Field(
        default=None,
        ge=1,
        le=MAX_TIME_BUDGET,
        allow_inf_nan=False,
        description=(
            "Time budget in seconds, counted from when the job starts running. Its last share is "
            "planned for forced answers and the synthesis, so the job ends within `max_seconds` plus "
            "the server's `budget.finish_allowance_seconds` (2 s by default); `result.budget` shows "
            "the plan. A budget leaving under `budget.min_research_seconds` for research is a 422."
        ),
        examples=[900],
    )
    angles: (
        list[Annotated[str, Field(min_length=1, max_length=MAX_ANGLE_CHARS, pattern=NOT_BLANK)]] | None
    ) = Field(
        default=None,
        max_length=MAX_ANGLES,
        description="Research angles handed round-robin to the agents, so they explore differently.",
        examples=[["primary sources", "recent measurements"]],
    )
    webhook_url: AnyHttpUrl | None = Field(
        default=None,
        description=(
            "An http(s) URL called once the job ends (succeeded, failed or cancelled): one POST of "
            "JSON with `type` (the terminal event), `job_id`, `status`, `answer`, `sources`, `error`, "
            "`simulated`, `finished_at` and `links`. Signed the Standard Webhooks way (`webhook-id`, "
            "`webhook-timestamp`, `webhook-signature`) when the server has `webhooks.secrets`. Checked "
            "at submit: a private, loopback or unresolvable address is a 422. Shown redacted. Failed "
            "attempts are retried, and a worker crash may repeat a call: every call for one job "
            "carries the same `X-Heavyresearch-Delivery` id. Only public internet addresses are "
            "called, unless the server allows the host (`webhooks.allow_hosts`); redirects are not "
            "followed. The job's `webhook` shows the outcome."
        ),
        examples=["https://example.com/hooks/research"],
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Free-form JSON object stored with the job and returned as is (at most 8 KiB as JSON).",
        examples=[{"ticket": "R-1042"}],
    )
    mode: Mode = Field(
        default="heavy",
        description=(
            "`heavy`: IterResearch agents, each rebuilding a compact workspace every round, and a "
            "synthesis of their reports (Heavy Mode). `react`: the released ReAct loop, one growing "
            "transcript per agent with a final answer turn at the context budget "
            "(`agent.react_context_tokens`); with `agents` > 1, independent rollouts and a synthesis "
            "of their answers and last reasoning."
        ),
        examples=["heavy"],
    )
    files: list[str] | None = Field(
        default=None,
        max_length=100,
        description=(
            "Ids of files uploaded with `POST /v1/files` that the agents may read with `parse_file`. "
            "The question shown to the model lists them by name, as the released code does "
            "(`(Uploaded 1 file: ['report.pdf'])`). At most `files.max_files_per_job` (10 by default); "
            "an unknown or expired id is refused with 404."
        ),
        examples=[["file_019a3f2b7c1d9e4a6b8f0c2d3e"]],
    )
    stream: bool = Field(
        default=False,
        description=(
            "Answer with the job's event stream (`text/event-stream`, as `GET "
            "/v1/research/{id}/events`) instead of the job as JSON. Same as sending "
            "`Accept: text/event-stream`."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _json_integers(cls, data: Any) -> Any:
        return json_integers(cls, data)

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        value = value.strip(WHITESPACE)
        if not value:
            raise ValueError("the query is blank")
        return value

    @field_validator("tools")
    @classmethod
    def _dedupe_tools(cls, value: list[ToolName] | None) -> list[ToolName] | None:
        return None if value is None else list(dict.fromkeys(value))

    @field_validator("angles")
    @classmethod
    def _angles_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [angle.strip(WHITESPACE) for angle in value]
        for index, angle in enumerate(cleaned):
            if not angle:
                raise ValueError(f"angle {index} is blank")
            if len(angle) > MAX_ANGLE_CHARS:
                raise ValueError(f"angle {index} is longer than {MAX_ANGLE_CHARS} characters")
        return cleaned

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
        return value


# -- responses ----------------------------------------------------------------------------------


class ResearchParams(BaseModel):
    """The job's request, as the engine runs it (server defaults filled in)."""

    query: str
    agents: int
    max_rounds: int
    model: str | None = None
    tools: list[str] | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    angles: list[str] | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    mode: Mode = "heavy"
    files: list[str] = Field(default_factory=list)


class UsageView(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens over every model call of the job.")
    completion_tokens: int
    total_tokens: int
    calls: int = Field(description="Model calls made.")
    format_recoveries: int = Field(
        default=0,
        description=(
            "Model outputs the parser had to repair before it could use them (a missing `<answer>` "
            "tag, text invented after a tool call, `queries` for `query`, …); each round's are "
            "listed in its `usage` event."
        ),
    )
    format_errors: int = Field(default=0, description="Model outputs that could not be used at all.")

    @classmethod
    def of(cls, usage: Usage) -> UsageView:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            calls=usage.calls,
            format_recoveries=usage.format_recoveries,
            format_errors=usage.format_errors,
        )


class AgentView(BaseModel):
    """One research agent's progress (live while the job runs, final afterwards)."""

    agent: int = Field(description="Agent index, from 0.")
    status: AgentStatus
    rounds: int = Field(description="Rounds completed.")
    answer: str | None = Field(default=None, description="The agent's own answer, once it has one.")
    stop_reason: str | None = None
    error: str | None = None
    report_chars: int = Field(description="Length of the agent's current report.")
    usage: UsageView


class SourceView(BaseModel):
    id: int = Field(description="The number the answer and report cite, as [1], [2], …")
    url: str
    title: str = ""


class ResultView(BaseModel):
    answer: str
    report: str = Field(description="The synthesised report, citing `sources` by number.")
    sources: list[SourceView]
    citations_removed: int = Field(description="Citations to sources the job never retrieved, removed.")
    synthesis: str = Field(
        description=(
            "How the answer was made: `model` (the synthesis agent), `single` (only one agent "
            "finished) or `majority` (the synthesis model failed; the most common answer won)."
        ),
        examples=["model"],
    )
    agents_used: list[int] = Field(description="Agents whose reports the synthesis read.")
    agents_failed: list[int] = Field(description="Agents left out because they failed.")
    agent_reports: dict[int, str] = Field(description="Each used agent's final report.")
    cut_short: list[str] = Field(description="Budgets or limits that forced agents to answer early.")
    simulated: bool = Field(description="True when the SIMULATED model produced this result, not an LLM.")
    budget: BudgetReport | None = Field(
        default=None,
        description=(
            "How `max_tokens` and `max_seconds` were shared out when the job started: the tokens "
            "reserved for forced answers and the synthesis, and each phase's seconds."
        ),
    )
    removed_citations: list[RemovedCitation] = Field(
        default_factory=list,
        description=(
            "Each citation of a source the job never retrieved, and where it was removed from "
            "(`answer`, `report`, `agent_reports.N`, `agents.N.answer`)."
        ),
    )


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = Field(
        default=None, description="From start to finish (or to now, while running)."
    )


class JobLinks(BaseModel):
    self: str = Field(examples=[f"/v1/research/{EXAMPLE_JOB_ID}"])
    events: str = Field(examples=[f"/v1/research/{EXAMPLE_JOB_ID}/events"])
    cancel: str = Field(examples=[f"/v1/research/{EXAMPLE_JOB_ID}/cancel"])

    @classmethod
    def of(cls, job_id: str) -> JobLinks:
        base = f"/v1/research/{job_id}"
        return cls(self=base, events=f"{base}/events", cancel=f"{base}/cancel")


class WebhookView(BaseModel):
    """What came of calling the job's `webhook_url`."""

    state: WebhookState = Field(
        description="`delivered` (the receiver answered 2xx) or `failed` (given up).", examples=["delivered"]
    )
    delivery_id: str = Field(description="The `X-Heavyresearch-Delivery` header every attempt carried.")
    attempts: int = Field(description="Calls made.", examples=[1])
    last_status: int | None = Field(
        default=None,
        description="HTTP status of the last answer; null when none came (refused, unreachable, timed out).",
        examples=[200],
    )
    last_error: str | None = Field(default=None, description="Why the last attempt failed, when it did.")
    delivered_at: datetime | None = None


class JobView(BaseModel):
    """A research job: what it was asked, where it is, and its result once it has one."""

    id: str = Field(examples=[EXAMPLE_JOB_ID])
    status: JobStatus
    simulated: bool = Field(description="True when the job runs on the SIMULATED model, not an LLM.")
    cancel_requested: bool
    request: ResearchParams
    agents: list[AgentView] = Field(description="One entry per agent.")
    result: ResultView | None = None
    usage: UsageView
    timings: Timings
    error: str | None = Field(default=None, description="Why the job failed, when it did.")
    webhook: WebhookView | None = Field(
        default=None,
        description=(
            "The outcome of calling `request.webhook_url`; null without one, or until the call "
            "(made just after the job ends, retries included) is over."
        ),
    )
    links: JobLinks


class JobSummary(BaseModel):
    """A job in a listing: enough to pick one; fetch `links.self` for the rest."""

    id: str
    status: JobStatus
    query: str
    simulated: bool
    timings: Timings
    links: JobLinks


class JobList(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class HealthView(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    backend: str
    backend_location: str | None = Field(
        default=None,
        description="Where jobs are kept: the sqlite file, or the Redis URL without credentials; "
        "null on the memory backend (nothing survives a restart).",
    )
    simulated: bool
    message: str | None = Field(
        default=None, description="A warning to show users, e.g. the simulation notice."
    )
    corpus_documents: int | None = Field(
        default=None,
        description="Documents in the local corpus; null in an API-only process (Redis backend).",
    )


class ReadinessCheck(BaseModel):
    ok: bool
    detail: str | None = None


class ReadinessView(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, ReadinessCheck]


class FieldError(BaseModel):
    path: str = Field(
        description="Where the problem is, dotted: `body.query`, `query.limit`, `header.idempotency-key`."
    )
    loc: list[str | int]
    message: str
    type: str


class ErrorDetail(BaseModel):
    type: str = Field(
        description=(
            "Machine-readable kind: validation_error, bad_request, unauthorized, not_found, "
            "method_not_allowed, conflict, payload_too_large, queue_full, unavailable, "
            "shutting_down, http_error, internal_error, quota_exceeded, forbidden."
        ),
        examples=["not_found"],
    )
    message: str
    errors: list[FieldError] | None = Field(default=None, description="Each invalid field (422 only).")
    retry_after: int | None = Field(default=None, description="Seconds to wait before retrying (429, 503).")
    quota: str | None = Field(
        default=None, description="The tenant quota that refused the request (429 quota_exceeded only)."
    )


class ErrorResponse(BaseModel):
    """Every error has this shape."""

    error: ErrorDetail


# -- engine → view ------------------------------------------------------------------------------


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def timings(record: JobRecord, now: float) -> Timings:
    duration = None
    if record.started_at is not None:
        duration = round((record.finished_at or now) - record.started_at, 3)
    return Timings(
        created_at=datetime.fromtimestamp(record.created_at, tz=UTC),
        started_at=_when(record.started_at),
        finished_at=_when(record.finished_at),
        duration_seconds=duration,
    )


def webhook_view(status: WebhookStatus | None) -> WebhookView | None:
    if status is None:
        return None
    return WebhookView(
        state=status.state,
        delivery_id=status.delivery_id,
        attempts=status.attempts,
        last_status=status.last_status,
        last_error=status.last_error,
        delivered_at=_when(status.delivered_at),
    )


def params(record: JobRecord) -> ResearchParams:
    shown = ResearchParams.model_validate(record.request.model_dump())
    if shown.webhook_url is not None:
        shown.webhook_url = redact_url(shown.webhook_url)
    return shown


# Query parameters whose values are secrets however they are spelled (token, api_key, sig, …).
_SECRET_PARAM = re.compile(r"(token|key|secret|sig|signature|auth|password|pass|pwd|code|credential)", re.I)


def redact_url(url: str) -> str:
    """The url without secrets, for showing: credentials and secret-looking query values become
    `REDACTED`. The job view shows this to everyone, its owner included: the url was a secret
    only the receiver and this server need."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{name}=REDACTED" if _SECRET_PARAM.search(name) else (f"{name}={value}" if sep else name)
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# -- uploaded files -----------------------------------------------------------------------------


class FileView(BaseModel):
    """An uploaded file (`POST /v1/files`). Name it in a job's `files` to let the agents read it."""

    id: str = Field(examples=["file_019a3f2b7c1d9e4a6b8f0c2d3e"])
    name: str = Field(description="The uploaded file name, as the model sees it.", examples=["report.pdf"])
    kind: str = Field(description="pdf, docx, xlsx, csv, pptx, html, md, txt or json.", examples=["pdf"])
    content_type: str = Field(examples=["application/pdf"])
    bytes: int
    sha256: str
    created_at: datetime
    expires_at: datetime = Field(description="When the file is deleted (server setting `files.ttl_seconds`).")
