"""The sqlite LLM limiter: caps and pace hold across processes on one file, and a killed process
frees its places (the same checks as the Redis limiter's, on a file in a temporary folder)."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from workers.backend.sqlite import SQLiteBackend
from workers.backend.sqlite_limiter import SQLiteLimiter
from workers.errors import RetryableError

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def limiters(tmp_path: Path, anyio_backend: str) -> AsyncIterator[tuple[SQLiteLimiter, SQLiteLimiter]]:
    """Two limiters with a connection and database thread each, as two processes would have."""
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            backend = SQLiteBackend(tmp_path / "heavyresearch.sqlite")
            stack.push_async_callback(backend.close)
            await backend.open()
            pair.append(await stack.enter_async_context(SQLiteLimiter.from_backend(backend)))
        yield pair[0], pair[1]


async def test_concurrency_is_never_exceeded_across_processes(
    limiters: tuple[SQLiteLimiter, SQLiteLimiter],
) -> None:
    in_flight = peak = calls = 0

    async def call(limiter: SQLiteLimiter) -> None:
        nonlocal in_flight, peak, calls
        async with limiter.slot("http://llm/v1#m", 3, 0):
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(0.02)  # the request in flight
            in_flight -= 1
            calls += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(24):
                tg.start_soon(call, limiters[i % 2])
    assert calls == 24
    assert peak == 3


async def test_requests_per_minute_pace_across_processes(
    limiters: tuple[SQLiteLimiter, SQLiteLimiter],
) -> None:
    admitted: list[float] = []

    async def call(limiter: SQLiteLimiter) -> None:
        async with limiter.slot("paced", 100, 1200):  # one every 50 ms
            admitted.append(time.monotonic())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(call, limiters[i % 2])
    admitted.sort()
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert min(gaps) > 0.04, gaps
    assert admitted[-1] - admitted[0] > 7 * 0.05 - 0.01


async def test_errors_in_the_call_come_out_unchanged(limiters: tuple[SQLiteLimiter, SQLiteLimiter]) -> None:
    limiter = limiters[0]
    with pytest.raises(RetryableError):
        async with limiter.slot("e", 1, 0):
            raise RetryableError("503 from the model")
    with anyio.fail_after(5):
        async with limiter.slot("e", 1, 0):
            pass


HOLDER = textwrap.dedent(
    """
    import sys
    import anyio
    from workers.backend.sqlite import SQLiteBackend
    from workers.backend.sqlite_limiter import SQLiteLimiter

    async def main() -> None:
        backend = SQLiteBackend(sys.argv[1])
        async with SQLiteLimiter.from_backend(backend, hold_seconds=0.5) as limiter:
            async with limiter.slot("shared", 1, 0):
                print("held", flush=True)
                await anyio.sleep_forever()

    anyio.run(main)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process on the file, holding the only place of endpoint `shared`."""
    path = tmp_path / "heavyresearch.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        yield process, path
    finally:
        process.kill()
        process.wait()


async def test_a_killed_process_frees_its_slot(holder: tuple[subprocess.Popen[str], Path]) -> None:
    process, path = holder
    backend = SQLiteBackend(path)
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            assert (await anyio.to_thread.run_sync(process.stdout.readline)).strip() == "held"
        async with SQLiteLimiter.from_backend(backend) as limiter:
            # Alive, the holder keeps extending its 0.5 s hold: the place stays taken.
            with anyio.move_on_after(1.5) as waited:
                async with limiter.slot("shared", 1, 0):
                    pass
            assert waited.cancelled_caught
            process.kill()
            await anyio.to_thread.run_sync(process.wait)
            with anyio.fail_after(10):
                async with limiter.slot("shared", 1, 0):
                    pass
    finally:
        await backend.close()


# -- reuse of a released place within the process --------------------------------------------------


def holders(path: Path, endpoint: str) -> list[str]:
    """The holder tokens of `endpoint`, read on a connection of the test's own."""
    with sqlite3.connect(path) as conn:
        return [
            row[0] for row in conn.execute("SELECT token FROM limiter_slots WHERE endpoint = ?", (endpoint,))
        ]


async def test_a_released_place_is_reused_then_given_back(tmp_path: Path) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    backend = SQLiteBackend(path)
    await backend.open()
    try:
        async with SQLiteLimiter.from_backend(backend, linger=0.5) as limiter:
            async with limiter.slot("reuse", 1, 0):
                (first,) = holders(path, "reuse")
            released = time.monotonic()
            for _ in range(3):
                with anyio.fail_after(5):
                    async with limiter.slot("reuse", 1, 0):
                        # The same record, neither dropped nor added again.
                        assert holders(path, "reuse") == [first]
            with anyio.fail_after(10):
                while holders(path, "reuse"):  # noqa: ASYNC110 - polls the file, which has no event
                    await anyio.sleep(0.01)
            assert time.monotonic() - released > 0.5 - 0.1
    finally:
        await backend.close()


async def test_exit_gives_back_idle_places(tmp_path: Path) -> None:
    path = tmp_path / "heavyresearch.sqlite"
    backend = SQLiteBackend(path)
    await backend.open()
    try:
        async with SQLiteLimiter.from_backend(backend, linger=30.0) as limiter:
            async with limiter.slot("exit", 2, 0), limiter.slot("exit", 2, 0):
                pass
            assert len(holders(path, "exit")) == 2
        assert holders(path, "exit") == []
    finally:
        await backend.close()
