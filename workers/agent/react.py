"""One ReAct agent: the released Tongyi DeepResearch loop, beside IterResearch.

The agent keeps one growing transcript: the system prompt (the tools' JSON signatures inside
`<tools>`, the call format, the date), the question, then each assistant turn and the tool
response to it as a user message inside `<tool_response>`. Every call stops at
`<tool_response>`, so the model cannot write its own observation. Same tools, parser, events and
keys as IterResearch; the checkpoint *is* the transcript.

Context rule: before each call the transcript is counted (`JobContext.token_counter`). When it
would exceed `JobContext.context_tokens`, the agent gets one final turn that must answer. That
turn keeps the last tool response whole; if the transcript still does not fit, the oldest turns
are left out and a note in the prompt says how many (the released code instead overwrote the
last tool response with the instruction). Nothing is dropped without the model and the events
saying so.

Resume: the transcript is saved after the assistant turn and again after its tool response. A
resumed agent whose last message is an unanswered tool call runs that call and goes on: the
model is not asked again for a turn it already gave.
"""

from __future__ import annotations

import re

from workers.agent.iter_research import (
    Abandoned,
    Answer,
    CallTool,
    Feedback,
    IterResearchAgent,
    answer_from_report,
    decide,
)
from workers.agent.observation import unwrap, wrap
from workers.agent.parser import parse_output
from workers.agent.signatures import tools_block
from workers.agent.tokens import MESSAGE_OVERHEAD, count_messages
from workers.errors import ContextOverflow, RetryableError
from workers.events import EventType
from workers.llm.types import ChatMessage, ChatResult
from workers.models import AgentCheckpoint, ToolCall
from workers.tools.render import trim_text

# The released loop's stop sequences: a model that goes on past its call stops here.
STOP = ["\n<tool_response>", "<tool_response>"]
_INVENTED = re.compile(r"<\s*tool_response\s*>", re.IGNORECASE)
_HAS_THINK = re.compile(r"<\s*/?\s*think\s*>", re.IGNORECASE)
CONTEXT_REASON = "The transcript has reached the context budget ({tokens} of {budget} tokens)."


def assistant_text(result: ChatResult) -> str:
    """The assistant turn as the transcript keeps it: reasoning from a separate field goes back
    inside `<think>` (as the released code does), and an observation the model invented despite
    the stop sequences is cut."""
    content = result.content
    invented = _INVENTED.search(content)
    if invented:
        content = content[: invented.start()]
    reasoning = result.reasoning.strip()
    if reasoning and not _HAS_THINK.search(content):
        content = f"<think>\n{reasoning}\n</think>\n{content.lstrip()}"
    return content.rstrip()


