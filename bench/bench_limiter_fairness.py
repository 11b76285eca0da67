"""Fairness of the shared LLM limiter between processes (Redis): two limiters with their own
connection pools, as two worker processes have, each with `--agents` tasks calling one endpoint
back to back (`--call` seconds a call, no pause between calls, as agents whose tools are cached).
The endpoint's cap is `--cap`. Process A starts first and fills the cap; B starts `--head-start`
seconds later. Over the `--seconds` after B starts, the script prints the calls each process
made and B's waits for a slot (p50 / p99 / max). With a fair limiter the two share the cap.

Usage: python bench/bench_limiter_fairness.py [--agents 8] [--cap 8] [--call 0.05] [--seconds 10]
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.bench_sse_fanout import pct
from tests.redis_server import RedisServer
from workers.backend.redis import RedisBackend
from workers.backend.redis_limiter import RedisLimiter


async def run(args: argparse.Namespace, url: str) -> None:
    backends = [RedisBackend(url, prefix="fair"), RedisBackend(url, prefix="fair")]
    calls = {"A": 0, "B": 0}
    b_waits: list[float] = []
    measuring = anyio.Event()
    stop = anyio.Event()
    try:
        async with RedisLimiter.from_backend(backends[0]) as a, RedisLimiter.from_backend(backends[1]) as b:

            async def agent(name: str, limiter: RedisLimiter) -> None:
                while not stop.is_set():
                    asked = time.perf_counter()
                    async with limiter.slot("endpoint", args.cap, 0):
                        if measuring.is_set() and not stop.is_set():
                            calls[name] += 1
                            if name == "B":
                                b_waits.append(time.perf_counter() - asked)
                        await anyio.sleep(args.call)

            async with anyio.create_task_group() as tg:
                for _ in range(args.agents):
                    tg.start_soon(agent, "A", a)
                await anyio.sleep(args.head_start)
                for _ in range(args.agents):
                    tg.start_soon(agent, "B", b)
                measuring.set()
                await anyio.sleep(args.seconds)
                stop.set()
    finally:
        for backend in backends:
            await backend.close()
    total = calls["A"] + calls["B"]
    ideal = args.seconds / args.call * args.cap
    print(
        f"cap {args.cap}, {args.agents} agents per process, {args.call * 1000:.0f} ms calls, "
        f"{args.seconds:.0f} s: "
        f"A {calls['A']} calls, B {calls['B']} calls (B's share {calls['B'] / max(1, total):.2f}; "
        f"{total / ideal:.2f} of the cap's {ideal:.0f} call slots used)"
    )
    if b_waits:
        print(
            f"  B's wait for a slot: p50 {pct(b_waits, 50) * 1000:.0f} ms, "
            f"p99 {pct(b_waits, 99) * 1000:.0f} ms, max {max(b_waits) * 1000:.0f} ms"
        )
    else:
        print("  B never got a slot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--cap", type=int, default=8)
    parser.add_argument("--call", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--head-start", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        server.start()
        try:
            anyio.run(run, args, server.url)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
