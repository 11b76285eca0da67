"""`heavyresearch eval report OUTDIR`: the scores of every configuration of a run, as a table
for the terminal and in Markdown (`OUTDIR/report.md`, `OUTDIR/scores.json`), and for a sweep
the accuracy chart (`OUTDIR/scaling.png`, see `workers.eval.chart`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from workers.eval.judge import JudgeCache, Verdict, cache_key
from workers.eval.records import JUDGEMENTS_FILE, RUN_FILE, RolloutRecord, load_records, rollout_files
from workers.eval.scores import ConfigScores, score_config


def simulated_note(research: bool, judge: bool) -> str | None:
    """What the simulated model stood in for, or None when it played no part."""
    parts = [name for name, played in (("research", research), ("judge", judge)) if played]
    if not parts:
        return None
    return (
        f"SIMULATED: the {' and the '.join(parts)} of these scores come from the simulated model, "
        "a deterministic stand-in for tests and demos, not from an LLM."
    )


COLUMNS = (
    ("config", "config"),
    ("questions", "Q"),
    ("rollouts", "k"),
    ("avg_pass_at_k", "Avg Pass@k"),
    ("best_pass_at_1", "Best Pass@1"),
    ("pass_at_k", "Pass@k"),
    ("tokens_per_question", "tokens/q"),
    ("rounds_per_question", "rounds/q"),
    ("tool_calls_per_question", "tool calls/q"),
    ("wall_seconds_per_question", "wall s/q"),
    ("forced_share", "forced"),
    ("format_recovery_share", "format rec."),
    ("errors", "errors"),
    ("unjudged", "unjudged"),
)
_PERCENT = {"avg_pass_at_k", "best_pass_at_1", "pass_at_k", "forced_share", "format_recovery_share"}


def read_run(outdir: Path) -> dict[str, Any]:
    path = outdir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{outdir} holds no evaluation run ({RUN_FILE} is missing)")
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def compute_scores(outdir: Path) -> list[ConfigScores]:
    run = read_run(outdir)
    scorer = str(run.get("scorer", ""))
    cache = JudgeCache(outdir / JUDGEMENTS_FILE)
    order = [c["name"] for c in run.get("configs", []) if isinstance(c, dict)]
    files = rollout_files(outdir)
    out = []
    for config in sorted(files, key=lambda c: (order.index(c) if c in order else len(order), c)):
        scored: dict[int, dict[str, tuple[RolloutRecord, Verdict | None]]] = {}
        for rollout, path in files[config].items():
            scored[rollout] = {
                item: (
                    record,
                    cache.get(cache_key(scorer, record.question, record.answer, record.prediction)),
                )
                for item, record in load_records(path).items()
            }
        out.append(score_config(config, scored, int(run.get("rollouts", 0)) or None))
    return out


def _cell(field: str, scores: ConfigScores) -> str:
    value = getattr(scores, field)
    if field in _PERCENT:
        return f"{100 * value:.1f}%"
    if field == "tokens_per_question":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.1f}" if field != "wall_seconds_per_question" else f"{value:.2f}"
    return str(value)


# The terminal shows two tables, accuracy then cost per question, so each fits 80 columns.
_SPLIT = 6
_SHORT = {
    "tokens/q": "tokens",
    "rounds/q": "rounds",
    "tool calls/q": "tools",
    "wall s/q": "wall s",
    "format rec.": "fmt rec",
    "unjudged": "unjudg.",
}


def terminal_tables(scores: list[ConfigScores], title: str) -> list[Table]:
    tables = []
    for name, columns in ((title, COLUMNS[:_SPLIT]), ("per question", (COLUMNS[0], *COLUMNS[_SPLIT:]))):
        table = Table(title=name, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        for _, header in columns:
            if header == "config":
                table.add_column(
                    header, no_wrap=True, min_width=max((len(r.config) for r in scores), default=6)
                )
            else:
                table.add_column(_SHORT.get(header, header), justify="right")
        for row in scores:
            table.add_row(*(_cell(field, row) for field, _ in columns))
        tables.append(table)
    return tables


def markdown_table(scores: list[ConfigScores]) -> str:
    lines = [
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "|".join("---" if f == "config" else "---:" for f, _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(f, row) for f, _ in COLUMNS) + " |" for row in scores]
    return "\n".join(lines)


def markdown_report(run: dict[str, Any], scores: list[ConfigScores], chart: str | None) -> str:
    parts = [
        "# Evaluation report",
        "",
        f"Dataset `{run.get('dataset', '?')}`, scorer `{run.get('scorer', '?')}`.",
        "Avg Pass@k is the mean accuracy of one rollout, Best Pass@1 the best single rollout, "
        "Pass@k the share of questions some rollout got right. Per question: tokens, rounds "
        "(summed over agents), tool calls and wall time; forced = rollouts with an agent forced "
        "to answer, format rec. = rollouts with a recovered format error.",
        "",
        markdown_table(scores),
    ]
    note = simulated_note(
        any(s.simulated for s in scores) or bool(run.get("simulated")), any(s.judge_simulated for s in scores)
    )
    if note:
        parts += ["", f"**{note}**"]
    if chart:
        parts += ["", f"![accuracy against agents and rounds]({chart})"]
    return "\n".join(parts) + "\n"