class ReActAgent(IterResearchAgent):
    stop = STOP

    # -- the transcript -------------------------------------------------------------------------
    def initial_transcript(self) -> list[dict[str, str]]:
        prompts = self.ctx.prompts
        system = prompts.react_system.safe_substitute(
            date=self.ctx.date, tools=tools_block(self.ctx.tools.values())
        )
        user = prompts.react_user.safe_substitute(question=self._question())
        # Template files end in a newline; a chat message does not.
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]

    def transcript_tokens(self, cp: AgentCheckpoint) -> int:
        return count_messages(self.ctx.token_counter, cp.transcript)

    def final_messages(self, cp: AgentCheckpoint, reason: str) -> tuple[list[ChatMessage], dict[str, object]]:
        """The forced final turn, within the context budget; and what was cut to fit it."""
        counter, budget = self.ctx.token_counter, self.ctx.context_tokens
        instruction: dict[str, str] = {
            "role": "user",
            "content": self.ctx.prompts.react_final.safe_substitute(reason=reason).strip(),
        }
        head, body = cp.transcript[:2], cp.transcript[2:]
        last = body[-1:] if body and body[-1]["role"] == "user" else []
        rest = body[: len(body) - len(last)]
        fixed = count_messages(counter, [*head, instruction])
        trimmed = False
        if last and fixed + count_messages(counter, last) > budget:
            # Even the last tool response alone does not fit: shorten it, visibly, leaving room
            # for the note that earlier turns are left out.
            worst = self.ctx.prompts.react_omitted.safe_substitute(count=len(rest)).strip()
            room = budget - fixed - count_messages(counter, [{"role": "user", "content": worst}])
            last = [{"role": "user", "content": self._fit(last[0]["content"], room)}]
            trimmed = True
        used = fixed + count_messages(counter, last)
        kept: list[dict[str, str]] = []
        for message in reversed(rest):
            cost = count_messages(counter, [message])
            if used + cost > budget:
                break
            kept.insert(0, message)
            used += cost
        note: list[dict[str, str]] = []
        while True:
            # A kept span starts at an assistant turn, so no tool response is shown without its call.
            while kept and kept[0]["role"] != "assistant":
                used -= count_messages(counter, [kept.pop(0)])
            omitted = len(rest) - len(kept)
            if not omitted:
                break
            text = self.ctx.prompts.react_omitted.safe_substitute(count=omitted).strip()
            note = [{"role": "user", "content": text}]
            if used + count_messages(counter, note) <= budget or not kept:
                break
            used -= count_messages(counter, [kept.pop(0)])  # the note needs room too
        messages = [*head, *note, *kept, *last, instruction]
        return [_message(m) for m in messages], {"omitted_messages": omitted, "observation_trimmed": trimmed}

    def _fit(self, wrapped: str, room: int) -> str:
        """A wrapped observation shortened until it fits in `room` tokens (its text never below
        200 characters), still wrapped, and marked as trimmed."""
        counter = self.ctx.token_counter
        inner, text = unwrap(wrapped), wrapped
        keep = len(inner)
        for _ in range(8):
            tokens = counter.count(text) + MESSAGE_OVERHEAD
            if tokens <= room or keep <= 200:
                break
            keep = max(200, int(keep * room / max(tokens, 1) * 0.9))
            text = wrap(trim_text(inner, keep))
        return text

    # -- the loop -------------------------------------------------------------------------------
    def _context_reason(self, cp: AgentCheckpoint) -> str | None:
        tokens = self.transcript_tokens(cp)
        if tokens > self.ctx.context_tokens:
            return CONTEXT_REASON.format(tokens=tokens, budget=self.ctx.context_tokens)
        return None

    def _stop_reason(self, cp: AgentCheckpoint) -> str | None:
        return self._limit_reason(cp) or self._context_reason(cp)

    async def _start(self, cp: AgentCheckpoint) -> None:
        if not cp.transcript:
            cp.transcript = self.initial_transcript()
            await self._emit(
                EventType.agent_started,
                None,
                {"seed": self.spec.seed, "angle": self.spec.angle, "mode": "react"},
            )
        else:
            self._log.info("ReAct agent resumes after round %d", cp.round)

    async def _resume(self, cp: AgentCheckpoint) -> None:
        pending = pending_call(cp)
        if pending is not None:
            self._log.info("round %d: running the tool call the crashed run left unanswered", cp.round)
            await self._observe(cp, pending, cp.round)
            await self._checkpoint(cp)

    async def _round(self, cp: AgentCheckpoint) -> bool:
        round_ = cp.round + 1
        messages = [_message(m) for m in cp.transcript]
        hold = self.ctx.budget.hold("research", messages)
        if hold is None:
            # What the token budget leaves cannot pay for this turn's prompt and a reply.
            await self._forced_answer(cp, "The token budget is spent.")
            return False
        await self._emit(
            EventType.round_started, round_, {"round": round_, "context_tokens": self.transcript_tokens(cp)}
        )
        result = await self._call_model(messages, self.ctx.seconds_left(), hold)
        if isinstance(result, Abandoned):
            # The deadline struck mid-call: the turn did not happen, but its tokens were spent.
            await self._account(cp, result.usage, round_, None, ".abandoned", estimated=True)
            return True
        self._resumed_from_pause()
        parsed = parse_output(result.content, result.reasoning, self.ctx.tools.keys())
        await self._account(cp, result.usage, round_, parsed, estimated_tokens=result.estimated_tokens)
        step = self._check_answer(decide(parsed))
        cp.transcript.append({"role": "assistant", "content": assistant_text(result)})
        cp.round = round_
        if parsed.think:
            # ReAct has no report: its last reasoning is what synthesis reads.
            cp.report = parsed.think.strip()
        match step:
            case Answer(answer):
                await self._finish(cp, answer, "answered")
                return False
            case CallTool(call, text):
                cp.last_action = text.strip()
                # Committed before the tool runs (a second write this round): a crash now
                # resumes at the call, not the model.
                await self._checkpoint(cp, commit=True)
                await self._observe(cp, call, round_)
            case Feedback(message):
                cp.last_action = "(your previous reply could not be used)"
                cp.last_observation = message
                cp.transcript.append({"role": "user", "content": wrap(message)})
                self._log.info("round %d: output fed back: %s", round_, message)
        await self._checkpoint(cp)
        return True

    async def _observe(self, cp: AgentCheckpoint, call: ToolCall, round_: int) -> None:
        text = await self._act(call, round_)
        cp.last_observation = text
        cp.transcript.append({"role": "user", "content": wrap(text)})

    async def _forced_answer(
        self, cp: AgentCheckpoint, reason: str, *, use_model: bool = True
    ) -> AgentCheckpoint:
        # The final turn belongs to the last round, so summaries never show one past max_rounds.
        round_ = max(cp.round, 1)
        messages, cut = self.final_messages(cp, reason)
        await self._emit(
            EventType.round_started,
            round_,
            {"round": round_, "forced": True, "reason": reason, **cut},
            ".forced",
        )
        answer: str | None = None
        # Its own share of the time and tokens, planned when the job started (workers.budget).
        hold = self.ctx.budget.hold("forced", messages, self.spec.index) if use_model else None
        result: ChatResult | Abandoned | None = None
        if use_model and hold is None:
            self._log.info("forced answer: no tokens left for the model; answering from the reasoning")
        elif use_model:
            try:
                result = await self._call_model(messages, self.ctx.forced_timeout(), hold)
            except (RetryableError, ContextOverflow) as exc:
                self._log.warning("forced answer: model unavailable: %s", exc)
        cp.transcript.append({"role": "user", "content": messages[-1]["content"]})
        if isinstance(result, Abandoned):
            await self._account(cp, result.usage, round_, None, ".forced", estimated=True)
        elif result is not None:
            parsed = parse_output(result.content, result.reasoning, ())
            await self._account(
                cp, result.usage, round_, parsed, ".forced", estimated_tokens=result.estimated_tokens
            )
            cp.transcript.append({"role": "assistant", "content": assistant_text(result)})
            if parsed.think:
                cp.report = parsed.think.strip()
            answer = (parsed.answer or "").strip() or None
            if self._non_answer(answer) is not None:
                answer = None
        cp.round = round_
        stop = f"forced: {reason}"
        if answer is None:
            answer = answer_from_report(cp.report)
            stop += " The model gave no answer; it was taken from the last reasoning."
        await self._finish(cp, answer, stop)
        return cp


def pending_call(cp: AgentCheckpoint) -> ToolCall | None:
    """The tool call of a last assistant turn that has no tool response yet (a crash between)."""
    if len(cp.transcript) < 3 or cp.transcript[-1]["role"] != "assistant":
        return None
    parsed = parse_output(cp.transcript[-1]["content"])
    step = decide(parsed)
    return step.call if isinstance(step, CallTool) else None


def _message(raw: dict[str, str]) -> ChatMessage:
    role, content = raw["role"], raw["content"]
    if role == "system":
        return {"role": "system", "content": content}
    if role == "user":
        return {"role": "user", "content": content}
    if role == "assistant":
        return {"role": "assistant", "content": content}
    raise ValueError(f"unknown transcript role {role!r}")
