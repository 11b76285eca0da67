"""One IterResearch agent: rounds of build workspace → call model → parse → act → checkpoint.

The agent's whole state between rounds is its `AgentCheckpoint`, saved after every round, so
an agent resumes on any worker from where it stopped. Every event it emits carries a key
derived from (agent, round, kind): a resumed agent that replays a round cannot duplicate one.

A round is stored in one step (`JobContext.commit`): its events wait in the agent until the
next event viewers must see at once (`COMMIT_ON`: the next round starting, a pause, the end)
and go with the round's checkpoint and sources, so the store never holds a checkpoint without
its round's events or the reverse. Round N's commit is therefore sent as round N+1 starts,
carrying its `round.started`. A run stopped mid-round (cancelled, its lease lost) drops what
its unfinished round held: the store keeps the last whole round, and a resumed run redoes
the rest.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from workers import tracing
from workers.agent.context import JobContext
from workers.agent.fit import trim_workspace
from workers.agent.observation import wrap
from workers.agent.outcome import non_answer_reason, prompt_texts
from workers.agent.parser import ParsedOutput, parse_output
from workers.budget import CallKind, Hold
from workers.errors import ContextOverflow, RetryableError, SourceConflict, ToolError
from workers.events import EventType, NewEvent
from workers.llm.context import prompt_chars
from workers.llm.types import ChatMessage, ChatResult
from workers.llm.wire import estimate_tokens
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

# Events sent as soon as they happen, with everything the agent holds: viewers follow a job by
# these (a round begins while the model thinks; the agent waits out an outage; it ends).
COMMIT_ON = frozenset(
    {
        EventType.round_started,
        EventType.agent_paused,
        EventType.agent_resumed,
        EventType.agent_finished,
        EventType.agent_failed,
    }
)

# Why an agent stops when the model endpoint stays down past the job's outage budget.
OUTAGE_REASON = "The model endpoint stayed down past the job's outage budget."


@dataclass(frozen=True)
class Abandoned:
    """A model call given up at a deadline: what it cost, as far as can be told."""

    usage: Usage


def decide(parsed: ParsedOutput) -> NextStep:
    if parsed.error is not None:
        return Feedback(f"Format error: {parsed.error}")
    if parsed.answer is not None:
        return Answer(parsed.answer.strip())
    if parsed.tool_call is not None:
        return CallTool(parsed.tool_call, parsed.tool_call_text)
    return Feedback("Format error: end the reply with exactly one <tool_call> or <answer>.")


class IterResearchAgent:
    # Stop sequences of every model call (the ReAct agent stops at `<tool_response>`).
    stop: list[str] | None = None

    def __init__(self, ctx: JobContext, spec: AgentSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self._log = logging.LoggerAdapter(log, {"job_id": ctx.job_id, "agent": spec.index})
        # Outage pauses of this run, and how many of them an `agent.resumed` has closed.
        self._pauses = 0
        self._resumes = 0
        self._resume_due = False
        # What the agent has written since its last commit.
        self._events: list[NewEvent] = []
        self._saved: AgentCheckpoint | None = None
        # The prompts' static text, that an answer must not merely copy (fixed for the job).
        self._prompt_text = prompt_texts(ctx.prompts)
        self._system: str | None = None

    # -- events and checkpoints ------------------------------------------------------------------
    async def _emit(
        self, type_: EventType, round_: int | None, data: dict[str, object], tag: str = ""
    ) -> None:
        key = f"a{self.spec.index}.r{round_}.{type_.value}{tag}"
        # Built without validation: every field is typed here, and validating each event was a
        # noticeable share of a round. The data gets its own top level, as validation gives it.
        event = NewEvent.model_construct(
            type=type_, agent=self.spec.index, round=round_, data=dict(data), key=key
        )
        self._events.append(event)
        if type_ in COMMIT_ON:
            await self._commit()

    async def _checkpoint(self, cp: AgentCheckpoint, *, commit: bool = False) -> None:
        """Save `cp` with the round's events, at the next commit (at once with `commit`). It is
        sent as it is then: between a round's end and the next round's start only `elapsed`
        moves."""
        self._saved = cp
        if commit:
            await self._commit()

    async def _commit(self) -> None:
        if not self._events and self._saved is None:
            return
        await self.ctx.commit(list(self._events), self._saved)
        self._events.clear()
        self._saved = None

    # -- workspace ------------------------------------------------------------------------------
    def _question(self) -> str:
        if self.spec.angle:
            return f"{self.ctx.question}\n\nYour research angle: {self.spec.angle}"
        return self.ctx.question

    def workspace(self, cp: AgentCheckpoint) -> list[ChatMessage]:
        """The whole prompt of the next round; its size does not depend on the round number."""
        prompts = self.ctx.prompts
        if self._system is None:  # the job's date and tools: the same every round
            self._system = prompts.research_system.safe_substitute(
                date=self.ctx.date, tools=self.ctx.tool_list()
            )
        system = self._system
        user = prompts.research_round.safe_substitute(
            question=self._question(),
            # Empty in round 1: a placeholder text here is what small models copy into reports.
            report=cp.report,
            last_action=cp.last_action,
            last_observation=wrap(cp.last_observation) if cp.last_observation else "",
            round=cp.round + 1,
            max_rounds=self.ctx.max_rounds,
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def final_workspace(self, cp: AgentCheckpoint, reason: str) -> list[ChatMessage]:
        prompts = self.ctx.prompts
        # No tools are offered: research_final says so in the template's own words.
        system = prompts.research_system.safe_substitute(date=self.ctx.date, tools="")
        user = prompts.research_final.safe_substitute(
            question=self._question(), report=cp.report, reason=reason
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
                cp = await self._run(cp)
                await self._commit()  # every way out of `_run` has committed; this is a guard
                return cp
            finally:
                if self._events or self._saved is not None:
                    # Stopped mid-round: the round is dropped whole, events and checkpoint.
                    self._log.info("run stopped mid-round; %d unsent events dropped", len(self._events))
                # Done (or stopped) without its forced round: its token reservation is free.
                self.ctx.budget.release_agent(self.spec.index)

    async def _start(self, cp: AgentCheckpoint) -> None:
        """Announce a fresh agent, or note a resumed one."""
        if cp.round == 0:
            await self._emit(
                EventType.agent_started, None, {"seed": self.spec.seed, "angle": self.spec.angle}
            )
        else:
            self._log.info("agent resumes after round %d", cp.round)

    async def _resume(self, cp: AgentCheckpoint) -> None:
        """Finish what a crashed run left half done (nothing: a round is redone whole)."""

    def _stop_reason(self, cp: AgentCheckpoint) -> str | None:
        """Why the agent must answer now, if it must."""
        return self._limit_reason(cp)

    async def _run(self, cp: AgentCheckpoint) -> AgentCheckpoint:
        if cp.status.ended:
            return cp
        await self._start(cp)
        cp.status = AgentStatus.running
        started = time.monotonic() - cp.elapsed
        try:
            await self._resume(cp)
            while True:
                cp.elapsed = time.monotonic() - started
                reason = self._stop_reason(cp)
                if reason is not None:
                    return await tracing.traced("forced_answer", self._forced_answer(cp, reason))
                try:
                    if not await tracing.traced("round", self._round(cp), {tracing.ROUND: cp.round + 1}):
                        return cp
                except RetryableError as exc:
                    # The endpoint stayed down for a whole call's retry budget.
                    if not await self._pause(cp, exc):
                        return await self._forced_answer(cp, OUTAGE_REASON, use_model=False)
        except SourceConflict:
            raise  # another process runs the job: this one must write nothing more
        except Exception as exc:
            cp.status = AgentStatus.failed
            failed_in = cp.round + 1
            cp.error = f"round {failed_in}: {type(exc).__name__}: {exc}"
            self._log.warning("agent failed: %s", cp.error)
            await self._checkpoint(cp)
            await self._emit(EventType.agent_failed, failed_in, {"error": cp.error, "round": failed_in})
            return cp

    async def _pause(self, cp: AgentCheckpoint, exc: RetryableError) -> bool:
        """Wait out a model outage; False once the job's outage budget is spent."""
        self._pauses += 1
        if exc.usage is not None:
            # The call's failed attempts the server had still cost tokens (no hold settled them).
            self.ctx.budget.spend(exc.usage)
            await self._account(cp, exc.usage, cp.round + 1, None, f".lost{self._pauses}", estimated=True)
        outage = self.ctx.outage
        lasted = outage.failed()
        if outage.spent:
            self._log.warning(
                "model down for %.0fs, past the outage budget: answering from the report", lasted
            )
            return False
        wait = outage.next_pause()
        left = self.ctx.seconds_left()
        if left is not None:
            wait = max(0.0, min(wait, left))
        self._log.warning("model endpoint down (%.0fs so far); agent paused for %.1fs: %s", lasted, wait, exc)
        await self._emit(
            EventType.agent_paused,
            cp.round + 1,
            {
                "reason": str(exc)[:500],
                "outage_seconds": round(lasted, 1),
                "outage_budget": outage.budget,
                "retry_in": round(wait, 1),
            },
            f".{self._pauses}",
        )
        await anyio.sleep(wait)
        return True

    async def _call_model(
        self, messages: list[ChatMessage], timeout: float | None, hold: Hold | None = None
    ) -> ChatResult | Abandoned:
        """The model's reply, or `Abandoned` when `timeout` ran out first. The token `hold` is
        settled whatever happens."""
        # Streamed (where the endpoint's `stream` allows): a stalled stream ends at the read
        # timeout, and a call cut off at a deadline still shows what it generated.
        streamed = [0]

        async def count(text: str) -> None:
            streamed[0] += len(text)

        async def restart() -> None:
            streamed[0] = 0

        on_delta = count
        result: ChatResult | None = None
        abandoned = False
        try:
            # No scope at all without a timeout: an anyio cancel scope costs more than the
            # rest of the round's bookkeeping, and most jobs have no deadline.
            scope = anyio.move_on_after(timeout) if timeout is not None else None
            with scope if scope is not None else contextlib.nullcontext():
                result = await self.ctx.model.chat(
                    "research",
                    messages,
                    seed=self.spec.seed,
                    temperature=self.spec.temperature,
                    max_tokens=hold.max_tokens if hold is not None else None,
                    stop=self.stop,
                    on_delta=on_delta,
                    on_reset=restart,
                )
            abandoned = scope is not None and scope.cancelled_caught
        finally:
            if abandoned:
                self.ctx.budget.abandon(hold)
            else:
                self.ctx.budget.settle(hold, result.usage if result is not None else None)
        if result is not None:
            self._resumed_from_pause()
            return result
        # The server charged for the prompt, and for whatever it generated before the cut.
        return Abandoned(
            Usage(
                prompt_tokens=estimate_tokens(prompt_chars(messages)),
                completion_tokens=estimate_tokens(streamed[0]),
                calls=1,
            )
        )

    def _resumed_from_pause(self) -> None:
        if self.ctx.outage.down_since is not None:
            self._log.info("model endpoint answers again after %.0fs", self.ctx.outage.lasted)
        self.ctx.outage.succeeded()
        self._resume_due = self._pauses > self._resumes

    async def _call_fitted(
        self,
        cp: AgentCheckpoint,
        build: Callable[[AgentCheckpoint], list[ChatMessage]],
        timeout: float | None,
        round_: int,
        kind: CallKind,
        hold: Hold | None,
    ) -> ChatResult | Abandoned:
        """A model call on the workspace `build` makes of `cp`, under the token `hold`; a
        workspace over the model's context is trimmed (observation first, then the report's
        oldest parts) and sent once more, under a hold of its own."""
        messages = build(cp)
        try:
            result = await self._call_model(messages, timeout, hold)
        except ContextOverflow as exc:
            trimmed = trim_workspace(
                cp.report, cp.last_observation, prompt_chars(messages) - exc.prompt_chars
            )
            self._log.warning(
                "round %d: workspace over the model's context; cut %d chars of observation, %d of report",
                round_,
                trimmed.cut_observation,
                trimmed.cut_report,
            )
            smaller = cp.model_copy(
                update={"report": trimmed.report, "last_observation": trimmed.observation}
            )
            messages = build(smaller)
            agent = self.spec.index if kind == "forced" else None
            again = self.ctx.budget.hold(kind, messages, agent) if hold is not None else None
            if hold is not None and again is None:
                raise
            result = await self._call_model(messages, timeout, again)
        if self._resume_due:
            self._resumes = self._pauses
            self._resume_due = False
            await self._emit(EventType.agent_resumed, round_, {"pauses": self._pauses}, f".{self._pauses}")
        return result

    async def _account(
        self,
        cp: AgentCheckpoint,
        usage: Usage,
        round_: int,
        parsed: ParsedOutput | None,
        tag: str = "",
        *,
        estimated: bool = False,
        estimated_tokens: int = 0,
    ) -> None:
        """Count the call (the budget has already been charged when its hold settled)."""
        update: dict[str, int] = {"calls": max(usage.calls, 1)}
        if parsed is not None:
            update.update(format_recoveries=len(parsed.recoveries), format_errors=1 if parsed.error else 0)
        usage = usage.model_copy(update=update)
        cp.usage = cp.usage.add(usage)
        data: dict[str, object] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "agent_total_tokens": cp.usage.total_tokens,
            "job_total_tokens": self.ctx.budget.used,
        }
        if parsed is not None and parsed.recoveries:
            # Visible per round, so a user sees how messy their model's outputs are.
            data["format_recoveries"] = list(parsed.recoveries)
            data["agent_format_recoveries"] = cp.usage.format_recoveries
        if estimated:
            # A call abandoned at a deadline: no usage came back, so these are estimates.
            data["estimated"] = True
        elif estimated_tokens:
            # Failed attempts before the answer (resets, stalls): their share is estimated.
            data["estimated_tokens"] = estimated_tokens
        await self._emit(EventType.usage, round_, data, tag)

    async def _round(self, cp: AgentCheckpoint) -> bool:
        """One round; False when the agent has finished."""
        round_ = cp.round + 1
        hold = self.ctx.budget.hold("research", self.workspace(cp))
        if hold is None:
            # What the token budget leaves cannot pay for this round's prompt and a reply.
            await self._forced_answer(cp, "The token budget is spent.")
            return False
        await self._emit(EventType.round_started, round_, {"round": round_})
        result = await self._call_fitted(
            cp, self.workspace, self.ctx.seconds_left(), round_, "research", hold
        )
        if isinstance(result, Abandoned):
            # The deadline struck mid-call: the round did not happen, but its tokens were spent.
            await self._account(cp, result.usage, round_, None, ".abandoned", estimated=True)
            return True
        parsed = parse_output(result.content, result.reasoning, self.ctx.tools.keys())
        await self._account(cp, result.usage, round_, parsed, estimated_tokens=result.estimated_tokens)
        step = self._check_answer(decide(parsed))
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

    def _check_answer(self, step: NextStep) -> NextStep:
        """An answer that is no answer (a placeholder, the prompt's own text) goes back to the
        model: it may still research or answer properly before it is forced to."""
        if isinstance(step, Answer):
            why = self._non_answer(step.answer)
            if why is not None:
                return Feedback(
                    f"Format error: the <answer> is not an answer ({why}). Keep researching, or "
                    "answer the question in your own words."
                )
        return step

    def _non_answer(self, answer: str | None) -> str | None:
        return non_answer_reason(answer, question=self.ctx.question, prompt_text=self._prompt_text)

    async def _act(self, call: ToolCall, round_: int) -> str:
        await self._emit(EventType.tool_called, round_, {"name": call.name, "arguments": call.arguments})
        tool = self.ctx.tools.get(call.name)
        data: dict[str, object] = {"name": call.name}
        left = self.ctx.seconds_left()
        tool_ctx = ToolContext(self.ctx.job_id, self.spec.index, self.ctx.backend, self.ctx.sources)
        if tool is None:
            text = f"Tool error: unknown tool '{call.name}'. Available: {', '.join(self.ctx.tools)}."
            data["error"] = "unknown tool"
        else:
            try:
                with anyio.fail_after(left) if left is not None else contextlib.nullcontext():
                    output = await tool(call.arguments, tool_ctx)
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

    async def _finish(self, cp: AgentCheckpoint, answer: str | None, stop_reason: str) -> None:
        why = self._non_answer(answer)
        cp.answer = answer if why is None else None
        cp.status = AgentStatus.finished if why is None else AgentStatus.no_answer
        cp.stop_reason = stop_reason if why is None else f"{stop_reason} No answer: {why}."
        await self._checkpoint(cp)
        data: dict[str, object] = {
            "answer": cp.answer,
            "status": cp.status.value,
            "rounds": cp.round,
            "stop_reason": cp.stop_reason,
            "report_chars": len(cp.report),
        }
        if why is not None:
            data["no_answer"] = why
        await self._emit(EventType.agent_finished, cp.round, data)

    async def _forced_answer(
        self, cp: AgentCheckpoint, reason: str, *, use_model: bool = True
    ) -> AgentCheckpoint:
        """A last model call that must answer from the report alone; without a model (it failed,
        or the endpoint is down: `use_model=False`), the report decides. It belongs to the last
        round, so summaries never show a round past `max_rounds`."""
        round_ = max(cp.round, 1)
        await self._emit(
            EventType.round_started, round_, {"round": round_, "forced": True, "reason": reason}, ".forced"
        )
        answer: str | None = None
        result: ChatResult | Abandoned | None = None

        def build(c: AgentCheckpoint) -> list[ChatMessage]:
            return self.final_workspace(c, reason)

        # Its own share of the time and tokens, planned when the job started (workers.budget).
        hold = self.ctx.budget.hold("forced", build(cp), self.spec.index) if use_model else None
        if use_model and hold is None:
            self._log.info("forced answer: no tokens left for the model; answering from the report")
        elif use_model:
            try:
                # Past the deadline on purpose: a job that runs out of time still owes an answer.
                result = await self._call_fitted(cp, build, self.ctx.forced_timeout(), round_, "forced", hold)
            except (RetryableError, ContextOverflow) as exc:
                self._log.warning("forced answer: model unavailable: %s", exc)
        if isinstance(result, Abandoned):
            await self._account(cp, result.usage, round_, None, ".forced", estimated=True)
        elif result is not None:
            parsed = parse_output(result.content, result.reasoning, ())
            await self._account(
                cp, result.usage, round_, parsed, ".forced", estimated_tokens=result.estimated_tokens
            )
            if parsed.report:
                cp.report = parsed.report.strip()
                await self._emit(
                    EventType.report_updated,
                    round_,
                    {"chars": len(cp.report), "report": cp.report},
                    ".forced",
                )
            answer = (parsed.answer or "").strip() or None
            if self._non_answer(answer) is not None:
                answer = None
        cp.round = round_
        stop = f"forced: {reason}"
        if answer is None:
            answer = answer_from_report(cp.report)
            stop += " The model gave no answer; it was taken from the report."
        await self._finish(cp, answer, stop)
        return cp


def answer_from_report(report: str) -> str | None:
    """The report's first substantive line: the best a forced stop can do without a model.
    None when the report has none: the agent then ends with no answer, not a placeholder."""
    for line in report.splitlines():
        text = line.strip().lstrip("-*#0123456789.) ").strip()
        if len(text) > 3 and not text.endswith(":") and not text.startswith("[Trimmed"):
            return text
    return None
