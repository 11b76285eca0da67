"""`/metrics` scrape time with many finished jobs in the store, on each backend.

For each backend (memory, sqlite, redis) it builds the real app (`create_app`, its lifespan
entered in process), stores N finished jobs, then scrapes `GET /metrics` over ASGI many times
and prints the median and p95 of a scrape. Beside it, in the same run and on the same store, the
way scrapes counted jobs before (walking `list_jobs` page by page per status, capped at 10,000
per status), so the two figures are comparable.

Usage: python bench/bench_metrics.py [--jobs 10000] [--scrapes 200] [--backends memory,sqlite,redis]
Prints figures only; it asserts nothing. The machine is shared: figures vary with its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.main import create_app
from bench._common import corpus_file
from tests.redis_server import RedisServer
from workers.backend.base import Backend, new_job_id
from workers.models import JobRecord, JobStatus, ResearchRequest
from workers.settings import Settings

FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
OLD_CAP, OLD_PAGE = 10_000, 1000


async def fill(backend: Backend, jobs: int) -> None:
    """`jobs` finished jobs (mostly succeeded), stored as the runner stores them."""

    async def one(index: int) -> None:
        record = JobRecord(id=new_job_id(), request=ResearchRequest(query=f"question {index}"))
        await backend.create_job(record)
        record.status = FINISHED[0] if index % 10 else FINISHED[1 + index % 20 // 10]
        record.finished_at = time.time()
        await backend.save_job(record)

    for start in range(0, jobs, 200):
        async with anyio.create_task_group() as tg:
            for index in range(start, min(start + 200, jobs)):
                tg.start_soon(one, index)


async def old_walk(backend: Backend) -> None:
    """What a scrape did before the counters: count each status by listing its jobs."""
    for status in JobStatus:
        total, cursor = 0, None
        while total < OLD_CAP:
            page, cursor = await backend.list_jobs(status, cursor, OLD_PAGE)
            total += len(page)
            if cursor is None:
                break


async def timed(fn: Callable[[], Awaitable[object]], times: int) -> list[float]:
    took = []
    for _ in range(times):
        start = time.perf_counter()
        await fn()
        took.append((time.perf_counter() - start) * 1000)
    return took


def line(label: str, took: list[float]) -> str:
    p95 = statistics.quantiles(took, n=20)[-1] if len(took) >= 20 else max(took)
    return f"  {label:<34} median {statistics.median(took):8.2f} ms   p95 {p95:8.2f} ms   (n={len(took)})"


async def one_backend(settings: Settings, jobs: int, scrapes: int) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        backend: Backend = app.state.engine.backend
        start = time.perf_counter()
        await fill(backend, jobs)
        print(f"{settings.backend}: {jobs} finished jobs stored in {time.perf_counter() - start:.1f}s")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def scrape() -> None:
                response = await client.get("/metrics")
                response.raise_for_status()

            await scrape()  # warm
            print(line("GET /metrics (counters)", await timed(scrape, scrapes)))
            print(line("job_counts() alone", await timed(backend.job_counts, scrapes)))
            walks = max(3, scrapes // 20)
            print(line("before: list_jobs walk", await timed(lambda: old_walk(backend), walks)))
            counts = await backend.job_counts()
            print("  counts:", {s.value: n for s, n in counts.items() if n})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    args = parser.parse_args()
    print(f"/metrics scrape time, {args.jobs} finished jobs; shared machine, figures vary with load")
    with tempfile.TemporaryDirectory(prefix="hr-bench-metrics-") as folder, corpus_file() as corpus:
        tmp = Path(folder)
        base = {"log_level": "WARNING", "corpus": {"path": str(corpus), "auto_build": False}}
        for name in args.backends.split(","):
            if name == "redis":
                redis = RedisServer(tmp / "redis", appendonly=False)
                redis.start()
                try:
                    settings = Settings(backend="redis", redis_url=redis.url, redis_prefix="bench", **base)
                    anyio.run(one_backend, settings, args.jobs, args.scrapes)
                finally:
                    redis.stop()
            elif name == "sqlite":
                settings = Settings(backend="sqlite", sqlite={"path": str(tmp / "hr.sqlite")}, **base)
                anyio.run(one_backend, settings, args.jobs, args.scrapes)
            else:
                anyio.run(one_backend, Settings(backend="memory", **base), args.jobs, args.scrapes)


if __name__ == "__main__":
    main()
