"""Budgets that hold: a job's `max_seconds` and `max_tokens`, shared out when it starts.

**Time.** The last share of `max_seconds` is planned for finishing from the start, not appended
after the deadline: research runs until `research_seconds`, forced answers must come back within
the next `forced_seconds`, and the synthesis within what is left of `max_seconds`; a call that
runs past its share is abandoned (the answer then comes from the report, or the majority). Only
saving the result and writing the terminal event happen after `max_seconds`; the documented bound
is `max_seconds + finish_allowance_seconds`.

**Tokens.** `forced_round_tokens` per agent and `synthesis_tokens` (when there is a synthesis to
make) are reserved out of `max_tokens` before the first round. Every model call first *holds* its
estimated prompt plus its completion cap (sent as the call's `max_tokens`) from what is free, so
agents running in parallel cannot together overshoot; the hold is settled with the usage the
server reports. Research rounds draw only on what the reservations leave; an agent's forced round
and the synthesis also draw on their own reservation. A call that cannot get a useful completion
(`min_completion_tokens`) is not made: the agent answers from its report, the synthesis falls back
to the majority. The guarantee rests on the prompt estimate (`chars_per_token`, on the high side
of real tokenizers) being at least what the server counts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

from workers.llm.types import ChatMessage
from workers.models import BudgetReport, Usage
from workers.settings import BudgetSettings

CallKind = Literal["research", "forced", "synthesis"]
# Chat templates add a few tokens around every message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8


def estimate_prompt_tokens(messages: list[ChatMessage], chars_per_token: float) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return math.ceil(chars / chars_per_token) + MESSAGE_OVERHEAD_TOKENS * len(messages)


# -- time ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimePlan:
    max_seconds: float
    research_seconds: float
    forced_seconds: float
    synthesis_seconds: float
    allowance_seconds: float
    start: float  # time.monotonic() at the job's start (first start, when resumed)

    @property
    def research_deadline(self) -> float:
        return self.start + self.research_seconds

    @property
    def forced_deadline(self) -> float:
        return self.research_deadline + self.forced_seconds

    @property
    def final_deadline(self) -> float:
        return self.start + self.max_seconds

    def forced_timeout(self, grace: float) -> float:
        """How long a forced answer may wait for the model now: its grace, within its share."""
        return max(0.0, min(grace, self.forced_deadline - time.monotonic()))

    def synthesis_timeout(self) -> float:
        return max(0.0, self.final_deadline - time.monotonic())


def split_seconds(max_seconds: float, cfg: BudgetSettings) -> tuple[float, float, float]:
    """(research, forced, synthesis) seconds of a `max_seconds` budget."""
    finish = min(max_seconds * cfg.finish_share, cfg.finish_max_seconds)
    forced = finish * cfg.forced_share
    return max_seconds - finish, forced, finish - forced


def plan_time(max_seconds: float, started_at: float, cfg: BudgetSettings) -> TimePlan:
    """The plan of a job that started at wall-clock `started_at`."""
    research, forced, synthesis = split_seconds(max_seconds, cfg)
    start = time.monotonic() - (time.time() - started_at)
    return TimePlan(max_seconds, research, forced, synthesis, cfg.finish_allowance_seconds, start)


# -- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hold:
    kind: CallKind
    amount: int
    max_tokens: int | None  # the call's completion cap; None = the endpoint's default


@dataclass
class TokenBudget:
    """A job-wide token ledger shared by its agents and the synthesis (`limit` None = unlimited)."""

    limit: int | None
    used: int = 0
    cfg: BudgetSettings = field(default_factory=BudgetSettings)
    # Agents whose forced round is still reserved for, and whether the synthesis is.
    reserved_agents: set[int] = field(default_factory=set)
    synthesis_reserved: bool = False
    held: int = 0

    @classmethod
    def plan(
        cls, limit: int | None, used: int, agents: set[int], synthesis: bool, cfg: BudgetSettings
    ) -> TokenBudget:
        return cls(
            limit, used, cfg, set(agents) if limit is not None else set(), synthesis and limit is not None
        )

    @property
    def reserved(self) -> int:
        synthesis = self.cfg.synthesis_tokens if self.synthesis_reserved else 0
        return self.cfg.forced_round_tokens * len(self.reserved_agents) + synthesis

    @property
    def free(self) -> int | None:
        """Tokens research rounds may still take; None when unlimited."""
        if self.limit is None:
            return None
        return self.limit - self.used - self.held - self.reserved

    @property
    def exhausted(self) -> bool:
        free = self.free
        return free is not None and free < self.cfg.min_completion_tokens

    def spend(self, usage: Usage) -> None:
        self.used += usage.total_tokens

    def hold(self, kind: CallKind, messages: list[ChatMessage], agent: int | None = None) -> Hold | None:
        """Hold what the call may cost; None when it cannot get a useful completion."""
        if kind == "forced" and agent is not None:
            self.reserved_agents.discard(agent)  # the forced round spends its own reservation
        elif kind == "synthesis":
            self.synthesis_reserved = False
        free = self.free
        if free is None:
            return Hold(kind, 0, None)
        caps = {
            "research": self.cfg.round_completion_tokens,
            "forced": self.cfg.forced_completion_tokens,
            "synthesis": self.cfg.synthesis_completion_tokens,
        }
        prompt = estimate_prompt_tokens(messages, self.cfg.chars_per_token)
        cap = min(caps[kind], free - prompt)
        if cap < self.cfg.min_completion_tokens:
            return None
        self.held += prompt + cap
        return Hold(kind, prompt + cap, cap)

    def settle(self, hold: Hold | None, usage: Usage | None) -> None:
        """The call ended: drop its hold and count what it spent (None: nothing came back)."""
        if hold is not None:
            self.held -= hold.amount
        if usage is not None:
            self.spend(usage)

    def abandon(self, hold: Hold | None) -> None:
        """The call was given up mid-way (its time share ran out): the server may have spent up
        to the whole hold, so the ledger counts it all, staying an upper bound of what was spent."""
        if hold is not None:
            self.held -= hold.amount
            self.used += hold.amount

    def release_agent(self, agent: int) -> None:
        """The agent is done without needing its forced round: its reservation is free again."""
        self.reserved_agents.discard(agent)


# -- the plan, as checked at submit and shown in the result --------------------------------------
def reserved_tokens(agents: int, cfg: BudgetSettings) -> tuple[int, int]:
    """(forced-round tokens over all agents, synthesis tokens) a token budget keeps back."""
    return cfg.forced_round_tokens * agents, cfg.synthesis_tokens if agents > 1 else 0


def budget_problems(
    agents: int, max_tokens: int | None, max_seconds: float | None, cfg: BudgetSettings
) -> list[tuple[str, str]]:
    """(field, why) for each budget too small to do anything useful."""
    problems: list[tuple[str, str]] = []
    if max_tokens is not None:
        forced, synthesis = reserved_tokens(agents, cfg)
        needed = forced + synthesis + cfg.min_round_tokens * agents
        if max_tokens < needed:
            problems.append(
                (
                    "max_tokens",
                    f"max_tokens {max_tokens} is too small for {agents} agent(s): {forced} tokens are "
                    f"reserved for forced answers and {synthesis} for the synthesis, and each agent "
                    f"needs about {cfg.min_round_tokens} for one research round; ask for at least "
                    f"{needed}, or for fewer agents",
                )
            )
    if max_seconds is not None:
        research, forced_s, synthesis_s = split_seconds(max_seconds, cfg)
        if research < cfg.min_research_seconds:
            least = cfg.min_research_seconds / (1 - cfg.finish_share)
            problems.append(
                (
                    "max_seconds",
                    f"max_seconds {max_seconds:g} leaves {research:.2f} s for research after "
                    f"{forced_s + synthesis_s:.2f} s kept for forced answers and the synthesis; ask for at "
                    f"least {math.ceil(least * 100) / 100:g}",
                )
            )
    return problems


def budget_report(
    agents: int, max_tokens: int | None, time_plan: TimePlan | None, cfg: BudgetSettings
) -> BudgetReport | None:
    if max_tokens is None and time_plan is None:
        return None
    report = BudgetReport()
    if max_tokens is not None:
        forced, synthesis = reserved_tokens(agents, cfg)
        report.max_tokens = max_tokens
        report.reserved_forced_tokens = forced
        report.reserved_synthesis_tokens = synthesis
        report.research_tokens = max(0, max_tokens - forced - synthesis)
    if time_plan is not None:
        report.max_seconds = time_plan.max_seconds
        report.research_seconds = round(time_plan.research_seconds, 3)
        report.forced_seconds = round(time_plan.forced_seconds, 3)
        report.synthesis_seconds = round(time_plan.synthesis_seconds, 3)
        report.finish_allowance_seconds = time_plan.allowance_seconds
    return report
