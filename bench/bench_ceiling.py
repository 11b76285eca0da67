"""Concurrent-jobs ceiling (issue 14): how many 8-agent jobs one box runs at once while every
event still reaches its SSE client within 1 s (p99), on the SIMULATED model.

The deployment is the scale-out one: 1 API process + 2 worker processes on one Redis (AOF,
fsync every write, as docker-compose.yml ships it), and `heavyresearch sim-llm --latency 1`
(1 s per model call) in its own process. The job slots per worker and the LLM concurrency cap
are lifted, so what bounds the ceiling is the box, not a setting.

For each level C in `--levels` (ascending), C clients each keep one job in flight: submit,
follow its events over SSE until the terminal one, submit the next. After `--warmup` seconds
at that level, for `--window` seconds, it records the delay from each event's `ts` (stamped
when the worker appends it to the log) to its arrival at the client, and the jobs that
succeeded. The ceiling is the highest level whose p99 delay stays under `--target` seconds with
no failed job and no job kept waiting in the queue that long (p99 queue wait): a queued job is
not running concurrently. The ramp stops at the first level that misses it.

The SSE clients are bare sockets that read the seq, ts and type of each event without decoding
its JSON, so the load generator (which shares the two cores) stays cheap; its CPU, and that of
every other process, is printed per level.

Usage: python bench/bench_ceiling.py [--levels 25,50,100,150,200,250] [--warmup 8] [--window 20]
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx

from bench._common import corpus_file, sim_server
from bench.bench_sse_fanout import cpu_seconds, pct
from tests.procs import Cluster
from tests.redis_server import RedisServer

QUESTIONS = [
    "What is the tallest mountain in Valdoria?",
    "Who founded the city of Aldmere?",
    "Which river runs through Merrowgate?",
    "What is the Amber Sea named after?",
]
EVENT = re.compile(rb'^data: \{"job_id":"[^"]*","seq":(\d+),"ts":([0-9.eE+-]+),"type":"([a-z._]+)"', re.M)
TERMINAL = {b"job.succeeded", b"job.failed", b"job.cancelled"}


@dataclass
class Level:
    clients: int
    window: float
    measure_from: float = 0.0
    measure_to: float = 0.0
    delays: list[float] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    run_times: list[float] = field(default_factory=list)
    queue_waits: list[float] = field(default_factory=list)
    running: int = 0  # jobs started and not yet ended, as the clients see them
    running_samples: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def in_window(self) -> bool:
        return self.measure_from <= time.monotonic() < self.measure_to

    def passed(self, target: float) -> bool:
        """Every event within `target` (p99), no failed job, and the jobs running, not queued:
        a job waiting in the queue is not one of the concurrent jobs."""
        return pct(self.delays, 99) < target and not self.failed and pct(self.queue_waits, 99) < target


async def follow(host: str, port: int, job_id: str, level: Level) -> bytes | None:
    """Read one job's SSE stream on a bare socket until its terminal event; return its type."""
    request = (
        f"GET /v1/research/{job_id}/events HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    async with await anyio.connect_tcp(host, port) as sock:
        await sock.send(request.encode())
        buffer = b""
        queued = 0.0
        while True:
            try:
                buffer += await sock.receive(1 << 16)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
            arrived = time.time()
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            ready, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            measuring = level.in_window()
            for match in EVENT.finditer(ready):
                ts = float(match[2])
                if measuring:
                    level.delays.append(arrived - ts)
                if match[3] == b"job.queued":
                    queued = ts
                elif match[3] == b"job.started":
                    level.running += 1
                    if measuring:
                        level.queue_waits.append(ts - queued)
                if match[3] in TERMINAL:
                    level.running -= 1
                    return match[3]


async def client_loop(
    api: httpx.AsyncClient, host: str, port: int, index: int, level: Level, stop_at: float
) -> None:
    job = index
    with anyio.move_on_after(stop_at - time.monotonic()):
        while True:
            started = time.monotonic()
            try:
                response = await api.post(
                    "/v1/research", json={"query": QUESTIONS[job % len(QUESTIONS)], "agents": 8}
                )
                if response.status_code != 202:
                    level.errors.append(f"POST: HTTP {response.status_code}: {response.text[:200]}")
                    await anyio.sleep(1.0)
                    continue
                terminal = await follow(host, port, response.json()["id"], level)
            except (OSError, httpx.HTTPError) as exc:
                level.errors.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(1.0)
                continue
            if level.in_window():
                if terminal == b"job.succeeded":
                    level.succeeded += 1
                    level.run_times.append(time.monotonic() - started)
                else:
                    level.failed += 1
                    level.errors.append(f"job ended {terminal!r}")
            job += level.clients


async def run_level(
    cluster: Cluster, redis_pid: int, sim_pid: int, clients: int, args: argparse.Namespace
) -> Level:
    api_url = cluster.apis[0].base_url
    parts = urlsplit(api_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    level = Level(clients, args.window)
    start = time.monotonic()
    level.measure_from = start + args.warmup
    level.measure_to = level.measure_from + args.window
    pids = {
        "api": cluster.apis[0].pid,
        **{f"worker-{i}": w.pid for i, w in enumerate(cluster.workers)},
        "redis": redis_pid,
        "sim": sim_pid,
    }
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=2.0)
    async with (
        httpx.AsyncClient(
            base_url=api_url, timeout=httpx.Timeout(60.0), limits=limits, trust_env=False
        ) as api,
        anyio.create_task_group() as tg,
    ):
        for index in range(clients):
            tg.start_soon(client_loop, api, host, port, index, level, level.measure_to)

        await anyio.sleep_until(level.measure_from)
        tg.start_soon(sample_running, level)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        load_before = time.process_time()
        await anyio.sleep_until(level.measure_to)
        level.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        level.cpu["load generator"] = time.process_time() - load_before
    return level


async def sample_running(level: Level) -> None:
    while time.monotonic() < level.measure_to:
        level.running_samples.append(level.running)
        await anyio.sleep(0.5)


def show(level: Level, target: float) -> None:
    ms = [d * 1000 for d in level.delays]
    verdict = "ok" if level.passed(target) else "MISSED"
    running = sum(level.running_samples) / len(level.running_samples) if level.running_samples else 0.0
    cpu = ", ".join(f"{name} {seconds / level.window:.2f}" for name, seconds in level.cpu.items())
    print(
        f"{level.clients:5d} jobs | event→client p50 {pct(ms, 50):7.1f} ms p99 {pct(ms, 99):8.1f} ms"
        f" ({len(ms)} events) | {level.succeeded / level.window * 60:6.1f} jobs/min,"
        f" run p50 {pct(level.run_times, 50):5.2f} s, queue wait p99 {pct(level.queue_waits, 99):5.2f} s,"
        f" running {running:.0f} on average"
        f" | failed {level.failed} | {verdict}"
    )
    print(f"        CPU cores busy: {cpu}")
    for line in level.errors[:3]:
        print(f"    ! {line}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="25,50,100,150,200,250", help="concurrent jobs per step")
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per model call")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--target", type=float, default=1.0, help="p99 event delay bound, seconds")
    args = parser.parse_args()
    if not (shutil.which("redis-server") or shutil.which("valkey-server")):
        print("redis-server is not installed (apt-get install redis-server); it is needed here")
        return 1
    levels = sorted(int(x) for x in args.levels.split(","))
    print(
        f"SIMULATED model, {args.latency:g} s per call; 8-agent jobs; 1 API + 2 workers on Redis (AOF);"
        f" {args.warmup:g} s warm-up then {args.window:g} s measured per level;"
        f" target p99 < {args.target:g} s"
    )
    ceiling = 0
    with tempfile.TemporaryDirectory(prefix="hr-bench-ceiling-") as folder, corpus_file() as corpus:
        tmp = Path(folder)
        redis = RedisServer(tmp / "redis", appendonly=True)
        redis.start()
        try:
            with sim_server("--latency", str(args.latency)) as (sim_url, sim_pid):
                cluster = Cluster(
                    tmp / "cluster",
                    redis.url,
                    corpus,
                    f"{sim_url}/v1",
                    heartbeat=5.0,
                    lease=30.0,
                    env={
                        "HR_WORKER__MAX_JOBS": "100000",
                        "HR_SERVER__MAX_QUEUED_JOBS": "100000",
                        "HR_LLM__MAX_CONCURRENCY": "100000",
                        "HR_SERVER__SSE_KEEPALIVE": "15",
                    },
                )
                try:
                    cluster.start_apis(1)
                    cluster.start_workers(2)
                    for clients in levels:
                        level = anyio.run(
                            run_level,
                            cluster,
                            redis_pid(redis),
                            sim_pid,
                            clients,
                            args,
                            backend_options={"use_uvloop": True},
                        )
                        show(level, args.target)
                        if not level.passed(args.target):
                            break
                        ceiling = clients
                finally:
                    cluster.stop()
        finally:
            redis.stop()
    print(
        f"ceiling: {ceiling} concurrent 8-agent jobs with p99 event delay < {args.target:g} s (target >= 250)"
    )
    return 0


def redis_pid(redis: RedisServer) -> int:
    assert redis.process is not None, "redis-server was started"
    return redis.process.pid


if __name__ == "__main__":
    sys.exit(main())
