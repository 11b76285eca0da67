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
from redis.asyncio import Redis

from tests.redis_server import RedisServer, redis_server, redis_servers  # noqa: F401  (fixtures)
from workers.backend.held_slots import LINGER
from workers.backend.keys import RedisKeys
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


# -- reuse of a released slot within the process ---------------------------------------------------


@pytest.fixture
async def quiet(redis_servers: Callable[..., RedisServer]) -> AsyncIterator[tuple[RedisBackend, Redis]]:  # noqa: F811
    """A private server, so its command counts are this test's only; a backend and a probe client."""
    server = redis_servers(appendonly=False)
    backend = RedisBackend(server.url, prefix="hr")
    probe = Redis.from_url(server.url)
    try:
        yield backend, probe
    finally:
        await probe.aclose()
        await backend.close()


async def limiter_calls(probe: Redis) -> dict[str, int]:
    """Calls per command since the last `CONFIG RESETSTAT`, without the probe's own."""
    stats = await probe.info("commandstats")
    own = {"info", "config", "zcard", "client", "hello", "ping"}
    counts = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
    return {name: n for name, n in counts.items() if name.split("|")[0] not in own}


async def holders(probe: Redis, endpoint: str) -> int:
    return int(await probe.zcard(RedisKeys("hr").limiter_slots(endpoint)))


async def test_a_released_slot_is_reused_without_a_redis_call(quiet: tuple[RedisBackend, Redis]) -> None:
    backend, probe = quiet
    async with RedisLimiter.from_backend(backend, linger=30.0) as limiter:
        async with limiter.slot("reuse", 1, 0):
            pass
        await probe.config_resetstat()
        for _ in range(5):
            with anyio.fail_after(5):
                async with limiter.slot("reuse", 1, 0):
                    assert await holders(probe, "reuse") == 1
        assert await limiter_calls(probe) == {}
        # Pace is still booked per call: its script (and the commands it runs) once per call,
        # nothing for the slot. (A first paced call loads the script.)
        async with limiter.slot("reuse", 1, 6000):
            pass
        await probe.config_resetstat()
        for _ in range(3):
            async with limiter.slot("reuse", 1, 6000):
                pass
        assert await limiter_calls(probe) == {"evalsha": 3, "time": 3, "get": 3, "set": 3}


async def test_idle_slots_go_back_after_the_linger_in_one_call(quiet: tuple[RedisBackend, Redis]) -> None:
    backend, probe = quiet
    linger = 0.5
    async with RedisLimiter.from_backend(backend, linger=linger) as limiter:
        async with limiter.slot("idle", 3, 0), limiter.slot("idle", 3, 0), limiter.slot("idle", 3, 0):
            await probe.config_resetstat()
        released = time.monotonic()
        # Still this process's, and still counted.
        assert await holders(probe, "idle") == 3
        with anyio.fail_after(10):
            while await holders(probe, "idle") > 0:  # noqa: ASYNC110 - polls the store, which has no event
                await anyio.sleep(0.01)
        assert time.monotonic() - released > linger - 0.1
        assert await limiter_calls(probe) == {"zrem": 1}


async def test_another_process_gets_the_slot_after_the_linger(
    limiters: tuple[RedisLimiter, RedisLimiter],
) -> None:
    idle, waiter = limiters
    async with idle.slot("handover", 1, 0):
        pass
    released = time.monotonic()
    with anyio.fail_after(10):
        async with waiter.slot("handover", 1, 0):
            admitted = time.monotonic()
    # The idle process kept the slot for about its linger (the sweep may start a little early).
    assert admitted - released > LINGER - 0.1


async def test_the_cap_holds_across_processes_while_both_reuse(
    limiters: tuple[RedisLimiter, RedisLimiter],
) -> None:
    in_flight = peak = calls = 0

    async def agent(limiter: RedisLimiter) -> None:
        nonlocal in_flight, peak, calls
        for _ in range(6):
            async with limiter.slot("busy", 3, 0):
                in_flight += 1
                peak = max(peak, in_flight)
                await anyio.sleep(0.01)  # the request in flight
                in_flight -= 1
                calls += 1
            await anyio.sleep(0.005)  # parse, act, checkpoint: well within the linger

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(agent, limiters[i % 2])
    assert calls == 60
    assert peak == 3


async def test_exit_gives_back_idle_slots(quiet: tuple[RedisBackend, Redis]) -> None:
    backend, probe = quiet
    async with RedisLimiter.from_backend(backend, linger=30.0) as limiter:
        async with limiter.slot("exit", 2, 0), limiter.slot("exit", 2, 0):
            pass
        assert await holders(probe, "exit") == 2
    assert await holders(probe, "exit") == 0


async def test_a_cancelled_call_keeps_no_slot_from_others(quiet: tuple[RedisBackend, Redis]) -> None:
    backend, probe = quiet
    async with RedisLimiter.from_backend(backend, linger=30.0) as limiter:
        with anyio.move_on_after(0.05) as cancelled:
            async with limiter.slot("cancel", 1, 0):
                await anyio.sleep_forever()
        assert cancelled.cancelled_caught
        # Parked, not lost: this process takes it again at once, and exit gives it back.
        await probe.config_resetstat()
        with anyio.fail_after(5):
            async with limiter.slot("cancel", 1, 0):
                pass
        assert await limiter_calls(probe) == {}
    assert await holders(probe, "cancel") == 0


async def test_a_failed_give_back_is_logged_and_not_raised(
    redis_servers: Callable[..., RedisServer],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_servers(appendonly=False)
    backend = RedisBackend(server.url, prefix="hr", connect_timeout=1.0)
    try:
        with anyio.fail_after(30):
            async with RedisLimiter.from_backend(backend, linger=30.0) as limiter, limiter.slot("down", 1, 0):
                server.kill()
        assert "could not release 1 LLM slot(s)" in caplog.text
    finally:
        await backend.close()


async def test_a_waiter_is_queued_in_redis_and_leaves_the_queue_when_cancelled(
    quiet: tuple[RedisBackend, Redis],
) -> None:
    backend, probe = quiet
    queue = RedisKeys("hr").limiter_queue("queue")
    async with (
        RedisLimiter.from_backend(backend) as one,
        RedisLimiter.from_backend(backend) as other,
        one.slot("queue", 1, 0),
    ):
        with anyio.move_on_after(0.3):
            async with other.slot("queue", 1, 0):
                pytest.fail("admitted past the cap")
        # Queued while it waited (so a freed slot would have been its), and gone once it stopped.
        assert await probe.zcard(queue) == 0
        async with anyio.create_task_group() as tg:
            waiting = anyio.Event()

            async def wait_for_slot() -> None:
                waiting.set()
                async with other.slot("queue", 1, 0):
                    pass

            tg.start_soon(wait_for_slot)
            await waiting.wait()
            with anyio.fail_after(5):
                while await probe.zcard(queue) == 0:  # noqa: ASYNC110 - polls observable state
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert await probe.zcard(queue) == 0
