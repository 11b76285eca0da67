"""The budget planner on its own: time shares, token reservations, holds and their settling."""

from __future__ import annotations

import time

import pytest

from workers.budget import (
    MESSAGE_OVERHEAD_TOKENS,
    TokenBudget,
    budget_problems,
    estimate_prompt_tokens,
    plan_time,
    split_seconds,
)
from workers.llm.types import ChatMessage
from workers.models import Usage
from workers.settings import BudgetSettings

CFG = BudgetSettings(
    forced_round_tokens=1000,
    synthesis_tokens=2000,
    min_round_tokens=500,
    round_completion_tokens=400,
    forced_completion_tokens=300,
    synthesis_completion_tokens=500,
    min_completion_tokens=50,
    chars_per_token=4.0,
)
PROMPT: list[ChatMessage] = [{"role": "user", "content": "x" * 400}]  # 100 tokens + overhead
P = 100 + MESSAGE_OVERHEAD_TOKENS


def test_prompt_estimate() -> None:
    assert estimate_prompt_tokens(PROMPT, 4.0) == P


def test_time_shares_add_up_and_the_finishing_share_is_capped() -> None:
    cfg = BudgetSettings()
    assert split_seconds(100, cfg) == pytest.approx((75, 10, 15))
    research, forced, synthesis = split_seconds(3600, cfg)
    assert forced + synthesis == pytest.approx(cfg.finish_max_seconds)
    assert research == pytest.approx(3600 - cfg.finish_max_seconds)


def test_time_plan_counts_from_the_jobs_start() -> None:
    plan = plan_time(10, time.time() - 4, BudgetSettings())
    left = plan.research_deadline - time.monotonic()
    assert 3.4 < left <= 3.5 + 0.1  # 7.5 s of research, 4 s gone
    assert plan.final_deadline - plan.forced_deadline == pytest.approx(1.5)
    assert plan.forced_timeout(grace=20) == pytest.approx(plan.forced_deadline - time.monotonic(), abs=0.05)
    assert plan.forced_timeout(grace=0.5) == 0.5


def test_reservations_are_kept_from_research() -> None:
    budget = TokenBudget.plan(5000, 0, {0, 1}, synthesis=True, cfg=CFG)
    assert budget.reserved == 2 * 1000 + 2000
    assert budget.free == 1000
    hold = budget.hold("research", PROMPT)
    assert hold is not None and hold.max_tokens == 400 and budget.free == 1000 - P - 400
    second = budget.hold("research", PROMPT)
    assert second is not None and second.max_tokens == 1000 - 2 * P - 400
    # Nothing is left for a third call: it is refused rather than allowed to overshoot.
    assert budget.hold("research", PROMPT) is None
    assert budget.exhausted
    budget.settle(hold, Usage(prompt_tokens=P - 8, completion_tokens=100))
    budget.settle(second, Usage(prompt_tokens=P - 8, completion_tokens=50))
    assert budget.used == 2 * (P - 8) + 150 and budget.held == 0


def test_a_forced_round_spends_its_own_reservation_and_the_synthesis_its_own() -> None:
    budget = TokenBudget.plan(5000, 1000, {0, 1}, synthesis=True, cfg=CFG)
    assert budget.free == 0
    assert budget.hold("research", PROMPT) is None
    forced = budget.hold("forced", PROMPT, agent=0)
    assert forced is not None and forced.max_tokens == 300
    budget.settle(forced, Usage(prompt_tokens=P, completion_tokens=300))
    budget.release_agent(1)  # answered on its own: its reservation goes back to the pool
    synthesis = budget.hold("synthesis", PROMPT)
    assert synthesis is not None and synthesis.max_tokens == 500
    budget.settle(synthesis, Usage(prompt_tokens=P, completion_tokens=500))
    assert budget.used <= 5000


def test_an_abandoned_call_counts_its_whole_hold() -> None:
    budget = TokenBudget.plan(5000, 0, {0}, synthesis=False, cfg=CFG)
    hold = budget.hold("research", PROMPT)
    assert hold is not None
    budget.abandon(hold)
    assert budget.used == hold.amount and budget.held == 0


def test_unlimited_budget_holds_nothing_and_caps_nothing() -> None:
    budget = TokenBudget.plan(None, 0, {0}, synthesis=True, cfg=CFG)
    hold = budget.hold("research", PROMPT)
    assert hold is not None and hold.max_tokens is None
    assert not budget.exhausted and budget.free is None


def test_budget_problems_name_the_least_that_would_do() -> None:
    assert budget_problems(2, 2 * 1000 + 2000 + 2 * 500, None, CFG) == []
    [(field, why)] = budget_problems(2, 4999, None, CFG)
    assert field == "max_tokens" and "at least 5000" in why
    assert budget_problems(1, 1500, None, CFG) == []  # one agent: no synthesis to reserve for
    [(field, why)] = budget_problems(1, None, 1.3, BudgetSettings())
    assert field == "max_seconds" and "at least 1.34" in why
    assert budget_problems(1, None, 1.34, BudgetSettings()) == []


def test_a_reservation_smaller_than_its_completion_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="forced_completion_tokens"):
        BudgetSettings(forced_round_tokens=100, forced_completion_tokens=200)
