"""The evaluation's output folder and the per-rollout record.

    OUTDIR/
      run.json              what ran: dataset, scorer, the configurations of a sweep
      judgements.jsonl      the judge's cache: one verdict per (judge, question, answer, prediction)
      <config>/iter1.jsonl  one JSONL per rollout, one record per question (the released layout)
      <config>/iter2.jsonl  …

`<config>` names one point of a sweep, e.g. `heavy-n4-r32`. A record has the released runner's
fields (question, answer, prediction, termination, messages) plus ours. Re-running the same
command resumes: a record without `error` is finished and skipped; a failed one is run again
(its new record is appended, and the last record of an item wins).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
JUDGEMENTS_FILE = "judgements.jsonl"


class RolloutUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0
    format_recoveries: int = 0


class RolloutTimings(BaseModel):
    submitted_at: float
    finished_at: float
    wall_seconds: float  # submit to terminal event, as the harness saw it
    job_seconds: float | None = None  # the job's own start to finish, when the service says


class RolloutRecord(BaseModel):
    # The released runner's record.
    question: str
    answer: str
    prediction: str
    termination: str
    messages: list[dict[str, Any]] = Field(default_factory=list)
    # Heavy Mode has no single transcript: the agents' final reports and the synthesised one.
    reports: dict[str, str] = Field(default_factory=dict)
    report: str = ""
    # Ours.
    id: str
    rollout: int
    config: str
    mode: str
    agents: int
    max_rounds: int
    job_id: str | None = None
    status: str = ""
    usage: RolloutUsage = Field(default_factory=RolloutUsage)
    timings: RolloutTimings | None = None
    rounds: int = 0
    tool_calls: int = 0
    forced_answers: int = 0  # agents that were forced to answer (a budget or the round limit)
    files: list[str] = Field(default_factory=list)
    simulated: bool = False
    error: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """One point of a sweep."""

    mode: str
    agents: int
    max_rounds: int

    @property
    def name(self) -> str:
        return f"{self.mode}-n{self.agents}-r{self.max_rounds}"


def rollout_path(outdir: Path, config: str, rollout: int) -> Path:
    return outdir / config / f"iter{rollout}.jsonl"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects of a JSONL file; a torn or foreign line (an interrupted write) is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON (an interrupted write?); ignored", path, number)
                continue
            if isinstance(value, dict):
                yield number, value


def load_records(path: Path) -> dict[str, RolloutRecord]:
    """The last record of every item in one rollout file, by item id."""
    out: dict[str, RolloutRecord] = {}
    for number, value in read_jsonl(path):
        try:
            record = RolloutRecord.model_validate(value)
        except ValidationError as exc:
            log.warning("%s line %d is not a rollout record (%s); ignored", path, number, exc.errors()[0])
            continue
        out[record.id] = record
    return out


def append_jsonl(path: Path, value: BaseModel | dict[str, Any]) -> None:
    """One line, in one write: a killed process leaves whole lines (or one torn last line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value, ensure_ascii=False)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text + "\n")


def rollout_files(outdir: Path) -> dict[str, dict[int, Path]]:
    """Every `<config>/iter<k>.jsonl` under `outdir`, by config then rollout."""
    out: dict[str, dict[int, Path]] = {}
    for path in sorted(outdir.glob("*/iter*.jsonl")):
        number = path.stem.removeprefix("iter")
        if number.isdigit():
            out.setdefault(path.parent.name, {})[int(number)] = path
    return out
