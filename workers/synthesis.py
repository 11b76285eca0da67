"""Research-Synthesis: merge the agents' final reports into one answer and report.

The synthesis model reads only the final reports and answers, never the trajectories. When
it fails, the job still answers: the majority answer, with every agent report kept.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import anyio

from workers.agent.context import JobContext
from workers.agent.parser import parse_output
from workers.errors import JobFailed, LLMConfigError, RetryableError
from workers.events import EventType, NewEvent
from workers.llm.types import ChatMessage
from workers.models import AgentCheckpoint, AgentStatus, JobResult, RemovedCitation, ResultSource, Usage
from workers.tools.citation_guard import SourceGuard
from workers.tools.citations import cited_ids, renumber_citations

log = logging.getLogger(__name__)

# Deltas are batched to about this many characters per event: one event per token would
# flood the log and every SSE client for no visible gain.
DELTA_CHARS = 48


def normalise_answer(answer: str) -> str:
    return re.sub(r"[^\w]+", " ", answer.lower()).strip()


def majority(finished: list[AgentCheckpoint]) -> AgentCheckpoint:
    """The best-supported agent: most common answer, ties broken by the number of citations."""
    votes = Counter(normalise_answer(cp.answer or "") for cp in finished)
    return max(
        finished,
        key=lambda cp: (votes[normalise_answer(cp.answer or "")], len(set(cited_ids(cp.report))), -cp.agent),
    )


class _DeltaSink:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.buffer = ""
        self.count = 0

    async def __call__(self, delta: str) -> None:
        self.buffer += delta
        if len(self.buffer) >= DELTA_CHARS:
            await self.flush()

    async def reset(self) -> None:
        """The model call starts over: what was streamed is void, and clients are told so."""
        self.buffer = ""
        self.count += 1
        await self.ctx.emit(
            NewEvent(
                type=EventType.synthesis_delta,
                data={"text": "", "reset": True},
                key=f"synthesis.delta.{self.count}",
            )
        )

    async def flush(self) -> None:
        if not self.buffer:
            return
        self.count += 1
        text, self.buffer = self.buffer, ""
        await self.ctx.emit(
            NewEvent(type=EventType.synthesis_delta, data={"text": text}, key=f"synthesis.delta.{self.count}")
        )


def synthesis_messages(ctx: JobContext, finished: list[AgentCheckpoint]) -> list[ChatMessage]:
    prompts = ctx.prompts
    blocks = "\n".join(
        prompts.synthesis_agent.safe_substitute(agent=cp.agent, answer=cp.answer or "", report=cp.report)
        for cp in finished
    )
    return [
        {"role": "system", "content": prompts.synthesis_system.safe_substitute(date=ctx.date)},
        {
            "role": "user",
            "content": prompts.synthesis_user.safe_substitute(question=ctx.question, reports=blocks),
        },
    ]


async def synthesize(ctx: JobContext, checkpoints: list[AgentCheckpoint]) -> tuple[JobResult, Usage]:
    """The result, and the synthesis call's own token usage."""
    finished = [cp for cp in checkpoints if cp.status == AgentStatus.finished and cp.answer]
    failed = [cp.agent for cp in checkpoints if cp.agent not in {f.agent for f in finished}]
    if not finished:
        errors = "; ".join(f"agent {cp.agent}: {cp.error or cp.status.value}" for cp in checkpoints)
        raise JobFailed(f"every research agent failed ({errors})")
    # Fabricated citations go before anything reads the agents' work, the synthesis model too.
    guard = SourceGuard((await ctx.backend.get_sources(ctx.job_id)).values())
    raw = {cp.agent: (cp.answer or "", cp.report) for cp in finished}
    removed = guard.clean_agents(finished)
    await ctx.emit(
        NewEvent(
            type=EventType.synthesis_started,
            data={"agents": [cp.agent for cp in finished], "agents_failed": failed},
            key="synthesis.started",
        )
    )
    mode = "model"
    answer = report = ""
    usage = Usage()
    if len(finished) == 1:
        mode, (answer, report) = "single", raw[finished[0].agent]
    else:
        sink = _DeltaSink(ctx)
        messages = synthesis_messages(ctx, finished)
        # Its own share of the time and tokens, planned when the job started (workers.budget).
        timeout = ctx.synthesis_timeout()
        hold = ctx.budget.hold("synthesis", messages)
        if hold is None or (timeout is not None and timeout <= 0):
            ctx.budget.settle(hold, None)
            log.warning(
                "no budget left for the synthesis model; using the majority answer",
                extra={"job_id": ctx.job_id},
            )
        else:
            result = None
            abandoned = False
            try:
                with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                    result = await ctx.model.chat(
                        "synthesis", messages, max_tokens=hold.max_tokens, on_delta=sink, on_reset=sink.reset
                    )
                abandoned = scope.cancelled_caught
            except (RetryableError, LLMConfigError) as exc:
                log.warning(
                    "synthesis model failed, using the majority answer: %s", exc, extra={"job_id": ctx.job_id}
                )
            finally:
                if abandoned:
                    ctx.budget.abandon(hold)
                else:
                    ctx.budget.settle(hold, result.usage if result is not None else None)
            if result is not None:
                await sink.flush()
                parsed = parse_output(result.content, result.reasoning, ())
                data: dict[str, object] = {
                    "prompt_tokens": result.usage.prompt_tokens,
                    "completion_tokens": result.usage.completion_tokens,
                    "role": "synthesis",
                }
                if parsed.recoveries:
                    data["format_recoveries"] = list(parsed.recoveries)
                await ctx.emit(NewEvent(type=EventType.usage, data=data, key="synthesis.usage"))
                usage = result.usage.model_copy(
                    update={
                        "format_recoveries": len(parsed.recoveries),
                        "format_errors": 1 if parsed.error else 0,
                    }
                )
                answer, report = (parsed.answer or "").strip(), (parsed.report or "").strip()
        if not answer:
            best = majority(finished)
            mode, (answer, report) = "majority", raw[best.agent]
    report, in_report = guard.check(report, "report")
    answer, in_answer = guard.check(answer, "answer")
    removed = in_answer + in_report + removed
    return await _with_sources(ctx, answer, report, mode, finished, failed, removed), usage


async def _with_sources(
    ctx: JobContext,
    answer: str,
    report: str,
    mode: str,
    finished: list[AgentCheckpoint],
    failed: list[int],
    removed: list[RemovedCitation],
) -> JobResult:
    registry = await ctx.backend.get_sources(ctx.job_id)
    order = {sid: n for n, sid in enumerate(dict.fromkeys(cited_ids(report) + cited_ids(answer)), start=1)}
    sources = [
        ResultSource(id=n, url=registry[sid].url, title=registry[sid].title, registry_id=sid)
        for sid, n in order.items()
    ]
    cut_short = sorted(
        {cp.stop_reason for cp in finished if cp.stop_reason and cp.stop_reason.startswith("forced")}
    )
    return JobResult(
        answer=renumber_citations(answer, order),
        report=renumber_citations(report, order),
        sources=sources,
        citations_removed=sum(len(r.removed) for r in removed),
        removed_citations=removed,
        synthesis=mode,
        agents_used=[cp.agent for cp in finished],
        agents_failed=failed,
        agent_reports={cp.agent: cp.report for cp in finished},
        cut_short=cut_short,
    )
