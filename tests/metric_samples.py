"""This process's engine metrics as samples, and how one of them changed between two reads."""

from __future__ import annotations

from workers.metrics import engine_metrics


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in engine_metrics().registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    """Change of one metric, summed over the samples whose labels include `labels`."""
    total = 0.0
    for (sample, sample_labels), value in after.items():
        if sample == name and set(labels.items()) <= set(sample_labels):
            total += value - before.get((sample, sample_labels), 0.0)
    return total
