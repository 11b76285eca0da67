"""PythonInterpreter's embedded sandbox (issue 9): calls per second and start-up cost per call.
Prints figures; asserts nothing about timing (the target for start-up is under 150 ms).

Each call is a fresh bubblewrap process (new namespaces, tmpfs, rlimits) running the sandbox's
Python. Measured through the tool, as an agent calls it:

- start-up cost: wall time of a call whose program does nothing (`pass`), one at a time;
- a small real program (arithmetic and a print) one at a time;
- throughput: the same program with `sandbox.max_concurrency` calls in flight.

And, for scale, a bare `python3 -c pass` of the same interpreter without any sandbox, which is
the part of the start-up that bubblewrap does not add.

    .venv/bin/python -m bench.bench_python_sandbox [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import anyio

from workers.backend.memory import MemoryBackend
from workers.settings import SandboxSettings
from workers.tools.base import ToolContext
from workers.tools.python import PythonInterpreterTool, build_python_tool
from workers.tools.python.embedded import EmbeddedSandbox

PROGRAM = "import math\nprint(sum(math.sqrt(i) for i in range(10_000)))"


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered) * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms   "
        f"min {ordered[0] * 1000:6.1f} ms"
    )


async def timed_calls(tool: PythonInterpreterTool, code: str, calls: int) -> list[float]:
    ctx = ToolContext("job_bench", 0, MemoryBackend())
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        out = await tool({"code": code}, ctx)
        samples.append(time.perf_counter() - started)
        assert "Error" not in out.text, out.text
    return samples


async def throughput(tool: PythonInterpreterTool, code: str, calls: int) -> float:
    ctx = ToolContext("job_bench", 0, MemoryBackend())
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(tool, {"code": code}, ctx)
    return calls / (time.perf_counter() - started)


def bare_python(python: str, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        subprocess.run([python, "-I", "-c", "pass"], check=True)
        samples.append(time.perf_counter() - started)
    return samples


async def main(calls: int) -> None:
    settings = SandboxSettings(mode="embedded")
    tool, why = build_python_tool(settings)
    if tool is None:
        print(f"no embedded sandbox here: {why}")
        return
    sandbox = tool.sandboxes[0]
    assert isinstance(sandbox, EmbeddedSandbox)
    print(f"embedded sandbox: {why}; {calls} calls each; max_concurrency {settings.max_concurrency}")
    await timed_calls(tool, "pass", 3)  # warm the page cache
    startup = await timed_calls(tool, "pass", calls)
    small = await timed_calls(tool, PROGRAM, calls)
    rate = await throughput(tool, PROGRAM, calls)
    bare = await anyio.to_thread.run_sync(bare_python, sandbox.python, calls)
    print(f"start-up per call (empty program)   {summary(startup)}")
    one_rate = 1 / statistics.median(small)
    print(f"small program, one at a time        {summary(small)}   -> {one_rate:5.1f} calls/s")
    print(f"small program, {settings.max_concurrency} in flight           {rate:5.1f} calls/s")
    print(f"bare python3 -I -c pass (no sandbox) {summary(bare)}")
    overhead = statistics.median(startup) - statistics.median(bare)
    print(f"sandbox overhead over bare Python   {overhead * 1000:6.1f} ms per call (median)")
    print("(taken on a shared machine: other processes compete for the same cores)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    anyio.run(main, args.calls)
