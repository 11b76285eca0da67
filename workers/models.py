"""The engine's data model: what a job asks for, what it keeps, what it returns.

These types are the contract between the engine, the backends and the HTTP edge.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    synthesizing = "synthesizing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    # Outputs the parser had to repair to use (`ParsedOutput.recoveries`), and outputs it could
    # not use at all (fed back to the model as format errors).
    format_recoveries: int = 0
    format_errors: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        # Sums of validated ints need no validation: this runs several times a round.
        return Usage.model_construct(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            format_recoveries=self.format_recoveries + other.format_recoveries,
            format_errors=self.format_errors + other.format_errors,
        )

    __add__ = add


# "heavy": IterResearch agents (bounded workspaces) + synthesis; "react": the released ReAct loop
# (one growing transcript per agent), n rollouts + synthesis when agents > 1.
Mode = Literal["heavy", "react"]


class ResearchRequest(BaseModel):
    """What the engine needs to run one Heavy job (validated at the edge before it gets here)."""

    query: str
    agents: int = 4
    max_rounds: int = 32
    model: str | None = None
    tools: list[str] | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    angles: list[str] | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    mode: Mode = "heavy"
    # Ids of uploaded files (`POST /v1/files`) the job may read with parse_file.
    files: list[str] = Field(default_factory=list)


class ToolCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class AgentStatus(StrEnum):
    pending = "pending"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"
    # Ended without a real answer (none even when forced, empty, a placeholder, prompt text).
    no_answer = "no_answer"

    @property
    def ended(self) -> bool:
        return self in (AgentStatus.finished, AgentStatus.failed, AgentStatus.no_answer)


class AgentCheckpoint(BaseModel):
    """An IterResearch agent's whole state between rounds: enough to resume on any worker."""

    agent: int
    round: int = 0
    report: str = ""
    # The tool call as the model wrote it: the next workspace shows it verbatim.
    last_action: str = ""
    last_observation: str = ""
    usage: Usage = Field(default_factory=Usage)
    status: AgentStatus = AgentStatus.pending
    answer: str | None = None
    stop_reason: str | None = None
    error: str | None = None
    elapsed: float = 0.0
    # ReAct mode only: the whole transcript (system prompt, question, assistant turns, tool
    # responses), which is that agent's entire state; empty for IterResearch agents.
    transcript: list[dict[str, str]] = Field(default_factory=list)


class Source(BaseModel):
    """A retrieved document in the job's source registry (`id` is `S<n>`)."""

    id: str
    url: str
    title: str = ""


class ResultSource(BaseModel):
    """A source cited by the final answer, renumbered from 1."""

    id: int
    url: str
    title: str = ""
    registry_id: str = ""


class AgentSummary(BaseModel):
    agent: int
    status: AgentStatus
    rounds: int
    answer: str | None = None
    stop_reason: str | None = None
    error: str | None = None
    report_chars: int = 0
    usage: Usage = Field(default_factory=Usage)


class BudgetReport(BaseModel):
    """How a job's budgets were shared out when it started (`workers.budget`)."""

    max_tokens: int | None = None
    reserved_forced_tokens: int = 0  # over all agents
    reserved_synthesis_tokens: int = 0
    research_tokens: int | None = None  # what research rounds could spend
    max_seconds: float | None = None
    research_seconds: float | None = None
    forced_seconds: float | None = None
    synthesis_seconds: float | None = None
    finish_allowance_seconds: float | None = None


class RemovedCitation(BaseModel):
    """A citation of a source the job never retrieved, taken out of the result."""

    where: str  # "answer", "report", "agent_reports.2", "agents.2.answer"
    citation: str  # as written: "[S9]", "[7]", "[S3-S5]", "[text](url)", "https://…"
    removed: list[str] = Field(default_factory=list)  # the unknown ids or urls in it


class JobResult(BaseModel):
    answer: str
    report: str
    sources: list[ResultSource] = Field(default_factory=list)
    citations_removed: int = 0
    synthesis: str = "model"  # "model" | "majority" (synthesis failed) | "single"
    agents_used: list[int] = Field(default_factory=list)
    agents_failed: list[int] = Field(default_factory=list)
    agent_reports: dict[int, str] = Field(default_factory=dict)
    cut_short: list[str] = Field(default_factory=list)
    simulated: bool = False
    budget: BudgetReport | None = None
    removed_citations: list[RemovedCitation] = Field(default_factory=list)


class WebhookState(StrEnum):
    delivered = "delivered"  # the receiver answered 2xx
    failed = "failed"  # refused by the address guard, a non-retryable answer, or attempts spent


class WebhookStatus(BaseModel):
    """The outcome of calling a job's `webhook_url` after the job ended."""

    state: WebhookState
    delivery_id: str  # the X-Heavyresearch-Delivery header every attempt carried
    attempts: int
    last_status: int | None = None  # HTTP status of the last answer; None when none came
    last_error: str | None = None
    delivered_at: float | None = None


class JobRecord(BaseModel):
    id: str
    status: JobStatus = JobStatus.queued
    request: ResearchRequest
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    agents: list[AgentSummary] = Field(default_factory=list)
    result: JobResult | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    simulated: bool = False
    cancel_requested: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: WebhookStatus | None = None
    # Runs begun (every claim by a worker is one, reclaims after a crash included), and the
    # error that stopped the last unfinished one; a job is failed at `worker.max_attempts`.
    attempts: int = 0
    last_error: str | None = None

    # The tenant that submitted the job (None on a server without API keys). Every other
    # tenant is told the job does not exist.
    owner: str | None = None
    # W3C trace context (traceparent, tracestate) of the request that submitted the job: the
    # worker's job span continues that trace (`workers/tracing.py`). None with tracing off.
    trace_context: dict[str, str] | None = None

    @property
    def webhook_due(self) -> bool:
        """The job has ended and its webhook has not been called to an outcome yet: whoever
        runs the job next (another worker, after a crash) still owes the call."""
        return self.status.terminal and self.request.webhook_url is not None and self.webhook is None


class FileRecord(BaseModel):
    """An uploaded file's metadata; its bytes are stored beside it in the backend."""

    id: str
    name: str  # the client's file name, as the model sees it in the question
    kind: str  # "pdf" | "docx" | "xlsx" | "csv" | "pptx" | "html" | "md" | "txt" | "json"
    content_type: str
    size: int
    sha256: str
    created_at: float = Field(default_factory=time.time)
    expires_at: float
    # The tenant that uploaded it; None while the service has no tenants. Only the routes'
    # ownership check (`app/routes/files.py`) reads it.
    owner: str | None = None
