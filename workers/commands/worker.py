"""`heavyresearch worker`: an engine process for the redis or sqlite backend (several processes
share one file on one box). SIGTERM/SIGINT drain it."""

from __future__ import annotations

import logging
import signal

import anyio

from workers.engine import open_engine
from workers.settings import Settings
from workers.worker import Worker

log = logging.getLogger(__name__)


async def _main(settings: Settings) -> None:
    async with open_engine(settings, run_worker=False) as engine:
        assert engine.runner is not None
        worker = Worker(
            engine.runner.parts.backend,
            engine.runner,
            max_jobs=settings.worker.max_jobs,
            heartbeat_seconds=settings.worker.heartbeat_seconds,
        )
        async with anyio.create_task_group() as tg:

            async def drain_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("%s: draining worker %s", signal.Signals(signum).name, worker.worker_id)
                        worker.drain()
                        return

            tg.start_soon(drain_on_signal)
            await worker.run()
            tg.cancel_scope.cancel()


def run_worker(settings: Settings) -> int:
    if settings.backend not in ("redis", "sqlite"):
        log.error(
            "`heavyresearch worker` needs HR_BACKEND=sqlite or redis (the memory backend runs inside `serve`)"
        )
        return 2
    anyio.run(_main, settings, backend_options={"use_uvloop": True})
    return 0
