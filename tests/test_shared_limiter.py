"""Each backend offers the LLM limiter its processes share (the engine asks the backend, and
never checks which backend it has): none for memory, one budget across processes otherwise."""

from __future__ import annotations

import anyio
import pytest

from tests.backend_contract import BackendMaker
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from tests.test_backend_contract import make  # noqa: F401  (fixture: memory, sqlite, redis)
from workers.backend import MemoryBackend
from workers.backend.retrying import RetryingBackend

pytestmark = pytest.mark.anyio


async def test_memory_has_no_shared_limiter() -> None:
    backend = MemoryBackend()
    await backend.open()
    assert backend.shared_limiter(patience=1.0) is None
    assert RetryingBackend(backend).shared_limiter(patience=1.0) is None


async def test_two_processes_on_one_store_share_one_concurrency_budget(make: BackendMaker) -> None:  # noqa: F811
    if make.kind == "memory":
        pytest.skip("the memory backend lives in one process")
    first, second = make(), make()
    for backend in (first, second):
        await backend.open()
    one = first.shared_limiter(patience=5.0)
    # Through the retrying wrapper, as a worker process builds it.
    other = RetryingBackend(second).shared_limiter(patience=5.0)
    assert one is not None and other is not None
    async with one as a, other as b:
        async with a.slot("endpoint-x", 1, 0):
            # The only place is held by the other "process": this one is not admitted.
            with anyio.move_on_after(0.5) as waited:
                async with b.slot("endpoint-x", 1, 0):
                    pass
            assert waited.cancelled_caught
            # Another endpoint has a budget of its own.
            with anyio.fail_after(5):
                async with b.slot("endpoint-y", 1, 0):
                    pass
        with anyio.fail_after(5):
            async with b.slot("endpoint-x", 1, 0):
                pass


async def test_a_process_calling_back_to_back_lets_a_waiter_elsewhere_in(make: BackendMaker) -> None:  # noqa: F811
    """A process whose agents call again as soon as a call ends would keep its lingering slots
    for ever, and win every freed one over a waiter polling with backoff: the store's queue
    and the queue watch hand the slot over."""
    if make.kind == "memory":
        pytest.skip("the memory backend lives in one process")
    first, second = make(), make()
    for backend in (first, second):
        await backend.open()
    one, other = first.shared_limiter(patience=5.0), second.shared_limiter(patience=5.0)
    assert one is not None and other is not None
    async with one as a, other as b:
        let_in = anyio.Event()
        calls = 0

        async def back_to_back() -> None:
            nonlocal calls
            while not let_in.is_set():
                async with a.slot("endpoint-x", 1, 0):
                    calls += 1
                    await anyio.sleep(0.005)  # the model call

        async with anyio.create_task_group() as tg:
            tg.start_soon(back_to_back)
            with anyio.fail_after(5):
                while calls < 3:  # noqa: ASYNC110 - polls observable state
                    await anyio.sleep(0.01)
            before = calls
            with anyio.fail_after(10):
                async with b.slot("endpoint-x", 1, 0):
                    let_in.set()
        assert calls > before, "the busy process kept calling until the other got in"
