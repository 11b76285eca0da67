"""What tenant auth costs: requests per second of `GET /v1/research/{id}` with API keys off
and on, in one run.

Two `heavyresearch serve` processes (memory backend, SIMULATED model in-process): one open, one
with 50 tenants configured by key digest (the caller is one of them, so every request hashes
its key, compares it against every digest and checks the job's owner). Each gets one finished
job; then the same client load (`--concurrency` keep-alive connections for `--seconds`) reads
that job, alternating between the two servers `--rounds` times so drift on a busy machine hits
both alike. Prints requests/s per round, the medians, on/off, and the key check's own cost.

Usage: python bench/bench_auth.py [--seconds 5] [--concurrency 16] [--rounds 3]
Prints figures only; it asserts nothing. Servers and client share this machine's cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

from app.auth import Keyring
from bench._common import ROOT, corpus_file, free_port
from workers.settings import ServerSettings, TenantKey

KEY = "bench-tenant-key"


def start(port: int, corpus: Path, tenants: list[dict[str, str]] | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HR_")}
    env.update(HR_BACKEND="memory", HR_CORPUS__PATH=str(corpus), HR_CORPUS__AUTO_BUILD="false")
    env.update(HR_LOG_LEVEL="WARNING")
    if tenants is not None:
        env["HR_SERVER__TENANTS"] = json.dumps(tenants)
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


async def ready_job(base: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=base, headers=headers, trust_env=False, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await anyio.sleep(0.2)
        created = await client.post(
            "/v1/research", json={"query": "Who founded Aldmere?", "agents": 1, "max_rounds": 3}
        )
        created.raise_for_status()
        job_id: str = created.json()["id"]
        async with client.stream("GET", f"/v1/research/{job_id}/events") as stream:
            async for _ in stream.aiter_lines():
                pass  # the stream ends after the job's terminal event
        return job_id


async def load(
    base: str, path: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, int]:
    done = errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, trust_env=False) as client:
        await client.get(path)  # warm the connection pool and the route
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < end:
                response = await client.get(path)
                if response.status_code == 200:
                    done += 1
                else:
                    errors += 1

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        elapsed = time.monotonic() - start
    return done / elapsed, errors


def key_check_us(tenants: list[dict[str, str]]) -> float:
    """The part auth adds to every request, timed on its own: hash the key, compare it with
    every digest (what `Keyring.lookup` does)."""
    keyring = Keyring(ServerSettings(tenants=[TenantKey.model_validate(t) for t in tenants]))
    calls = 20_000
    start = time.perf_counter()
    for _ in range(calls):
        keyring.lookup(KEY)
    return (time.perf_counter() - start) / calls * 1e6


async def main_async(args: argparse.Namespace) -> None:
    tenants = [
        {"tenant": f"t{i}", "key_sha256": hashlib.sha256(f"other-{i}".encode()).hexdigest()}
        for i in range(49)
    ]
    tenants.append({"tenant": "bench", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()})
    with corpus_file() as corpus:
        off_port, on_port = free_port(), free_port()
        servers = [start(off_port, corpus, None), start(on_port, corpus, tenants)]
        try:
            off = (f"http://127.0.0.1:{off_port}", {})
            on = (f"http://127.0.0.1:{on_port}", {"Authorization": f"Bearer {KEY}"})
            paths = {
                "off": f"/v1/research/{await ready_job(*off)}",
                "on": f"/v1/research/{await ready_job(*on)}",
            }
            rates: dict[str, list[float]] = {"off": [], "on": []}
            print(f"GET /v1/research/{{id}}: {args.concurrency} connections, {args.seconds:.0f} s per run")
            for round_ in range(args.rounds):
                for name, (base, headers) in (("off", off), ("on", on)):
                    rate, errors = await load(base, paths[name], headers, args.seconds, args.concurrency)
                    rates[name].append(rate)
                    print(f"  round {round_ + 1}, auth {name:3}: {rate:8.0f} req/s  ({errors} errors)")
            off_median, on_median = statistics.median(rates["off"]), statistics.median(rates["on"])
            print(f"median auth off: {off_median:.0f} req/s; auth on (50 tenants): {on_median:.0f} req/s")
            print(f"on / off: {on_median / off_median:.3f}")
            print(
                f"key check alone (50 digests, in this process): {key_check_us(tenants):.1f} µs per request"
            )
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    anyio.run(main_async, parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
