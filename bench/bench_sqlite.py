"""The sqlite backend beside memory and Redis (issue 13). Prints figures; asserts nothing.

1. Engine, one process, all three backends in one run: CPU ms per agent-round against a
   zero-latency SIMULATED model in another process (5 jobs x 8 agents x 12 rounds), and the
   delay from each event's `ts` to its arrival at a `wait_events` reader in the same process
   (p50/p99). sqlite's database thread is in this process, so its CPU is counted; Redis'
   server is another process, so its CPU is printed beside it.
2. Database driver: 64 tasks appending 200 events each (the hot path), through the backend's
   dedicated thread with group commit, the same thread with one transaction per append, and
   the async driver `aiosqlite` (one thread per connection, one transaction per append) when
   it is importable (it is not a dependency: `uv pip install --target DIR aiosqlite` and
   `PYTHONPATH=DIR`).
3. Scale-out on one box: jobs per minute and event → SSE client delay with `serve` + 2
   `heavyresearch worker` processes on one sqlite file, beside 1 API + 2 workers on Redis (AOF,
   fsync always), on the same SIMULATED model process. `serve` on sqlite runs jobs too, so the
   job slots are split to give both deployments the same total (`--slots`).

Usage: python bench/bench_sqlite.py [--skip-scaleout] [--window 40] [--warmup 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench._common import corpus_file, settings_for, sim_process
from bench.bench_scaleout import Figures, common_env, load, show
from tests.procs import Cluster
from tests.redis_server import RedisServer
from workers.backend.sqlite import SQLiteBackend
from workers.engine import open_engine
from workers.events import Event, EventType, NewEvent
from workers.jobs import submit_job
from workers.models import JobRecord, ResearchRequest


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) another process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 1. the engine on each backend ----------------------------------------------------------------
async def run_job(engine: Any, request: ResearchRequest, delays: list[float]) -> list[Event]:
    record, _ = await submit_job(engine.backend, request, simulated=True)
    events: list[Event] = []
    while not (events and events[-1].type.terminal):
        batch = await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
        now = time.time()
        delays += [now - e.ts for e in batch]
        events += batch
    assert events[-1].type == EventType.job_succeeded, events[-1]
    return events


async def engine_on(kind: str, corpus: Path, sim: str, tmp: Path, redis: RedisServer | None) -> None:
    overrides: dict[str, Any] = {"backend": kind}
    if kind == "sqlite":
        overrides["sqlite"] = {"path": str(tmp / f"engine-{kind}.sqlite")}
    if kind == "redis":
        assert redis is not None
        overrides.update(redis_url=redis.url, redis_prefix=f"bench{os.getpid()}")
    settings = settings_for(corpus, sim, **overrides)
    async with open_engine(settings, run_worker=True) as engine:
        await run_job(engine, ResearchRequest(query="warm-up", agents=4, max_rounds=12), [])
        rounds = 0
        delays: list[float] = []
        server_cpu = process_cpu(redis.process.pid) if redis and redis.process else 0.0
        cpu = time.process_time()
        wall = time.perf_counter()
        for i in range(5):
            request = ResearchRequest(
                query=f"Which river flows through Valdoria? ({i})", agents=8, max_rounds=12
            )
            events = await run_job(engine, request, delays)
            rounds += sum(1 for e in events if e.type == EventType.round_started)
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        extra = ""
        if kind == "redis" and redis is not None and redis.process is not None:
            extra = f" + redis-server {1000 * (process_cpu(redis.process.pid) - server_cpu) / rounds:.2f}"
    ms = [d * 1000 for d in delays]
    print(
        f"  {kind:<7} {1000 * cpu / rounds:5.2f}{extra} CPU ms per agent-round"
        f" | event delay p50 {pct(ms, 50):5.1f} ms p99 {pct(ms, 99):6.1f} ms"
        f" | {rounds} agent-rounds in {wall:.1f} s"
    )


async def engines(tmp: Path) -> None:
    print("1. engine in one process, zero-latency SIMULATED model (5 jobs x 8 agents x 12 rounds):")
    redis = RedisServer(tmp / "redis-engine", appendonly=True) if shutil.which("redis-server") else None
    if redis is not None:
        redis.start()
    try:
        with corpus_file() as corpus, sim_process("--min-rounds", "12") as sim:
            for kind in ("memory", "sqlite", "redis"):
                if kind == "redis" and redis is None:
                    print("  redis   skipped: redis-server is not installed")
                    continue
                await engine_on(kind, corpus, sim, tmp, redis)
    finally:
        if redis is not None:
            redis.stop()


# -- 2. dedicated thread with group commit vs one transaction per call vs aiosqlite -------------
TASKS, APPENDS = 64, 200


async def appends_via_backend(path: Path, max_batch: int) -> tuple[float, float]:
    backend = SQLiteBackend(path)
    backend._db.max_batch = max_batch
    await backend.open()
    await backend.create_job(JobRecord(id="job_bench", request=ResearchRequest(query="q")))

    async def writer(w: int) -> None:
        for i in range(APPENDS):
            await backend.append_event("job_bench", NewEvent(type=EventType.usage, data={"w": w, "i": i}))

    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(TASKS):
            tg.start_soon(writer, w)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await backend.close()
    return wall, cpu


async def appends_via_aiosqlite(path: Path) -> tuple[float, float] | None:
    try:
        import aiosqlite  # type: ignore[import-not-found]
    except ImportError:
        return None
    from workers.backend.sqlite_schema import CONNECTION_PRAGMAS, TABLES

    setup = sqlite3.connect(path, isolation_level=None)
    for pragma in CONNECTION_PRAGMAS:
        setup.execute(pragma)
    setup.executescript(TABLES)
    setup.close()
    async with aiosqlite.connect(path, isolation_level=None) as db:
        lock = anyio.Lock()  # one connection: transactions of concurrent tasks must not interleave

        async def writer(w: int) -> None:
            for i in range(APPENDS):
                payload = f'{{"w": {w}, "i": {i}}}'
                async with lock:
                    await db.execute("BEGIN IMMEDIATE")
                    cursor = await db.execute(
                        "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE job_id = ?", ("job_bench",)
                    )
                    (seq,) = await cursor.fetchone()
                    await db.execute(
                        "INSERT INTO events (job_id, seq, key, payload) VALUES (?, ?, NULL, ?)",
                        ("job_bench", seq, payload),
                    )
                    await db.execute("COMMIT")

        cpu, wall = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(TASKS):
                tg.start_soon(writer, w)
        return time.perf_counter() - wall, time.process_time() - cpu


async def drivers(tmp: Path) -> None:
    n = TASKS * APPENDS
    print(f"2. database driver: {TASKS} tasks x {APPENDS} event appends (WAL, synchronous=NORMAL):")
    rows: list[tuple[str, tuple[float, float] | None]] = [
        ("dedicated thread, group commit", await appends_via_backend(tmp / "group.sqlite", 256)),
        ("dedicated thread, txn per append", await appends_via_backend(tmp / "single.sqlite", 1)),
        ("aiosqlite, txn per append", await appends_via_aiosqlite(tmp / "aiosqlite.sqlite")),
    ]
    for name, figures in rows:
        if figures is None:
            print(f"  {name:<34} skipped: aiosqlite is not importable")
            continue
        wall, cpu = figures
        print(f"  {name:<34} {n / wall:8.0f} appends/s | {1e6 * cpu / n:6.1f} CPU µs per append")


# -- 3. serve + 2 workers on sqlite vs 1 API + 2 workers on Redis --------------------------------
def scaleout(tmp: Path, args: argparse.Namespace) -> None:
    print(
        f"3. one box, SIMULATED model at {args.latency:g} s per call, {args.agents}-agent jobs, "
        f"{args.concurrency} clients, {args.slots} job slots per deployment, "
        f"{args.warmup:g} s warm-up then {args.window:g} s measured:"
    )
    with corpus_file() as corpus, sim_process("--latency", str(args.latency)) as sim_url:
        sqlite_figures = run_sqlite(tmp, corpus, sim_url, args)
        show(sqlite_figures)
        redis_figures = run_redis(tmp, corpus, sim_url, args)
        show(redis_figures)
    ms = [d * 1000 for d in sqlite_figures.delays]
    rms = [d * 1000 for d in redis_figures.delays]
    ratio = sqlite_figures.jobs_per_minute / redis_figures.jobs_per_minute if redis_figures.succeeded else 0.0
    print(
        f"ratio sqlite / redis: jobs per minute x{ratio:.2f}, "
        f"p99 event delay x{pct(ms, 99) / pct(rms, 99):.2f}"
    )


def run_sqlite(tmp: Path, corpus: Path, sim_url: str, args: argparse.Namespace) -> Figures:
    args.max_jobs = max(1, args.slots // 3)
    cluster = Cluster(
        tmp / "sqlite-cluster",
        "redis://unused",
        corpus,
        f"{sim_url}/v1",
        heartbeat=5.0,
        lease=30.0,
        env={**common_env(args), "HR_BACKEND": "sqlite", "HR_SQLITE__PATH": str(tmp / "scaleout.sqlite")},
    )
    try:
        (api,) = cluster.start_apis(1)
        cluster.start_workers(2)
        return anyio.run(load, api.base_url, "sqlite: serve + 2 worker processes", args)
    finally:
        cluster.stop()


def run_redis(tmp: Path, corpus: Path, sim_url: str, args: argparse.Namespace) -> Figures:
    args.max_jobs = max(1, args.slots // 2)
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-scaleout", action="store_true")
    parser.add_argument("--concurrency", type=int, default=24, help="clients, each with one job in flight")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per model call")
    parser.add_argument(
        "--slots", type=int, default=24, help="job slots per deployment, over its engine processes"
    )
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=40.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("Figures from a shared, busy machine; compare rows of one run, not across runs.")
    with tempfile.TemporaryDirectory(prefix="hr-bench-sqlite-") as folder:
        tmp = Path(folder)
        anyio.run(engines, tmp, backend_options={"use_uvloop": True})
        anyio.run(drivers, tmp, backend_options={"use_uvloop": True})
        if not args.skip_scaleout:
            if not shutil.which("redis-server"):
                print("3. skipped: redis-server is not installed")
            else:
                scaleout(tmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
