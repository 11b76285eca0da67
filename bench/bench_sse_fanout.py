"""SSE fan-out benchmark: many clients on ONE job, on the SIMULATED model.

1. Event delay: one API process on Redis with the engine in one worker process (`Cluster`), one
   8-agent job, N SSE clients on it. Prints the delay from an event's `ts` (stamped when it is
   appended to the log, in the worker) to its arrival at a client, p50/p99/max over the events
   that arrived live, and whether every client got the identical, complete stream.
2. Engine cost of fan-out: one `heavyresearch serve` (memory backend, engine in-process): the
   same job's run time (`duration_seconds`) with M clients watching ÷ with none.

Usage: python bench/bench_sse_fanout.py [--clients 500,1000,2000] [--serve-clients 1000]
       [--agents 8] [--latency 1.0]
Prints figures only; it asserts nothing. The clients, Redis, the API, the worker and the
simulated model all share this machine's cores, so the clients' own CPU is in the figures.
First it prints the socket floor: the kernel CPU of one send to each of N loopback
connections, which bounds how fast any server can do one fan-out pass on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import re
import selectors
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from bench._common import corpus_file, sim_process
from tests.procs import ApiProcess, Cluster, clean_environ
from tests.redis_server import RedisServer

QUESTION = "Who founded the city of Aldmere?"
# The event JSON starts {"job_id":…,"seq":N,"ts":T,"type":"…": enough to time an event without
# decoding it, which keeps the load generator (on the same two cores) cheap.
EVENT = re.compile(rb'^data: \{"job_id":"[^"]*","seq":(\d+),"ts":([0-9.eE+-]+),"type":"([a-z._]+)"', re.M)
TERMINAL = {b"job.succeeded", b"job.failed", b"job.cancelled"}


@dataclass
class Fanout:
    clients: int
    samples: list[tuple[float, float, bytes]] = field(default_factory=list)  # (ts, delay, type)
    subscribed: int = 0  # clients that got their first event, so the server has them all
    steady_from: float = float("inf")  # when the last of them did
    all_in: anyio.Event = field(default_factory=anyio.Event)  # every client subscribed or failed

    def settle(self) -> None:
        if self.subscribed + len(self.errors) >= self.clients:
            self.all_in.set()

    @property
    def delays(self) -> list[float]:
        # Events stamped before every client was subscribed are left out: while a thousand
        # connections are still being accepted, a client's "live" events include ones the
        # server had not yet been asked for (a start-up artefact, not fan-out delay).
        return [d for ts, d, _ in self.samples if ts >= self.steady_from]

    def by_type(self) -> dict[bytes, list[float]]:
        out: dict[bytes, list[float]] = {}
        for ts, d, type_ in self.samples:
            if ts >= self.steady_from:
                out.setdefault(type_, []).append(d)
        return out

    replayed: int = 0
    streams: list[tuple[int, ...]] = field(default_factory=list)  # each client's seqs
    errors: list[str] = field(default_factory=list)
    connected: int = 0
    api_cpu: float = 0.0  # CPU seconds the API process used during the row
    client_cpu: float = 0.0  # and this load generator
    wall: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Watcher(asyncio.Protocol):
    """One SSE client on a bare socket (HTTP/1.0). `data_received` only stamps and keeps each
    chunk; the events are parsed after the row, so the load generator (on the same two cores)
    does little while the server fans out, and a chunk's arrival time is the moment the loop
    read it rather than after the other clients' parsing."""

    def __init__(self, request: bytes, result: Fanout) -> None:
        self.request = request
        self.result = result
        self.chunks: list[bytes] = []
        self.arrivals: list[float] = []
        self.opened = 0.0
        self.subscribed = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # a TCP transport (uvloop's is no asyncio.Transport subclass)
        self.opened = time.time()
        self.result.connected += 1

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        self.chunks.append(data)
        self.arrivals.append(arrived)
        if not self.subscribed and b"\n\n" in data:
            self.subscribed = True
            result = self.result
            result.subscribed += 1
            if result.subscribed == result.clients:
                result.steady_from = arrived
            result.settle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def tally(self) -> None:
        """Parses the stream once it is over: each event's delay is from its `ts` to the arrival
        of the chunk that completed its `data:` line."""
        body = b"".join(self.chunks)
        ends = list(itertools.accumulate(len(c) for c in self.chunks))
        seqs: list[int] = []
        terminal = False
        for match in EVENT.finditer(body):
            seqs.append(int(match[1]))
            ts = float(match[2])
            line_end = body.find(b"\n", match.end())
            arrived = self.arrivals[bisect.bisect_left(ends, line_end + 1)]
            if ts >= self.opened:
                self.result.samples.append((ts, arrived - ts, match[3]))
            else:
                self.result.replayed += 1
            terminal = terminal or match[3] in TERMINAL
        if not terminal:
            self.result.errors.append(f"stream ended before the job did, after {len(seqs)} events")
        self.result.streams.append(tuple(seqs))


