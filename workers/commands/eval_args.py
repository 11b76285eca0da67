"""The arguments of `heavyresearch eval` (kept apart so that building the parser stays cheap)."""

from __future__ import annotations

import argparse
from pathlib import Path

SAMPLE_DATASET = "sample"
MODES = ("heavy", "react")
DEFAULT_MODE = "heavy"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate on a dataset (Avg Pass@k, Best Pass@1, Pass@k); `eval report OUTDIR` prints scores",
        description=(
            "eval [DATASET] runs every question k times and judges the answers; re-running the same "
            "command resumes. eval report OUTDIR prints the scores of a run and charts a sweep."
        ),
    )
    ev.add_argument(
        "dataset",
        nargs="?",
        default=SAMPLE_DATASET,
        help="a .jsonl/.json/.csv with question and answer (default: the bundled sample), or `report`",
    )
    ev.add_argument("outdir_arg", nargs="?", metavar="OUTDIR", help="with `report`: the run's folder")
    ev.add_argument("--out", type=Path, default=None, help="output folder (default: eval-runs/<dataset>)")
    ev.add_argument("--server", default=None, help="run on a service at this URL instead of in-process")
    ev.add_argument("--api-key", default=None, help="bearer token for --server")
    ev.add_argument("--rollouts", type=int, default=None, help="rollouts per question (default 3)")
    ev.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
    ev.add_argument("--agents", default=None, help="agents per job, or a sweep: 1,2,4,8")
    ev.add_argument("--max-rounds", default=None, help="round limit per agent, or a sweep: 16,32")
    ev.add_argument("--max-seconds", type=float, default=None, help="time budget per job")
    ev.add_argument("--concurrency", type=int, default=None, help="rollouts in flight at once")
    ev.add_argument("--scorer", choices=("llm", "exact", "normalized"), default=None)
    ev.add_argument("--judge-prompt", default=None, help="browsecomp, hle, or a template file")
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument("--no-progress", action="store_true", help="no live progress bar")
