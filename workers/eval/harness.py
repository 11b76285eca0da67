"""The evaluation loop: every (configuration, rollout, question) not finished yet is researched,
recorded and judged, under one concurrency cap.

Resuming is the default: a rollout with a finished record is not researched again, and a
prediction with a cached verdict is not judged again. A failed job is recorded with its error
(so the scores count it as wrong) and is run again by the next invocation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from workers.commands.eval_args import DEFAULT_MODE
from workers.errors import HeavyResearchError
from workers.eval.dataset import Dataset, EvalItem
from workers.eval.judge import JudgeCache, Scorer, Verdict, cache_key
from workers.eval.records import (
    JUDGEMENTS_FILE,
    RUN_FILE,
    RolloutRecord,
    RolloutTimings,
    RunConfig,
    append_jsonl,
    load_records,
    rollout_path,
)
from workers.eval.research import ResearchClient, job_stats

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """What one invocation did: the test of resuming, and the closing line of the command."""

    total: int = 0  # rollouts the run covers (configurations x rollouts x questions)
    done: int = 0  # of them, recorded and judged (by this run or an earlier one)
    skipped: int = 0  # already finished by an earlier run
    researched: int = 0
    failed: int = 0
    judged: int = 0  # verdicts asked of the scorer (cache misses)
    cached: int = 0  # verdicts taken from the cache
    correct: int = 0
    scored: int = 0
    tokens: int = 0


@dataclass
class Task:
    config: RunConfig
    rollout: int
    item: EvalItem
    record: RolloutRecord | None = None  # set when only the judging is left
    failed_job: str | None = None  # the job of an earlier failed attempt, run again now


ProgressCallback = Callable[[Tally], None]


@dataclass
class EvalRun:
    dataset: Dataset
    outdir: Path
    configs: list[RunConfig]
    rollouts: int
    research: ResearchClient
    scorer: Scorer
    concurrency: int
    max_seconds: float | None = None  # each job's time budget (it then answers from its reports)
    on_progress: ProgressCallback = lambda _: None
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        self.cache = JudgeCache(self.outdir / JUDGEMENTS_FILE)
        # Verdicts being asked for: rollouts with the same prediction wait for the first call.
        self._pending: dict[str, anyio.Event] = {}

    def plan(self) -> list[Task]:
        tasks: list[Task] = []
        for config in self.configs:
            for rollout in range(1, self.rollouts + 1):
                done = load_records(rollout_path(self.outdir, config.name, rollout))
                for item in self.dataset.items:
                    self.tally.total += 1
                    record = done.get(item.id)
                    if record is None or record.error is not None:
                        tasks.append(
                            Task(config, rollout, item, failed_job=record.job_id if record else None)
                        )
                        continue
                    self.tally.skipped += 1
                    verdict = self.cache.get(self._key(record))
                    if verdict is None:
                        tasks.append(Task(config, rollout, item, record))
                    else:
                        self._count(record, verdict)
        return tasks

    async def run(self) -> Tally:
        self._write_run_file()
        tasks = self.plan()
        self.tally.done = self.tally.total - len(tasks)
        self.on_progress(self.tally)
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def one(task: Task) -> None:
            async with limiter:
                record = task.record or await self._research(task)
                verdict = await self._judge(record)
                self._count(record, verdict)
                self.tally.done += 1
                self.on_progress(self.tally)

        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
        return self.tally

    def _key(self, record: RolloutRecord) -> str:
        return cache_key(self.scorer.name, record.question, record.answer, record.prediction)

    def _count(self, record: RolloutRecord, verdict: Verdict | None) -> None:
        if record.error is None and verdict is not None and verdict.error is None:
            self.tally.scored += 1
            self.tally.correct += verdict.correct
        self.tally.tokens += record.usage.total_tokens

    def body(self, task: Task) -> dict[str, Any]:
        item, config = task.item, task.config
        query = item.question
        if item.files:
            # No upload route yet: the files are named in the question and the metadata.
            query += "\n\nAttached files: " + ", ".join(Path(f).name for f in item.files)
        body: dict[str, Any] = {
            "query": query,
            "agents": config.agents,
            "max_rounds": config.max_rounds,
            "metadata": {"eval": {"item": item.id, "rollout": task.rollout, "config": config.name}},
        }
        if item.files:
            body["metadata"]["files"] = list(item.files)
        if self.max_seconds is not None:
            body["max_seconds"] = self.max_seconds
        if config.mode != DEFAULT_MODE:
            body["mode"] = config.mode
        return body

    def _rollout_key(self, task: Task) -> str:
        # A retry of a failed job needs a key of its own, or the service would hand back the
        # failed job; a refusal made no job, so its key is safe to use again.
        raw = json.dumps(
            [str(self.outdir.resolve()), task.config.name, task.rollout, task.item.id, task.failed_job]
        )
        return "eval-" + hashlib.sha256(raw.encode()).hexdigest()[:32]

    async def _research(self, task: Task) -> RolloutRecord:
        item, config = task.item, task.config
        base: dict[str, Any] = {
            "question": item.question,
            "answer": item.answer,
            "id": item.id,
            "rollout": task.rollout,
            "config": config.name,
            "mode": config.mode,
            "agents": config.agents,
            "max_rounds": config.max_rounds,
            "files": list(item.files),
        }
        started = time.time()
        try:
            outcome = await self.research.run(self.body(task), self._rollout_key(task))
        except (HeavyResearchError, httpx.HTTPError, OSError, ValueError) as exc:
            # A refused or lost job is recorded as failed; it must not stop the run.
            log.warning("%s rollout %d item %s: %s", config.name, task.rollout, item.id, exc)
            record = RolloutRecord(**base, prediction="[Failed]", termination="error", error=str(exc))
            self.tally.failed += 1
        else:
            stats = job_stats(outcome.job)
            job_seconds = stats.pop("job_seconds")
            record = RolloutRecord(
                **base,
                **stats,
                timings=RolloutTimings(
                    submitted_at=outcome.submitted_at,
                    finished_at=outcome.finished_at,
                    wall_seconds=round(outcome.finished_at - started, 3),
                    job_seconds=job_seconds,
                ),
                tool_calls=outcome.tool_calls,
            )
            if not record.messages:
                # The released record's transcript shape, so its statistics scripts still read
                # it: messages[1] is the question and the last message holds <answer>.
                record.messages = [
                    {"role": "system", "content": f"heavyresearch {config.mode} job {record.job_id}"},
                    {"role": "user", "content": item.question},
                    {"role": "assistant", "content": f"<answer>{record.prediction}</answer>"},
                ]
            if record.error is not None:
                self.tally.failed += 1
            self.tally.researched += 1
        append_jsonl(rollout_path(self.outdir, config.name, task.rollout), record)
        return record

    async def _judge(self, record: RolloutRecord) -> Verdict | None:
        if record.error is not None:
            return None
        key = self._key(record)
        while (pending := self._pending.get(key)) is not None:
            await pending.wait()
        verdict = self.cache.get(key)
        if verdict is not None:
            self.tally.cached += 1
            return verdict
        self._pending[key] = done = anyio.Event()
        try:
            verdict = await self.scorer.score(record.question, record.answer, record.prediction)
            self.tally.judged += 1
            self.cache.put(key, verdict)
        finally:
            del self._pending[key]
            done.set()
        return verdict

    def _write_run_file(self) -> None:
        path = self.outdir / RUN_FILE
        previous: dict[str, Any] = {}
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = {}
        configs = {c["name"]: c for c in previous.get("configs", []) if isinstance(c, dict) and "name" in c}
        for config in self.configs:
            configs[config.name] = {
                "name": config.name,
                "mode": config.mode,
                "agents": config.agents,
                "max_rounds": config.max_rounds,
            }
        run = {
            "dataset": str(self.dataset.path),
            "questions": len(self.dataset.items),
            "rollouts": max(self.rollouts, int(previous.get("rollouts", 0))),
            "scorer": self.scorer.name,
            "configs": list(configs.values()),
            "simulated": self.research.simulated or bool(previous.get("simulated")),
        }
        self.outdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
