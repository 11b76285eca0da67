"""The Redis LLM limiter: caps and pace hold across processes, and dead processes free slots."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from tests.redis_server import RedisServer, redis_server, redis_servers  # noqa: F401  (fixtures)
from workers.backend.redis import RedisBackend
from workers.backend.redis_limiter import RedisLimiter
from workers.errors import BackendUnavailable, RetryableError

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def limiters(
    redis_server: RedisServer,  # noqa: F811
    prefix: str,
    anyio_backend: str,
) -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two limiters with their own connection pools, as two worker processes would have."""
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            backend = RedisBackend(redis_server.url, prefix=prefix)
            stack.push_async_callback(backend.close)
            pair.append(await stack.enter_async_context(RedisLimiter.from_backend(backend)))
        yield pair[0], pair[1]


async def test_concurrency_is_never_exceeded_across_processes(
    limiters: tuple[RedisLimiter, RedisLimiter],
) -> None:
    in_flight = peak = calls = 0

    async def call(limiter: RedisLimiter) -> None:
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


async def test_endpoints_have_separate_caps(limiters: tuple[RedisLimiter, RedisLimiter]) -> None:
    first, second = limiters
    with anyio.fail_after(10):
        async with first.slot("a", 1, 0), second.slot("b", 1, 0):
            pass


async def test_requests_per_minute_pace_across_processes(
    limiters: tuple[RedisLimiter, RedisLimiter],
) -> None:
    admitted: list[float] = []

    async def call(limiter: RedisLimiter) -> None:
        async with limiter.slot("paced", 100, 1200):  # one every 50 ms
            admitted.append(time.monotonic())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(call, limiters[i % 2])
    admitted.sort()
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    # A few ms of slack for clock reading and sleep granularity, never a burst.
    assert min(gaps) > 0.04, gaps
    assert admitted[-1] - admitted[0] > 7 * 0.05 - 0.01


async def test_errors_in_the_call_come_out_unchanged(limiters: tuple[RedisLimiter, RedisLimiter]) -> None:
    limiter = limiters[0]
    with pytest.raises(RetryableError):
        async with limiter.slot("e", 1, 0):
            raise RetryableError("503 from the model")
    # The slot was given back.
    with anyio.fail_after(5):
        async with limiter.slot("e", 1, 0):
            pass


async def test_errors_through_the_limiter_lifetime_come_out_unchanged(
    redis_server: RedisServer,  # noqa: F811
    prefix: str,
) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    try:
        with pytest.raises(ValueError, match="engine"):
            async with RedisLimiter.from_backend(backend):
                raise ValueError("engine failed")
    finally:
        await backend.close()


async def test_a_limiter_that_is_not_running_refuses(redis_server: RedisServer, prefix: str) -> None:  # noqa: F811
    backend = RedisBackend(redis_server.url, prefix=prefix)
    try:
        with pytest.raises(RuntimeError, match="not running"):
            async with RedisLimiter.from_backend(backend).slot("x", 1, 0):
                pass
    finally:
        await backend.close()


HOLDER = textwrap.dedent(
    """
    import sys
    import anyio
    from workers.backend.redis import RedisBackend
    from workers.backend.redis_limiter import RedisLimiter

    async def main() -> None:
        backend = RedisBackend(sys.argv[1], prefix=sys.argv[2])
        async with RedisLimiter.from_backend(backend, hold_seconds=0.5) as limiter:
            async with limiter.slot("shared", 1, 0):
                print("held", flush=True)
                await anyio.sleep_forever()

    anyio.run(main)
    """
)


@pytest.fixture
def holder(redis_server: RedisServer, prefix: str) -> Iterator[subprocess.Popen[str]]:  # noqa: F811
    """Another worker process, holding the only slot of endpoint `shared`."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, prefix],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def test_a_killed_process_frees_its_slot(
    redis_server: RedisServer,  # noqa: F811
    prefix: str,
    holder: subprocess.Popen[str],
) -> None:
    backend = RedisBackend(redis_server.url, prefix=prefix)
    try:
        assert holder.stdout is not None
        with anyio.fail_after(30):
            assert (await anyio.to_thread.run_sync(holder.stdout.readline)).strip() == "held"
        async with RedisLimiter.from_backend(backend) as limiter:
            # Alive, the holder keeps extending its 0.5 s hold: the slot stays taken.
            with anyio.move_on_after(1.5) as waited:
                async with limiter.slot("shared", 1, 0):
                    pass
            assert waited.cancelled_caught
            holder.kill()
            await anyio.to_thread.run_sync(holder.wait)
            with anyio.fail_after(10):
                async with limiter.slot("shared", 1, 0):
                    pass
    finally:
        await backend.close()


async def test_unavailable_when_redis_is_down(redis_servers: Callable[..., RedisServer]) -> None:  # noqa: F811
    server = redis_servers(appendonly=False)
    backend = RedisBackend(server.url, prefix="hr", connect_timeout=1.0)
    try:
        async with RedisLimiter.from_backend(backend) as limiter:
            server.kill()
            with anyio.fail_after(10), pytest.raises(BackendUnavailable):
                async with limiter.slot("x", 1, 0):
                    pass
    finally:
        await backend.close()
