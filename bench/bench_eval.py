"""Evaluation throughput: eval items (one rollout of one question, researched and judged) per
minute that `heavyresearch eval` sustains with Heavy n = 4, on the SIMULATED model process
(`heavyresearch sim-llm --latency L`; it also plays the judge), in two set-ups:

- in-process: the harness and the engine in this process (memory backend, `concurrency` job
  slots), as `heavyresearch eval DATASET` runs;
- service: the harness here, the jobs on a Redis deployment of 1 API + 2 worker processes
  (`--max-jobs` slots each), as `heavyresearch eval DATASET --server URL` runs.

The dataset is made of the mini corpus: one question per document ("What is <title>?"). Every
item is a fresh job (a new output folder per set-up), so nothing comes from the resume path or
the judge cache. The clock runs from the first submission to the last verdict.

Usage: python bench/bench_eval.py [--items 48] [--concurrency 16] [--latency 0.2]
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from bench._common import MINI_CORPUS, corpus_file, settings_for, sim_process
from tests.procs import Cluster
from tests.redis_server import RedisServer
from workers.engine import open_engine
from workers.eval.dataset import load_dataset
from workers.eval.harness import EvalRun, Tally
from workers.eval.judge import LLMJudge
from workers.eval.records import RunConfig, load_records
from workers.eval.research import LocalResearch, RemoteResearch, ResearchClient
from workers.llm import OpenAIChatModel
from workers.settings import SIMULATED_MODEL_ID, LLMSettings


def write_dataset(path: Path, items: int) -> Path:
    titles = [json.loads(line)["title"] for line in MINI_CORPUS.read_text().splitlines() if line.strip()]
    rows = []
    for i in range(items):
        title = titles[i % len(titles)]
        suffix = "" if i < len(titles) else f" (variant {i // len(titles)})"
        rows.append({"question": f"What is {title}?{suffix}", "answer": title})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def evaluate(
    research: ResearchClient, dataset: Path, outdir: Path, sim_url: str, args: argparse.Namespace
) -> tuple[Tally, float]:
    judge_llm = LLMSettings(base_url=f"{sim_url}/v1", model=SIMULATED_MODEL_ID, stream=False)
    async with OpenAIChatModel.from_settings(judge_llm) as model:
        judge = LLMJudge(model, SIMULATED_MODEL_ID, "browsecomp", attempts=3, max_tokens=512, simulated=True)
        run = EvalRun(
            dataset=load_dataset(dataset),
            outdir=outdir,
            configs=[RunConfig("heavy", args.agents, args.max_rounds)],
            rollouts=1,
            research=research,
            scorer=judge,
            concurrency=args.concurrency,
        )
        started = time.monotonic()
        tally = await run.run()
        return tally, time.monotonic() - started


async def in_process(
    corpus: Path, sim_url: str, dataset: Path, outdir: Path, args: argparse.Namespace
) -> tuple[Tally, float]:
    settings = settings_for(corpus, sim_url)
    settings = settings.model_copy(
        update={
            "worker": settings.worker.model_copy(update={"max_jobs": args.concurrency}),
            "llm": settings.llm.model_copy(update={"max_concurrency": 100000}),
        }
    )
    async with open_engine(settings, run_worker=True) as engine:
        return await evaluate(LocalResearch(engine.backend, simulated=True), dataset, outdir, sim_url, args)


async def on_service(
    base_url: str, sim_url: str, dataset: Path, outdir: Path, args: argparse.Namespace
) -> tuple[Tally, float]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=None), trust_env=False) as client:
        return await evaluate(
            RemoteResearch(client, base_url, simulated=True), dataset, outdir, sim_url, args
        )


def show(name: str, tally: Tally, seconds: float, outdir: Path) -> None:
    records = [r for path in outdir.glob("*/iter*.jsonl") for r in load_records(path).values()]
    walls = [r.timings.wall_seconds for r in records if r.timings]
    jobs = [r.timings.job_seconds for r in records if r.timings and r.timings.job_seconds is not None]
    print(
        f"{name:<36} {tally.researched / seconds * 60:7.1f} items/min "
        f"({tally.researched} items in {seconds:.1f} s; {tally.failed} failed; "
        f"{tally.judged} judge calls; accuracy {tally.correct}/{tally.scored}) | per item: "
        f"submit to end {statistics.mean(walls):.2f} s, job start to end {statistics.mean(jobs):.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=48, help="questions (one rollout each)")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--max-rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16, help="rollouts in flight")
    parser.add_argument("--max-jobs", type=int, default=8, help="jobs per worker process (service)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated seconds per model call")
    parser.add_argument(
        "--no-aof", action="store_true", help="Redis without AOF (default: AOF, fsync always, as shipped)"
    )
    args = parser.parse_args()
    if not (shutil.which("redis-server") or shutil.which("valkey-server")):
        print("redis-server is not installed (apt-get install redis-server); it is needed here")
        return 1
    print(
        f"SIMULATED model (research and judge), {args.latency:g} s per call; Heavy n = {args.agents}, "
        f"max {args.max_rounds} rounds; {args.items} items, 1 rollout each; {args.concurrency} in flight"
    )
    with tempfile.TemporaryDirectory(prefix="hr-bench-eval-") as folder, corpus_file() as corpus:
        tmp = Path(folder)
        dataset = write_dataset(tmp / "dataset.jsonl", args.items)
        with sim_process("--latency", str(args.latency)) as sim_url:
            tally, seconds = anyio.run(in_process, corpus, sim_url, dataset, tmp / "local", args)
            show("in-process (memory backend)", tally, seconds, tmp / "local")
            local_rate = tally.researched / seconds * 60

            redis = RedisServer(tmp / "redis", appendonly=not args.no_aof)
            redis.start()
            cluster = Cluster(
                tmp / "cluster",
                redis.url,
                corpus,
                f"{sim_url}/v1",
                heartbeat=5.0,
                lease=30.0,
                env={
                    "HR_WORKER__MAX_JOBS": str(args.max_jobs),
                    "HR_LLM__MAX_CONCURRENCY": "100000",
                },
            )
            try:
                (api,) = cluster.start_apis(1)
                cluster.start_workers(2)
                tally, seconds = anyio.run(on_service, api.base_url, sim_url, dataset, tmp / "remote", args)
                show("service: redis, 1 API + 2 workers", tally, seconds, tmp / "remote")
                print(f"ratio service / in-process: x{tally.researched / seconds * 60 / local_rate:.2f}")
            finally:
                cluster.stop()
                redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
