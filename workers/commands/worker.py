"""`heavyresearch worker`: an engine process for the redis or sqlite backend (several processes
share one file on one box). SIGTERM/SIGINT drain it. With `--metrics-port` it serves its own
Prometheus metrics (`workers/metrics.py`): a scrape reads counters, nothing else."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from prometheus_client import start_http_server

from workers.engine import open_engine
from workers.metrics import engine_metrics
from workers.settings import Settings
from workers.worker import Worker

log = logging.getLogger(__name__)


@contextmanager
def metrics_server(host: str, port: int) -> Iterator[None]:
    """Serve this process's engine metrics on host:port (a daemon thread; port 0 = not at all)."""
    if not port:
        yield
        return
    server, thread = start_http_server(port, host, registry=engine_metrics().registry)
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _main(settings: Settings) -> None:
    async with open_engine(settings, run_worker=False, service="heavyresearch-worker") as engine:
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


def run_worker(
    settings: Settings, *, metrics_host: str | None = None, metrics_port: int | None = None
) -> int:
    if settings.backend not in ("redis", "sqlite"):
        log.error(
            "`heavyresearch worker` needs HR_BACKEND=sqlite or redis (the memory backend runs inside `serve`)"
        )
        return 2
    host = metrics_host or settings.worker.metrics_host
    port = metrics_port if metrics_port is not None else settings.worker.metrics_port
    with metrics_server(host, port):
        anyio.run(_main, settings, backend_options={"use_uvloop": True})
    return 0
