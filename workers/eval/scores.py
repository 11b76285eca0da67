"""The seed's scores over k rollouts, as the released evaluation computes them.

For Q questions and k rollouts, with c[r] the questions rollout r got right:

    Avg Pass@k  = mean over r of c[r] / Q       (the mean accuracy of one rollout)
    Best Pass@1 = max over r of c[r] / Q        (the best single rollout)
    Pass@k      = share of questions that at least one rollout got right

Q counts every question with a record in any rollout; a missing record, a failed job or an
unjudged prediction counts as wrong, so an incomplete run can only look worse, never better.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import mean

from pydantic import BaseModel

from workers.eval.judge import Verdict
from workers.eval.records import RolloutRecord

# rollout -> item id -> (record, its verdict or None when not judged)
Scored = Mapping[int, Mapping[str, tuple[RolloutRecord, Verdict | None]]]


class ConfigScores(BaseModel):
    config: str
    mode: str = ""
    agents: int = 0
    max_rounds: int = 0
    questions: int
    rollouts: int
    records: int
    avg_pass_at_k: float
    best_pass_at_1: float
    pass_at_k: float
    per_rollout: dict[int, float]
    tokens_per_question: float
    rounds_per_question: float
    tool_calls_per_question: float
    wall_seconds_per_question: float
    forced_share: float
    format_recovery_share: float
    errors: int
    unjudged: int
    simulated: bool  # the research ran on the simulated model
    judge_simulated: bool = False  # the simulated model gave the verdicts


def _right(pair: tuple[RolloutRecord, Verdict | None] | None) -> bool:
    if pair is None:
        return False
    record, verdict = pair
    return record.error is None and verdict is not None and verdict.correct


def score_config(config: str, scored: Scored, rollouts: int | None = None) -> ConfigScores:
    k = rollouts or max(scored, default=0)
    ids = sorted({item for by_item in scored.values() for item in by_item})
    questions = len(ids)
    per_rollout: dict[int, float] = {}
    for r in range(1, k + 1):
        by_item = scored.get(r, {})
        per_rollout[r] = sum(_right(by_item.get(i)) for i in ids) / questions if questions else 0.0
    any_right = sum(any(_right(scored.get(r, {}).get(i)) for r in range(1, k + 1)) for i in ids)
    records = [rec for by_item in scored.values() for rec, _ in by_item.values()]
    verdicts = [v for by_item in scored.values() for rec, v in by_item.values() if rec.error is None]

    def per(values: list[float]) -> float:
        return mean(values) if values else 0.0

    first = records[0] if records else None
    return ConfigScores(
        config=config,
        mode=first.mode if first else "",
        agents=first.agents if first else 0,
        max_rounds=first.max_rounds if first else 0,
        questions=questions,
        rollouts=k,
        records=len(records),
        avg_pass_at_k=per(list(per_rollout.values())),
        best_pass_at_1=max(per_rollout.values(), default=0.0),
        pass_at_k=any_right / questions if questions else 0.0,
        per_rollout=per_rollout,
        tokens_per_question=per([r.usage.total_tokens for r in records]),
        rounds_per_question=per([r.rounds for r in records]),
        tool_calls_per_question=per([r.tool_calls for r in records]),
        wall_seconds_per_question=per([r.timings.wall_seconds for r in records if r.timings]),
        forced_share=per([1.0 if r.forced_answers else 0.0 for r in records]),
        format_recovery_share=per([1.0 if r.usage.format_recoveries else 0.0 for r in records]),
        errors=sum(1 for r in records if r.error is not None),
        unjudged=sum(1 for v in verdicts if v is None or v.error is not None),
        simulated=any(r.simulated for r in records),
        judge_simulated=any(v is not None and v.simulated for v in verdicts),
    )
