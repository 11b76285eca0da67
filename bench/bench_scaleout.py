"""Scale-out benchmark: the Redis deployment (1 API process + 2 worker processes) against the
embedded one (one `heavyresearch serve` process, memory backend, engine in-process), on the
same SIMULATED model process (`heavyresearch sim-llm --latency 1`: 1 s per model call).

Each deployment gets the same closed-loop load: `--concurrency` clients, each submitting a
4-agent job, streaming its events over SSE until the terminal one, and submitting the next.
After a warm-up, for `--window` seconds, it counts the jobs that succeeded (jobs per minute) and
the delay from each event's `ts` (stamped when it is appended to the log, by whichever process
runs the job) to its arrival at the SSE client. It prints both deployments' figures and the
ratios redis / memory.

Both use the same per-process settings (`--max-jobs` jobs per engine process, the default 8), so
the Redis deployment has twice the job slots; the LLM concurrency cap is lifted so that it is
not what gets measured. Redis runs as docker-compose.yml ships it: AOF, fsync on every write.
Everything shares this machine's cores (the benchmark client too).

Usage: python bench/bench_scaleout.py [--concurrency 24] [--window 40] [--warmup 10]
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from bench._common import corpus_file, sim_process
from tests.procs import ApiProcess, Cluster
from tests.redis_server import RedisServer

QUESTIONS = [
    "What is the tallest mountain in Valdoria?",
    "Who founded the city of Aldmere?",
    "Which river runs through Merrowgate?",
    "What is the Amber Sea named after?",
]
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled"}


@dataclass
class Figures:
    name: str
    window: float
    succeeded: int = 0
    errors: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)
    queue_waits: list[float] = field(default_factory=list)

    @property
    def jobs_per_minute(self) -> float:
        return self.succeeded / self.window * 60

    def p(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def new_client(base_url: str) -> httpx.AsyncClient:
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them.
    limits = httpx.Limits(max_keepalive_connections=4, keepalive_expiry=2.0)
    return httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(60.0, read=None), limits=limits, trust_env=False
    )


async def one_job(
    client: httpx.AsyncClient, index: int, agents: int, measure_from: float, figures: Figures
) -> None:
    """Submit one job and follow its events to the end; record what falls in the window."""
    response = await client.post(
        "/v1/research", json={"query": QUESTIONS[index % len(QUESTIONS)], "agents": agents}
    )
    if response.status_code != 202:
        figures.errors.append(f"POST: HTTP {response.status_code}: {response.text[:200]}")
        await anyio.sleep(1.0)
        return
    job_id = response.json()["id"]
    opened = time.time()
    terminal: dict[str, object] | None = None
    queued = started = None
    async with client.stream(
        "GET", f"/v1/research/{job_id}/events", headers={"Accept": "text/event-stream"}
    ) as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            arrived = time.time()
            event = json.loads(line[5:])
            if event["ts"] >= opened and time.monotonic() >= measure_from:
                figures.delays.append(arrived - event["ts"])
            if event["type"] == "job.queued":
                queued = event["ts"]
            elif event["type"] == "job.started":
                started = event["ts"]
            elif event["type"] in ("agent.failed", "job.failed"):
                figures.errors.append(f"{job_id}: {event['type']} {event['data']}")
            if event["type"] in TERMINAL:
                terminal = event
                break
    if terminal is None:
        figures.errors.append(f"{job_id}: the stream ended before the job did")
    elif terminal["type"] == "job.succeeded" and time.monotonic() >= measure_from:
        figures.succeeded += 1
        if queued is not None and started is not None:
            figures.queue_waits.append(float(started) - float(queued))
            figures.run_times.append(float(str(terminal["ts"])) - float(started))


async def load(base_url: str, name: str, args: argparse.Namespace) -> Figures:
    figures = Figures(name, args.window)
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = measure_from + args.window

    async def client_loop(index: int) -> None:
        with anyio.move_on_after(stop_at - time.monotonic()):
            async with new_client(base_url) as client:
                job = index
                while True:
                    try:
                        await one_job(client, job, args.agents, measure_from, figures)
                    except httpx.HTTPError as exc:
                        figures.errors.append(f"{type(exc).__name__}: {exc}")
                        await anyio.sleep(1.0)
                    job += args.concurrency

    async with anyio.create_task_group() as tg:
        for index in range(args.concurrency):
            tg.start_soon(client_loop, index)
    return figures


def show(figures: Figures) -> None:
    ms = [d * 1000 for d in figures.delays]
    print(
        f"{figures.name:<34} {figures.jobs_per_minute:7.1f} jobs/min"
        f" ({figures.succeeded} in {figures.window:.0f} s)"
        f" | event→client p50 {figures.p(ms, 50):6.1f} ms p99 {figures.p(ms, 99):7.1f} ms ({len(ms)} events)"
        f" | job run p50 {figures.p(figures.run_times, 50):5.2f} s"
        f" | queue wait p50 {figures.p(figures.queue_waits, 50):5.2f} s"
        f" | errors {len(figures.errors)}"
    )
    for line in figures.errors[:5]:
        print(f"    ! {line}")


def common_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "HR_WORKER__MAX_JOBS": str(args.max_jobs),
        "HR_SERVER__MAX_QUEUED_JOBS": "100000",
        # The shared LLM cap would otherwise be what is measured, not the deployment.
        "HR_LLM__MAX_CONCURRENCY": "100000",
    }


def run_redis(tmp: Path, corpus: Path, sim_url: str, args: argparse.Namespace) -> Figures:
    redis = RedisServer(tmp / "redis", appendonly=True)
    redis.start()
    cluster = Cluster(
        tmp / "redis-cluster",
        redis.url,
        corpus,
        f"{sim_url}/v1",
        heartbeat=5.0,
        lease=30.0,
        env=common_env(args),
    )
    try:
        (api,) = cluster.start_apis(1)
        cluster.start_workers(2)
        return anyio.run(load, api.base_url, "redis: 1 API + 2 worker processes", args)
    finally:
        cluster.stop()
        redis.stop()


def run_memory(tmp: Path, corpus: Path, sim_url: str, args: argparse.Namespace) -> Figures:
    cluster = Cluster(
        tmp / "memory",
        "redis://unused",
        corpus,
        f"{sim_url}/v1",
        heartbeat=5.0,
        lease=30.0,
        env={**common_env(args), "HR_BACKEND": "memory"},
    )
    try:
        api: ApiProcess = cluster.start_apis(1)[0]
        return anyio.run(load, api.base_url, "memory: 1 serve process", args)
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=24, help="clients, each with one job in flight")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per model call")
    parser.add_argument(
        "--max-jobs", type=int, default=8, help="jobs per engine process (HR_WORKER__MAX_JOBS)"
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=40.0, help="seconds measured per deployment")
    args = parser.parse_args()
    if not (shutil.which("redis-server") or shutil.which("valkey-server")):
        print("redis-server is not installed (apt-get install redis-server); it is needed here")
        return 1

    print(
        f"SIMULATED model, {args.latency:g} s per call; {args.agents}-agent jobs; {args.concurrency} clients "
        f"with one job in flight each; {args.max_jobs} jobs per engine process; "
        f"{args.warmup:g} s warm-up, then {args.window:g} s measured"
    )
    with tempfile.TemporaryDirectory(prefix="hr-bench-scaleout-") as folder, corpus_file() as corpus:
        tmp = Path(folder)
        with sim_process("--latency", str(args.latency)) as sim_url:
            redis = run_redis(tmp, corpus, sim_url, args)
            show(redis)
            memory = run_memory(tmp, corpus, sim_url, args)
            show(memory)
    p99 = redis.p([d * 1000 for d in redis.delays], 99) / memory.p([d * 1000 for d in memory.delays], 99)
    throughput = redis.jobs_per_minute / memory.jobs_per_minute if memory.jobs_per_minute else float("nan")
    print(f"ratio redis / memory: jobs per minute x{throughput:.2f}, p99 event delay x{p99:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