async def watch(host: str, port: int, job_id: str, result: Fanout) -> None:
    request = (
        f"GET /v1/research/{job_id}/events HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    try:
        _, watcher = await loop.create_connection(lambda: Watcher(request, result), host, port)
    except OSError as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
        result.streams.append(())
        result.settle()
        return
    await watcher.done
    watcher.tally()
    result.settle()


def socket_floor(clients: int, size: int) -> float:
    """CPU µs of one `send` of `size` bytes to each of `clients` loopback TCP connections, a
    reader process draining them: the kernel's share of one fan-out pass, which no server code
    can go below (on loopback the sender's CPU also runs the receiving side)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=clients)
    port = listener.getsockname()[1]
    reader = os.fork()
    if reader == 0:  # the child: connect them all, then read until they close
        selector = selectors.DefaultSelector()
        for _ in range(clients):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
        open_ = clients
        while open_:
            for key, _ in selector.select(10):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if not sock.recv(1 << 16):
                    selector.unregister(sock)
                    open_ -= 1
        os._exit(0)
    conns = [listener.accept()[0] for _ in range(clients)]
    message = b"x" * size
    passes = []
    for _ in range(5):
        began = time.thread_time()
        for conn in conns:
            conn.send(message)
        passes.append((time.thread_time() - began) / clients * 1e6)
        time.sleep(0.2)  # the reader drains between passes, as clients do between events
    for conn in conns:
        conn.close()
    listener.close()
    os.waitpid(reader, 0)
    return sorted(passes)[len(passes) // 2]


async def submit(client: httpx.AsyncClient, agents: int) -> str:
    response = await client.post("/v1/research", json={"query": QUESTION, "agents": agents})
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def fan_out(
    api: ApiProcess, clients: int, agents: int, release: Callable[[], Awaitable[None]] | None = None
) -> tuple[Fanout, float | None]:
    """One job, `clients` watchers; returns their figures and the job's run time. With
    `release`, it is called once every client is subscribed (it starts the engine)."""
    result = Fanout(clients)
    host, port = "127.0.0.1", api.port
    async with api.client(timeout=60.0) as client:
        api_cpu, client_cpu, start = cpu_seconds(api.pid), time.process_time(), time.monotonic()
        job_id = await submit(client, agents)
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(watch, host, port, job_id, result)
            if release is not None:
                await result.all_in.wait()
                await release()
        result.api_cpu = cpu_seconds(api.pid) - api_cpu
        result.client_cpu = time.process_time() - client_cpu
        result.wall = time.monotonic() - start
        job = (await client.get(f"/v1/research/{job_id}")).json()
    if job["status"] != "succeeded":
        result.errors.append(f"job ended {job['status']}: {job.get('error')}")
    return result, job["timings"]["duration_seconds"]


async def run_alone(api: ApiProcess, agents: int) -> float | None:
    async with api.client(timeout=60.0) as client:
        job_id = await submit(client, agents)
        while True:
            job = (await client.get(f"/v1/research/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                duration: float | None = job["timings"]["duration_seconds"]
                return duration
            await anyio.sleep(0.1)


def report(result: Fanout, run_time: float | None) -> None:
    ms = [d * 1000 for d in result.delays]
    reference = max(result.streams, key=len, default=())
    identical = sum(1 for s in result.streams if s == reference)
    gapless = reference == tuple(range(1, len(reference) + 1))
    print(
        f"{result.clients:>5} clients | identical complete streams {identical}/{result.clients}"
        f" ({len(reference)} events, gapless {gapless}) | errors {len(result.errors)}"
        f" | live events measured {len(ms)} (replayed {result.replayed})"
        f" | event→client p50 {pct(ms, 50):7.1f} ms p99 {pct(ms, 99):7.1f} ms"
        f" max {max(ms, default=0):7.1f} ms"
        f" | job run {run_time} s"
        f" | CPU over {result.wall:.1f} s: API {result.api_cpu:.1f} s, clients {result.client_cpu:.1f} s"
    )
    worst = sorted(result.by_type().items(), key=lambda kv: -pct(kv[1], 99))[:4]
    print(
        "      p99 by event type: "
        + ", ".join(
            f"{t.decode()} {pct(d, 99) * 1000:.0f} ms ({len(d) // result.clients}/client)" for t, d in worst
        )
    )
    for line in sorted(set(result.errors))[:3]:
        print(f"      ! {line}")


async def redis_part(args: argparse.Namespace, workdir: Path, corpus: Path, sim_url: str) -> None:
    redis = RedisServer(workdir / "redis", appendonly=False)
    redis.start()
    cluster = Cluster(
        workdir / "cluster",
        redis.url,
        corpus,
        f"{sim_url}/v1",
        env={"HR_SERVER__SSE_KEEPALIVE": "15"},  # INFO logs: the worker start-up line is awaited
    )
    try:
        (api,) = cluster.start_apis(1)
        print(
            f"1. Redis: 1 API process + 1 worker, one {args.agents}-agent job per row; the worker "
            "starts once every client is subscribed, so all the job's events are live"
        )

        async def start_worker() -> None:
            await anyio.to_thread.run_sync(cluster.start_workers, 1)

        for clients in args.clients:
            result, run_time = await fan_out(api, clients, args.agents, start_worker)
            report(result, run_time)
            for worker in cluster.workers:
                worker.stop()
            cluster.workers.clear()
    finally:
        cluster.stop()
        redis.stop()


async def serve_part(args: argparse.Namespace, workdir: Path, corpus: Path, sim_url: str) -> None:
    env = clean_environ()
    env.update(
        HR_BACKEND="memory",
        HR_CORPUS__PATH=str(corpus),
        HR_CORPUS__AUTO_BUILD="false",
        HR_LLM__BASE_URL=f"{sim_url}/v1",
        HR_LLM__MODEL="heavyresearch-sim",
        HR_LOG_LEVEL="WARNING",
    )
    api = ApiProcess("serve", env, workdir / "serve.log")
    api.start()
    try:
        api.wait_healthy()
        print(f"2. one `serve` (memory backend, engine in-process), one {args.agents}-agent job per row")
        await run_alone(api, args.agents)  # warm-up
        alone = [await run_alone(api, args.agents) for _ in range(args.repeat)]
        watched = []
        for _ in range(args.repeat):
            result, run_time = await fan_out(api, args.serve_clients, args.agents)
            report(result, run_time)
            watched.append(run_time)
        base = sum(t or 0 for t in alone) / len(alone)
        loaded = sum(t or 0 for t in watched) / len(watched)
        print(
            f"job run time with no clients {base:.2f} s (runs: {alone}), with {args.serve_clients} "
            f"clients {loaded:.2f} s (runs: {watched}): ratio {loaded / base:.2f}"
        )
    finally:
        api.terminate()
        api.wait_or_kill()


async def main_async(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="hr-bench-sse-") as tmp,
        corpus_file() as corpus,
        sim_process("--latency", str(args.latency)) as sim_url,
    ):
        print(f"SIMULATED model in its own process, {args.latency:g} s per call")
        if args.clients:
            await redis_part(args, Path(tmp), corpus, sim_url)
        if args.serve_clients:
            await serve_part(args, Path(tmp), corpus, sim_url)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients", default="500,1000,2000", help="comma-separated client counts (Redis part)"
    )
    parser.add_argument("--serve-clients", type=int, default=1000, help="clients in the serve part (0: skip)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side in the serve part")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per model call")
    args = parser.parse_args()
    args.clients = [int(x) for x in args.clients.split(",") if x]
    if args.clients:
        n = max(args.clients)
        small, large = socket_floor(n, 600), socket_floor(n, 20_000)
        print(
            f"socket floor, {n} loopback connections: one send costs {small:.1f} µs of CPU (600 B, one"
            f" event) / {large:.1f} µs (20 kB, a round's burst): {n * small / 1000:.0f}"
            f"-{n * large / 1000:.0f} ms of kernel CPU per fan-out pass"
        )
    anyio.run(main_async, args, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
