"""One IterResearch agent: rounds of build workspace → call model → parse → act → checkpoint.

The agent's whole state between rounds is its `AgentCheckpoint`, saved after every round, so
an agent resumes on any worker from where it stopped. Every event it emits carries a key
derived from (agent, round, kind): a resumed agent that replays a round cannot duplicate one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio

from workers.agent.context import JobContext
from workers.agent.parser import ParsedOutput, parse_output
from workers.budget import Hold
from workers.errors import RetryableError, ToolError
from workers.events import EventType, NewEvent
from workers.llm.types import ChatMessage, ChatResult
from workers.logs import job_context
from workers.models import AgentCheckpoint, AgentStatus, ToolCall, Usage
from workers.tools.base import ToolContext
from workers.tools.render import trim_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSpec:
    index: int
    seed: int
    temperature: float
    angle: str | None = None


# -- the typed outcome of one round ------------------------------------------------------------
@dataclass(frozen=True)
class CallTool:
    call: ToolCall
    text: str


@dataclass(frozen=True)
class Answer:
    answer: str


@dataclass(frozen=True)
class Feedback:
    """The output was unusable; `message` is the next observation."""

    message: str


NextStep = CallTool | Answer | Feedback


def decide(parsed: ParsedOutput) -> NextStep:
    if parsed.error is not None:
        return Feedback(f"Format error: {parsed.error}")
    if parsed.answer is not None:
        return Answer(parsed.answer.strip())
    if parsed.tool_call is not None:
        return CallTool(parsed.tool_call, parsed.tool_call_text)
    return Feedback("Format error: end the reply with exactly one <tool_call> or <answer>.")


class IterResearchAgent:
    def __init__(self, ctx: JobContext, spec: AgentSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self._log = logging.LoggerAdapter(log, {"job_id": ctx.job_id, "agent": spec.index})

    # -- events ---------------------------------------------------------------------------------
    async def _emit(
        self, type_: EventType, round_: int | None, data: dict[str, object], tag: str = ""
    ) -> None:
        key = f"a{self.spec.index}.r{round_}.{type_.value}{tag}"
        await self.ctx.emit(NewEvent(type=type_, agent=self.spec.index, round=round_, data=data, key=key))

    async def _checkpoint(self, cp: AgentCheckpoint) -> None:
        await self.ctx.backend.save_checkpoint(self.ctx.job_id, cp)

    # -- workspace ------------------------------------------------------------------------------
    def _question(self) -> str:
        if self.spec.angle:
            return f"{self.ctx.question}\n\nYour research angle: {self.spec.angle}"
        return self.ctx.question

    def workspace(self, cp: AgentCheckpoint) -> list[ChatMessage]:
        """The whole prompt of the next round; its size does not depend on the round number."""
        prompts = self.ctx.prompts
        system = prompts.research_system.safe_substitute(date=self.ctx.date, tools=self.ctx.tool_list())
        user = prompts.research_round.safe_substitute(
            question=self._question(),
            report=cp.report or "(empty: this is the first round)",
            last_action=cp.last_action or "(none yet)",
            last_observation=cp.last_observation or "(none yet)",
            round=cp.round + 1,
            max_rounds=self.ctx.max_rounds,
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def final_workspace(self, cp: AgentCheckpoint, reason: str) -> list[ChatMessage]:
        prompts = self.ctx.prompts
        system = prompts.research_system.safe_substitute(date=self.ctx.date, tools="(none: answer now)")
        user = prompts.research_final.safe_substitute(
            question=self._question(), report=cp.report or "(empty)", reason=reason
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    # -- the loop -------------------------------------------------------------------------------
    def _limit_reason(self, cp: AgentCheckpoint) -> str | None:
        if cp.round >= self.ctx.max_rounds:
            return f"The round limit ({self.ctx.max_rounds}) is reached."
        if self.ctx.budget.exhausted:
            return "The token budget is spent."
        left = self.ctx.seconds_left()
        if left is not None and left <= 0:
            return "The time budget is spent."
        return None

    async def run(self, cp: AgentCheckpoint) -> AgentCheckpoint:
        """Run (or resume) until an answer, a limit, or a failure. Cancellation propagates."""
        with job_context(self.ctx.job_id, self.spec.index):
            try:
                return await self._run(cp)
            finally:
                # Done (or stopped) without its forced round: its token reservation is free.
                self.ctx.budget.release_agent(self.spec.index)

    async def _run(self, cp: AgentCheckpoint) -> AgentCheckpoint:
        if cp.status in (AgentStatus.finished, AgentStatus.failed):
            return cp
        if cp.round == 0:
            await self._emit(
                EventType.agent_started, None, {"seed": self.spec.seed, "angle": self.spec.angle}
            )
        else:
            self._log.info("agent resumes after round %d", cp.round)
        cp.status = AgentStatus.running
        started = time.monotonic() - cp.elapsed
        try:
            while True:
                cp.elapsed = time.monotonic() - started
                reason = self._limit_reason(cp)
                if reason is not None:
                    return await self._forced_answer(cp, reason)
                if not await self._round(cp):
                    return cp
        except Exception as exc:
            cp.status = AgentStatus.failed
            cp.error = f"{type(exc).__name__}: {exc}"
            self._log.warning("agent failed: %s", cp.error)
            await self._checkpoint(cp)
            await self._emit(EventType.agent_failed, cp.round, {"error": cp.error})
            return cp

    async def _call_model(
        self, messages: list[ChatMessage], timeout: float | None, hold: Hold | None = None
    ) -> ChatResult | None:
        """None when `timeout` ran out first. The token `hold` is settled whatever happens."""
        result: ChatResult | None = None
        abandoned = False
        try:
            with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                result = await self.ctx.model.chat(
                    "research",
                    messages,
                    seed=self.spec.seed,
                    temperature=self.spec.temperature,
                    max_tokens=hold.max_tokens if hold is not None else None,
                )
            abandoned = scope.cancelled_caught
        finally:
            if abandoned:
                self.ctx.budget.abandon(hold)
            else:
                self.ctx.budget.settle(hold, result.usage if result is not None else None)
        return result

    async def _account(
        self, cp: AgentCheckpoint, usage: Usage, round_: int, parsed: ParsedOutput, tag: str = ""
    ) -> None:
        """Count the call (the budget has already been charged when its hold settled)."""
        usage = usage.model_copy(
            update={
                "calls": max(usage.calls, 1),
                "format_recoveries": len(parsed.recoveries),
                "format_errors": 1 if parsed.error else 0,
            }
        )
        cp.usage = cp.usage.add(usage)
        data: dict[str, object] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "agent_total_tokens": cp.usage.total_tokens,
            "job_total_tokens": self.ctx.budget.used,
        }
        if parsed.recoveries:
            # Visible per round, so a user sees how messy their model's outputs are.
            data["format_recoveries"] = list(parsed.recoveries)
            data["agent_format_recoveries"] = cp.usage.format_recoveries
        await self._emit(EventType.usage, round_, data, tag)

    async def _round(self, cp: AgentCheckpoint) -> bool:
        """One round; False when the agent has finished."""
        round_ = cp.round + 1
        messages = self.workspace(cp)
        hold = self.ctx.budget.hold("research", messages)
        if hold is None:
            # What the token budget leaves cannot pay for this round's prompt and a reply.
            await self._forced_answer(cp, "The token budget is spent.")
            return False
        await self._emit(EventType.round_started, round_, {"round": round_})
        result = await self._call_model(messages, self.ctx.seconds_left(), hold)
        if result is None:
            # The deadline struck mid-call: the round did not happen.
            return True
        parsed = parse_output(result.content, result.reasoning, self.ctx.tools.keys())
        await self._account(cp, result.usage, round_, parsed)
        step = decide(parsed)
        if parsed.report is not None:
            cp.report = parsed.report.strip()
            await self._emit(EventType.report_updated, round_, {"chars": len(cp.report), "report": cp.report})
        cp.round = round_
        match step:
            case Answer(answer):
                await self._finish(cp, answer, "answered")
                return False
            case CallTool(call, text):
                cp.last_action = text.strip()
                cp.last_observation = await self._act(call, round_)
            case Feedback(message):
                cp.last_action = "(your previous reply could not be used)"
                cp.last_observation = message
                self._log.info("round %d: output fed back: %s", round_, message)
        await self._checkpoint(cp)
        return True

    async def _act(self, call: ToolCall, round_: int) -> str:
        await self._emit(EventType.tool_called, round_, {"name": call.name, "arguments": call.arguments})
        tool = self.ctx.tools.get(call.name)
        data: dict[str, object] = {"name": call.name}
        left = self.ctx.seconds_left()
        if tool is None:
            text = f"Tool error: unknown tool '{call.name}'. Available: {', '.join(self.ctx.tools)}."
            data["error"] = "unknown tool"
        else:
            try:
                with anyio.fail_after(left if left is not None else float("inf")):
                    output = await tool(
                        call.arguments, ToolContext(self.ctx.job_id, self.spec.index, self.ctx.backend)
                    )
            except ToolError as exc:
                text = f"Tool error: {exc}"
                data["error"] = str(exc)
            except TimeoutError:
                text = "Tool error: the call ran out of time."
                data["error"] = "timeout"
            except (RetryableError, OSError) as exc:
                # An outage of a tool's upstream: the model can try another way.
                text = f"Tool error: {call.name} is unavailable right now ({exc})."
                data["error"] = str(exc)
                self._log.warning("tool %s failed: %s", call.name, exc)
            else:
                text = output.text
                data.update(
                    provider=output.provider,
                    cached=output.cached,
                    sources=[s.model_dump() for s in output.sources],
                )
        text = trim_text(text, self.ctx.observation_max_chars)
        data["chars"] = len(text)
        data["preview"] = text[:300]
        await self._emit(EventType.tool_result, round_, data)
        return text

    async def _finish(self, cp: AgentCheckpoint, answer: str, stop_reason: str) -> None:
        cp.answer = answer
        cp.status = AgentStatus.finished
        cp.stop_reason = stop_reason
        await self._checkpoint(cp)
        await self._emit(
            EventType.agent_finished,
            cp.round,
            {
                "answer": answer,
                "rounds": cp.round,
                "stop_reason": stop_reason,
                "report_chars": len(cp.report),
            },
        )

    async def _forced_answer(self, cp: AgentCheckpoint, reason: str) -> AgentCheckpoint:
        """A last round that must answer from the report alone; without a model, the report decides."""
        round_ = cp.round + 1
        await self._emit(
            EventType.round_started, round_, {"round": round_, "forced": True, "reason": reason}, ".forced"
        )
        answer: str | None = None
        messages = self.final_workspace(cp, reason)
        # Its own share of the time and tokens, planned when the job started (workers.budget).
        hold = self.ctx.budget.hold("forced", messages, self.spec.index)
        result = None
        if hold is None:
            self._log.info("forced answer: no tokens left for the model; answering from the report")
        else:
            try:
                result = await self._call_model(messages, self.ctx.forced_timeout(), hold)
            except RetryableError as exc:
                self._log.warning("forced answer: model unavailable: %s", exc)
        if result is not None:
            parsed = parse_output(result.content, result.reasoning, ())
            await self._account(cp, result.usage, round_, parsed, ".forced")
            if parsed.report:
                cp.report = parsed.report.strip()
                await self._emit(
                    EventType.report_updated, round_, {"chars": len(cp.report), "report": cp.report}
                )
            answer = (parsed.answer or "").strip() or None
        cp.round = round_
        stop = f"forced: {reason}"
        if answer is None:
            answer = answer_from_report(cp.report)
            stop += " The model gave no answer; it was taken from the report."
        await self._finish(cp, answer, stop)
        return cp


def answer_from_report(report: str) -> str:
    """The report's first substantive line: the best a forced stop can do without a model."""
    for line in report.splitlines():
        text = line.strip().lstrip("-*#0123456789.) ").strip()
        if len(text) > 3 and not text.endswith(":"):
            return text
    return "No answer: the research was stopped before it found anything."
