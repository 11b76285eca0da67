"""Runs one job from its record to its terminal event: agents, synthesis, result, status.

A job can be picked up again by another worker at any point (crash, drain): the record, the
agents' checkpoints and the keyed event log make a second run continue the first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum

import anyio

from workers import tracing
from workers.agent.context import JobContext
from workers.agent.outage import OutageClock
from workers.agent.prompts import PromptSet
from workers.agent.tokens import EstimateCounter, TokenCounter
from workers.backend.base import Backend
from workers.budget import TokenBudget, budget_report, plan_time
from workers.cancel_watch import CancelWatch
from workers.errors import BackendUnavailable, JobFailed, LLMConfigError, SourceConflict
from workers.events import EventType, NewEvent
from workers.heavy import agent_specs, run_agents
from workers.jobs import TERMINAL_KEY
from workers.llm.types import ChatModel
from workers.logs import job_context
from workers.metrics import engine_metrics
from workers.models import AgentCheckpoint, AgentStatus, AgentSummary, JobRecord, JobStatus, Usage
from workers.settings import BudgetSettings
from workers.synthesis import synthesize
from workers.tenancy import count_job_tokens
from workers.tools.base import Tool
from workers.tools.parse_file import files_of, question_with_uploads
from workers.tools.sources import JobSources
from workers.webhooks import WebhookSender

log = logging.getLogger(__name__)

# How often a running job looks for a cancel request; bounds how long a cancel takes to land.
CANCEL_POLL_SECONDS = 0.2


class Outcome(StrEnum):
    finished = "finished"  # terminal status reached (or already there)
    missing = "missing"  # the job was deleted


@dataclass
class EngineParts:
    backend: Backend
    model: ChatModel
    tools: dict[str, Tool]
    prompts: PromptSet
    simulated: bool
    agent_concurrency: int = 16
    observation_max_chars: int = 6000
    grace_seconds: float = 20.0
    webhooks: WebhookSender | None = None  # None: requests' webhook_url is never called
    outage_budget: float = 600.0  # seconds of model outage a job rides out
    outage_pause: float = 10.0  # seconds an agent waits before calling a down endpoint again
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    # ReAct mode's transcript budget and token counter (`agent.react_context_tokens`, `…_tokenizer`).
    react_context_tokens: int = 110_000
    token_counter: TokenCounter = field(default_factory=EstimateCounter)
    # Runs a job gets before it is failed as poisoned (`worker.max_attempts`).
    max_attempts: int = 3


def summarise(checkpoints: list[AgentCheckpoint]) -> list[AgentSummary]:
    return [
        AgentSummary(
            agent=cp.agent,
            status=cp.status,
            rounds=cp.round,
            answer=cp.answer,
            stop_reason=cp.stop_reason,
            error=cp.error,
            report_chars=len(cp.report),
            usage=cp.usage,
        )
        for cp in checkpoints
    ]


class JobRunner:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts
        self.cancels = CancelWatch(parts.backend, CANCEL_POLL_SECONDS)

    async def run(self, job_id: str) -> Outcome:
        with (
            job_context(job_id),
            tracing.span("job", {tracing.JOB_ID: job_id}, parent=await self._trace(job_id)),
        ):
            try:
                outcome = await self._run(job_id)
            except BackendUnavailable:
                raise
            except Exception as exc:
                conflict = _leaf(exc)
                if isinstance(conflict, SourceConflict):
                    # Another process runs the job: nothing more is written here, not even why.
                    raise conflict from exc
                await self._note_crash(job_id, exc)
                raise
            if outcome is Outcome.finished:
                await self._notify(job_id)
            return outcome

    async def _trace(self, job_id: str) -> dict[str, str] | None:
        """The trace the job's request began (an empty one when it has none), to continue."""
        if not tracing.active():
            return None
        record = await self.parts.backend.get_job(job_id)
        return (record.trace_context if record is not None else None) or {}

    async def _note_crash(self, job_id: str, exc: Exception) -> None:
        """Keep what crashed this run: if the runs keep crashing, the job fails with it."""
        with anyio.CancelScope(shield=True):
            try:
                record = await self.parts.backend.get_job(job_id)
                if record is not None and not record.status.terminal:
                    record.last_error = _describe(exc)
                    await self.parts.backend.save_job(record)
            except BackendUnavailable as noted:
                log.warning("could not keep the crash's error: %s", noted, extra={"job_id": job_id})

    async def _poisoned(self, record: JobRecord) -> None:
        last = record.last_error or "its worker stopped before it finished (killed, crashed or lease lapsed)"
        error = (
            f"gave up after {record.attempts} attempt(s), the most the service allows "
            f"(worker.max_attempts); the last one ended with: {last}"
        )
        record.error = error
        data: dict[str, object] = {"error": error, "outcome": "poisoned", "attempts": record.attempts}
        await self._end(record, JobStatus.failed, EventType.job_failed, data)
        engine_metrics().jobs_poisoned.inc()
        log.error("job failed as poisoned: %s", error, extra={"job_id": record.id})

    async def _run(self, job_id: str) -> Outcome:
        backend = self.parts.backend
        record = await backend.get_job(job_id)
        if record is None:
            return Outcome.missing
        if record.status.terminal:
            return Outcome.finished
        jlog = logging.LoggerAdapter(log, {"job_id": job_id})
        if await backend.is_cancelled(job_id):
            await self._end(record, JobStatus.cancelled, EventType.job_cancelled, {"reason": "cancelled"})
            return Outcome.finished
        if record.attempts >= self.parts.max_attempts:
            await self._poisoned(record)
            return Outcome.finished
        # Counted in the record before the run starts, so a run killed at any point is counted.
        record.attempts += 1
        record.last_error = None  # this run's own, from here on
        engine_metrics().job_attempts.inc()
        if record.started_at is None:
            record.started_at = time.time()
        record.status = JobStatus.running
        await backend.save_job(record)
        started: dict[str, object] = {"agents": record.request.agents, "mode": record.request.mode}
        request = record.request
        plan = budget_report(
            request.agents,
            request.max_tokens,
            plan_time(request.max_seconds, record.started_at, self.parts.budget)
            if request.max_seconds is not None
            else None,
            self.parts.budget,
        )
        if plan is not None:
            started["budget"] = plan.model_dump(exclude_none=True)  # the plan, visible from the start
        await backend.append_event(
            job_id, NewEvent(type=EventType.job_started, data=started, key="job.started")
        )
        jlog.info(
            "job running (%s mode, %d agents, max %d rounds)",
            record.request.mode,
            record.request.agents,
            record.request.max_rounds,
        )

        cancelled = False
        async with anyio.create_task_group() as tg:

            async def watch_cancel() -> None:
                nonlocal cancelled
                await self.cancels.until_cancelled(job_id)
                cancelled = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch_cancel)
            try:
                await self._research(record)
            finally:
                tg.cancel_scope.cancel()
        if cancelled:
            fresh = await backend.get_job(job_id)
            if fresh is None:
                return Outcome.missing
            if fresh.status.terminal:
                # The job ended just as the cancel arrived: its own end stands.
                return Outcome.finished
            finals = list((await backend.load_checkpoints(job_id)).values())
            fresh.agents = [_cancelled(summary) for summary in summarise(finals)]
            # What the agents spent up to their last saved round is spent, cancelled or not.
            fresh.usage = sum((cp.usage for cp in finals), Usage())
            await self._end(fresh, JobStatus.cancelled, EventType.job_cancelled, {"reason": "cancelled"})
            jlog.info("job cancelled")
        return Outcome.finished

    async def _notify(self, job_id: str) -> None:
        """Call the ended job's webhook, unless an earlier run got it to an outcome. It runs
        after the terminal status and event are stored, so the job never waits for it; a
        worker that dies before the outcome is saved leaves the call to the next one."""
        webhooks = self.parts.webhooks
        record = await self.parts.backend.get_job(job_id)
        if webhooks is None or record is None or not record.webhook_due:
            return
        record.webhook = await webhooks.deliver(record)
        engine_metrics().webhooks.labels(record.webhook.state.value).inc()
        # A drain landing now must not cost a delivered call its record (and a second call).
        with anyio.CancelScope(shield=True):
            await self.parts.backend.save_job(record)

    def _context(
        self,
        record: JobRecord,
        checkpoints: dict[int, AgentCheckpoint],
        uploads: list[str],
        sources: JobSources,
    ) -> JobContext:
        request = record.request
        time_plan = None
        if request.max_seconds is not None:
            time_plan = plan_time(request.max_seconds, record.started_at or time.time(), self.parts.budget)
        used = sum(cp.usage.total_tokens for cp in checkpoints.values())
        done = {AgentStatus.finished, AgentStatus.failed}
        unfinished = {
            i for i in range(request.agents) if i not in checkpoints or checkpoints[i].status not in done
        }
        budget = TokenBudget.plan(
            request.max_tokens, used, unfinished, synthesis=request.agents > 1, cfg=self.parts.budget
        )
        return JobContext(
            job_id=record.id,
            question=question_with_uploads(request.query, uploads),
            backend=self.parts.backend,
            model=self.parts.model,
            tools=self._tools(request.tools, has_files=bool(uploads)),
            prompts=self.parts.prompts,
            max_rounds=request.max_rounds,
            deadline=time_plan.research_deadline if time_plan else None,
            budget=budget,
            observation_max_chars=self.parts.observation_max_chars,
            grace_seconds=self.parts.grace_seconds,
            outage=OutageClock(budget=self.parts.outage_budget, pause=self.parts.outage_pause),
            time_plan=time_plan,
            context_tokens=self.parts.react_context_tokens,
            token_counter=self.parts.token_counter,
            sources=sources,
        )

    def _tools(self, wanted: list[str] | None, *, has_files: bool = False) -> dict[str, Tool]:
        # parse_file reads only the job's own uploads: a job without any is not offered it.
        return {
            name: tool
            for name, tool in self.parts.tools.items()
            if (wanted is None or name in wanted) and (name != "parse_file" or has_files)
        }

    async def _research(self, record: JobRecord) -> None:
        backend = self.parts.backend
        checkpoints = await backend.load_checkpoints(record.id)
        uploads = [f.name for f in await files_of(backend, record.request.files)]
        ctx = self._context(record, checkpoints, uploads, await JobSources.load(backend, record.id))
        specs = agent_specs(record.request.agents, record.request.angles)
        try:
            finals = await run_agents(
                ctx, specs, checkpoints, concurrency=self.parts.agent_concurrency, mode=record.request.mode
            )
            record.agents = summarise(finals)
            record.usage = sum((cp.usage for cp in finals), Usage())
            if not any(cp.status == AgentStatus.finished for cp in finals):
                raise JobFailed(_all_failed(finals), outcome=_no_answer_outcome(finals))
            record.status = JobStatus.synthesizing
            await backend.save_job(record)
            result, synthesis_usage = await tracing.traced("synthesis", synthesize(ctx, finals))
            # The synthesis cleaned the agents' answers of fabricated citations: show them so.
            record.agents = summarise(finals)
        except (JobFailed, LLMConfigError) as exc:
            record.error = str(exc)
            data: dict[str, object] = {"error": str(exc)}
            if isinstance(exc, JobFailed) and exc.outcome is not None:
                data["outcome"] = exc.outcome
            await self._end(record, JobStatus.failed, EventType.job_failed, data)
            log.warning("job failed: %s", exc, extra={"job_id": record.id})
            return
        result.simulated = self.parts.simulated
        result.budget = budget_report(
            record.request.agents, record.request.max_tokens, ctx.time_plan, self.parts.budget
        )
        record.result = result
        record.usage = record.usage.add(synthesis_usage)
        await self._end(
            record,
            JobStatus.succeeded,
            EventType.job_succeeded,
            {
                "answer": result.answer,
                "sources": len(result.sources),
                "synthesis": result.synthesis,
                "agents_failed": result.agents_failed,
                "cut_short": result.cut_short,
                "simulated": result.simulated,
            },
        )
        log.info("job succeeded (%s synthesis)", result.synthesis, extra={"job_id": record.id})

    async def _end(
        self, record: JobRecord, status: JobStatus, event: EventType, data: dict[str, object]
    ) -> None:
        record.status = status
        record.finished_at = time.time()
        tracing.annotate(
            {"heavyresearch.job.status": status.value, "heavyresearch.job.attempts": record.attempts}
        )
        engine_metrics().jobs_ended.labels(status.value).inc()
        # Saved before the event: a client that sees the terminal event can fetch the result.
        with anyio.CancelScope(shield=True):
            await self.parts.backend.save_job(record)
            await self.parts.backend.append_event(
                record.id, NewEvent(type=event, data=data, key=TERMINAL_KEY)
            )
            await count_job_tokens(self.parts.backend, record)


def _leaf(exc: BaseException) -> BaseException:
    # A crash inside the agents' task group arrives wrapped; the leaf is what went wrong.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _leaf(exc)
    return f"{type(leaf).__name__}: {leaf}"


def _cancelled(summary: AgentSummary) -> AgentSummary:
    """An agent the cancel stopped mid-research ends `cancelled`; one that had ended keeps its end."""
    if summary.status in (AgentStatus.pending, AgentStatus.running):
        return summary.model_copy(update={"status": AgentStatus.cancelled})
    return summary


def _all_failed(finals: list[AgentCheckpoint]) -> str:
    if any(cp.status == AgentStatus.no_answer for cp in finals):
        # A job no agent could answer fails, so a non-answer never passes for a result.
        return "no research agent found an answer: " + "; ".join(
            f"agent {cp.agent}: {cp.error or cp.stop_reason or cp.status.value}" for cp in finals
        )
    return "every research agent failed: " + "; ".join(f"agent {cp.agent}: {cp.error}" for cp in finals)


def _no_answer_outcome(finals: list[AgentCheckpoint]) -> str | None:
    return "no_answer" if any(cp.status == AgentStatus.no_answer for cp in finals) else None
