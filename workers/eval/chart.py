"""The test-time-scaling chart of a sweep: accuracy against agents (or rounds), one line per
score, per mode.

matplotlib is an optional extra (`heavyresearch[charts]`): it is the standard for static charts,
renders headless (Agg) to PNG, and costs nothing to users who never chart. Without it the
report says how to get the chart and carries on with the tables.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workers.eval.scores import ConfigScores

CHART_FILE = "scaling.png"
MISSING = "no chart: matplotlib is not installed (pip install 'heavyresearch[charts]')"


def sweep_axis(scores: list[ConfigScores]) -> str | None:
    """ "agents" or "max_rounds" when the run varied it (within a mode), else None."""
    for axis in ("agents", "max_rounds"):
        for mode in {s.mode for s in scores}:
            if len({getattr(s, axis) for s in scores if s.mode == mode}) > 1:
                return axis
    return None


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_chart(scores: list[ConfigScores], outdir: Path, simulated: bool) -> Path | None:
    axis = sweep_axis(scores)
    if axis is None or not available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in sorted({s.mode for s in scores}):
        rows = sorted((s for s in scores if s.mode == mode), key=lambda s: getattr(s, axis))
        xs = [getattr(s, axis) for s in rows]
        for field, label, style in (
            ("pass_at_k", "Pass@k", ":"),
            ("best_pass_at_1", "Best Pass@1", "--"),
            ("avg_pass_at_k", "Avg Pass@k", "-"),
        ):
            ax.plot(xs, [100 * getattr(s, field) for s in rows], style, marker="o", label=f"{mode} {label}")
    ax.set_xscale("log", base=2)
    xs_all = sorted({getattr(s, axis) for s in scores})
    ax.set_xticks(xs_all, [str(x) for x in xs_all])
    ax.set_xlabel("parallel agents (n)" if axis == "agents" else "max rounds")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    title = "Accuracy vs " + ("agents" if axis == "agents" else "rounds")
    ax.set_title(title + (" — SIMULATED model" if simulated else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = outdir / CHART_FILE
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
