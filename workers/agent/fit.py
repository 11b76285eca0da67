"""Trimming a workspace that does not fit the model's context window.

IterResearch keeps the prompt bounded, but a small model's window (2,048 tokens) is smaller than
one long observation. When the LLM client says a prompt must shrink to so many characters
(`ContextOverflow.prompt_chars`), the workspace loses, in this order: the tail of the last
observation (the oldest evidence is already in the report), then the report's oldest parts
(its first paragraphs; a rewritten report keeps its newest findings and plan at the end). A note
tells the model what was cut, so it does not take the cut for the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kept of an observation however tight the window: less than this says nothing.
_MIN_OBSERVATION = 200
# Room for the notes themselves.
_NOTE_CHARS = 260


@dataclass(frozen=True)
class Trimmed:
    report: str
    observation: str
    cut_observation: int  # characters cut
    cut_report: int

    @property
    def cut(self) -> bool:
        return bool(self.cut_observation or self.cut_report)


def trim_workspace(report: str, observation: str, excess: int) -> Trimmed:
    """Cut `excess` characters (plus room for the notes) from the observation, then the report."""
    if excess <= 0:
        return Trimmed(report, observation, 0, 0)
    need = excess + _NOTE_CHARS
    spare = max(0, len(observation) - _MIN_OBSERVATION)
    cut_obs = min(spare, need)
    need -= cut_obs
    cut_rep = min(len(report), need)
    need -= cut_rep
    if need > 0:
        # Even the minimum observation is too much.
        extra = min(len(observation) - cut_obs, need)
        cut_obs += extra
    new_obs = observation[: len(observation) - cut_obs] if cut_obs else observation
    new_rep = _drop_oldest(report, cut_rep) if cut_rep else report
    if cut_obs:
        new_obs += (
            f"\n[Trimmed to fit the model's context: {cut_obs} characters of this observation were cut.]"
        )
    if cut_rep:
        new_rep = (
            f"[Trimmed to fit the model's context: the oldest {cut_rep} characters of this report were "
            "cut; keep the report shorter.]\n" + new_rep
        )
    return Trimmed(new_rep, new_obs, cut_obs, cut_rep)


def _drop_oldest(report: str, chars: int) -> str:
    """The report without its first `chars` characters, cut at a line break where one is near."""
    rest = report[chars:]
    newline = rest.find("\n")
    if 0 <= newline < 200:
        rest = rest[newline + 1 :]
    return rest


def trim_reports(reports: list[str], excess: int) -> list[str]:
    """Synthesis' counterpart: every agent report gives up its share, oldest parts first."""
    if excess <= 0 or not reports:
        return reports
    total = sum(len(r) for r in reports) or 1
    out = []
    for report in reports:
        share = -(-(excess + _NOTE_CHARS) * len(report) // total)
        if share <= 0:
            out.append(report)
            continue
        kept = _drop_oldest(report, min(share, len(report)))
        out.append(f"[Trimmed to fit the model's context: the oldest {share} characters were cut.]\n{kept}")
    return out
