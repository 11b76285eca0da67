"""API capacity benchmark: one `heavyresearch serve` process (memory backend, engine in-process)
on the SIMULATED model with 1 s per model call (the simulated model runs as its own process).

For each load level it submits that many 4-agent jobs at once, streams every job's events over
SSE (one client per job), and prints:

- whether the server held them all with no errors (HTTP errors, failed jobs or agents, broken
  streams), how long jobs waited in the queue, and how long they ran;
- the delay from an event's `ts` (stamped when it is appended to the log) to its arrival at an
  SSE client, over the events that arrived live (replayed ones are left out).

Usage: python bench/bench_api.py [--levels 50,100,200,300] [--agents 4] [--latency 1.0]
Prints figures only; it asserts nothing. Server and client share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
CORPUS_JSONL = ROOT / "tests" / "data" / "mini_corpus.jsonl"
QUESTIONS = [
    "What is the tallest mountain in Valdoria?",
    "Who founded the city of Aldmere?",
    "Which river runs through Merrowgate?",
    "What is the Amber Sea named after?",
]
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled"}


@dataclass
class LevelResult:
    jobs: int
    watchers: int = 1
    wall: float = 0.0
    post_errors: list[str] = field(default_factory=list)
    stream_errors: list[str] = field(default_factory=list)
    bad_outcomes: list[str] = field(default_factory=list)
    live_delays: list[float] = field(default_factory=list)
    replayed: int = 0
    events: int = 0
    queue_waits: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.post_errors) + len(self.stream_errors) + len(self.bad_outcomes)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_sim(port: int, latency: float, log_path: Path) -> subprocess.Popen[bytes]:
    """The simulated model as its own process, as a real model server would be: its CPU is then
    not taken from the API process being measured."""
    code = "import sys; from workers.cli import main; sys.exit(main())"
    return subprocess.Popen(
        [sys.executable, "-c", code, "sim-llm", "--port", str(port), "--latency", str(latency)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def start_server(
    port: int, corpus: Path, latency: float, log_path: Path, sim_url: str | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HR_")}
    if sim_url is not None:
        env.update(HR_LLM__BASE_URL=f"{sim_url}/v1", HR_LLM__MODEL="heavyresearch-sim")
    env.update(
        HR_BACKEND="memory",
        HR_CORPUS__PATH=str(corpus),
        HR_CORPUS__AUTO_BUILD="false",
        HR_SIM__LATENCY=str(latency),
        HR_WORKER__MAX_JOBS="100000",
        HR_SERVER__MAX_QUEUED_JOBS="100000",
        # The limits below would otherwise be what is measured, not the service.
        HR_LLM__MAX_CONCURRENCY="100000",
        HR_AGENT__AGENT_CONCURRENCY="16",
        HR_LOG_LEVEL="WARNING",
    )
    code = "import sys; from workers.cli import main; sys.exit(main())"
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


async def wait_ready(
    client: httpx.AsyncClient, server: subprocess.Popen[bytes], timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up; see its log")
        try:
            response = await client.get("/healthz")
            if response.status_code == 200:
                health: dict[str, Any] = response.json()
                return health
        except httpx.TransportError:
            pass
        await anyio.sleep(0.2)
    raise TimeoutError("the server did not become healthy")


def new_client(base_url: str) -> httpx.AsyncClient:
    # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout, so the client
    # never reuses one the server is closing at that moment.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0)
    timeout = httpx.Timeout(120.0, read=None)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout, trust_env=False)


async def stream_job(base_url: str, job_id: str, result: LevelResult) -> None:
    """One SSE client on a bare socket. The load generator shares this machine's two cores with
    the server, so it must be as cheap as it can be: an HTTP/1.0 request (the body is then the
    plain event stream, no chunked framing) and one `json.loads` per event."""
    host, port = base_url.removeprefix("http://").split(":")
    opened = time.time()
    terminal = None
    request = (
        f"GET /v1/research/{job_id}/events HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    try:
        async with await anyio.connect_tcp(host, int(port)) as sock:
            await sock.send(request.encode())
            buffer = b""
            head_done = False
            while True:
                try:
                    buffer += await sock.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
                arrived = time.time()
                if not head_done:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    status = buffer.split(b"\r\n", 1)[0]
                    if b" 200 " not in status:
                        result.stream_errors.append(f"{job_id}: {status.decode(errors='replace')}")
                        return
                    buffer, head_done = buffer[end + 4 :], True
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    event = json.loads(line[5:])
                    result.events += 1
                    if event["ts"] >= opened:
                        result.live_delays.append(arrived - event["ts"])
                    else:
                        result.replayed += 1
                    if event["type"] in ("agent.failed", "job.failed"):
                        result.bad_outcomes.append(f"{job_id}: {event['type']} {event['data']}")
                    if event["type"] in TERMINAL:
                        terminal = event["type"]
    except OSError as exc:
        result.stream_errors.append(f"{job_id}: {type(exc).__name__}: {exc}")
        return
    if terminal != "job.succeeded":
        result.stream_errors.append(f"{job_id}: stream ended with {terminal}")


async def run_level(client: httpx.AsyncClient, jobs: int, agents: int, watchers: int = 1) -> LevelResult:
    """`jobs` jobs at once, each streamed by `watchers` SSE clients."""
    result = LevelResult(jobs=jobs, watchers=watchers)
    ids: list[str] = []
    start = time.monotonic()

    async def submit(i: int) -> None:
        body = {"query": QUESTIONS[i % len(QUESTIONS)], "agents": agents}
        try:
            response = await client.post("/v1/research", json=body)
        except httpx.HTTPError as exc:
            result.post_errors.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 202:
            result.post_errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        ids.append(response.json()["id"])

    async with anyio.create_task_group() as tg:
        for i in range(jobs):
            tg.start_soon(submit, i)
    async with anyio.create_task_group() as tg:
        for job_id in ids:
            for _ in range(watchers):
                tg.start_soon(stream_job, str(client.base_url), job_id, result)
    result.wall = time.monotonic() - start

    for job_id in ids:
        try:
            job = (await client.get(f"/v1/research/{job_id}")).json()
        except httpx.HTTPError as exc:
            result.bad_outcomes.append(f"{job_id}: GET failed: {type(exc).__name__}: {exc}")
            continue
        timings = job["timings"]
        if job["status"] != "succeeded":
            result.bad_outcomes.append(f"{job_id}: {job['status']} {job.get('error')}")
            continue
        created = _ts(timings["created_at"])
        started = _ts(timings["started_at"])
        result.queue_waits.append(started - created)
        result.run_times.append(timings["duration_seconds"])
    return result


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def report(result: LevelResult) -> None:
    ms = [d * 1000 for d in result.live_delays]
    waits = result.queue_waits
    print(
        f"{result.jobs:>5} jobs x {result.watchers:>2} clients | errors {result.errors:>3}"
        f" | wall {result.wall:6.1f} s"
        f" | queue wait p50/max {pct(waits, 50):5.2f}/{max(waits, default=0):5.2f} s"
        f" | job run p50/p99 {pct(result.run_times, 50):5.2f}/{pct(result.run_times, 99):5.2f} s"
        f" | events {result.events:>6} ({result.replayed} replayed)"
        f" | event→client p50 {pct(ms, 50):7.1f} ms p99 {pct(ms, 99):7.1f} ms"
    )
    for line in (result.post_errors + result.stream_errors + result.bad_outcomes)[:5]:
        print(f"      ! {line}")


async def main_async(args: argparse.Namespace, base_url: str, server: subprocess.Popen[bytes]) -> None:
    async with new_client(base_url) as client:
        health = await wait_ready(client, server)
        print(
            f"server: backend={health['backend']} simulated={health['simulated']} "
            f"(SIMULATED model, {args.latency:g} s per call), {args.agents} agents per job"
        )
        warm = await run_level(client, 2, args.agents)
        print(f"warm-up: {warm.errors} errors, one job runs in {pct(warm.run_times, 50):.2f} s on its own")
        held = 0
        results = []
        for level in args.levels:
            result = await run_level(client, level, args.agents)
            results.append(result)
            report(result)
            if result.errors == 0:
                held = level
        print(f"largest level held with no errors: {held} concurrent {args.agents}-agent jobs")
        # The same 200 SSE clients on fewer jobs: fan-out of events to clients, with the engine
        # not saturating this machine's two cores.
        fanout = await run_level(client, args.fanout_jobs, args.agents, watchers=200 // args.fanout_jobs)
        report(fanout)
        for result in [*results, fanout]:
            if result.jobs * result.watchers == 200:
                ms = [d * 1000 for d in result.live_delays]
                print(
                    f"event ts → SSE client delay, 200 clients on {result.jobs} jobs: "
                    f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, "
                    f"mean {statistics.fmean(ms) if ms else float('nan'):.1f} ms over {len(ms)} live events"
                )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="50,100,200,300", help="comma-separated job counts")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--fanout-jobs", type=int, default=20, help="jobs for the 200-client fan-out run")
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per model call")
    parser.add_argument(
        "--sim-in-process",
        action="store_true",
        help="run the simulated model inside the serve process (its default) instead of as its own process",
    )
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x]

    from workers.corpus import build_corpus

    with tempfile.TemporaryDirectory(prefix="hr-bench-") as tmp:
        corpus = Path(tmp) / "corpus.sqlite"
        build_corpus(corpus, [CORPUS_JSONL], wiki=False)
        port = free_port()
        log_path = Path(tmp) / "server.log"
        sim = None
        sim_url = None
        if not args.sim_in_process:
            sim_port = free_port()
            sim = start_sim(sim_port, args.latency, Path(tmp) / "sim.log")
            sim_url = f"http://127.0.0.1:{sim_port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{sim_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        print(f"simulated model: {'in the serve process' if sim is None else 'its own process'}")
        server = start_server(port, corpus, args.latency, log_path, sim_url)
        try:
            anyio.run(main_async, args, f"http://127.0.0.1:{port}", server)
        finally:
            if sim is not None:
                sim.terminate()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                print("server log (last lines):", *tail, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
