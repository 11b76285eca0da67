"""Running the simulated model server: in a background thread (`SimServer`) or in the foreground
(`serve`, behind `heavyresearch sim-llm`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Self

import anyio
import uvicorn

from workers.sim.app import MODEL_ID, SimState, SimStats, create_app
from workers.sim.faults import SimConfig

log = logging.getLogger(__name__)

# Hangs end when the server stops (see `SimState.stopping`); this only bounds a stuck client.
_GRACEFUL_SHUTDOWN_SECONDS = 2
_START_TIMEOUT_SECONDS = 30.0


_THREAD_PREFIX = "sim-llm:"


class _QuietSimThreads(logging.Filter):
    """Drops uvicorn's routine lines (started, running on, shutting down) that come from an
    in-process simulated model's thread: they would read as the API's own, on the wrong port.
    Its warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not (record.threadName or "").startswith(_THREAD_PREFIX)


_QUIET = _QuietSimThreads()


class _Server(uvicorn.Server):
    """uvicorn, plus: it says when it is ready, and it ends the sim's pending sleeps on shutdown
    (uvicorn would otherwise wait for a one-hour hang to finish)."""

    def __init__(self, config: uvicorn.Config, state: SimState, ready: threading.Event | None = None) -> None:
        super().__init__(config)
        self.sim_state = state
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.ready is not None:
            self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.sim_state.stopping.set()
        await super().shutdown(sockets)


class SimServer:
    """The simulated model on a free loopback port, served from a background thread.

        with SimServer(SimConfig(min_rounds=5)) as sim:
            client = OpenAI(base_url=sim.openai_base_url, api_key="unused")

    Also an async context manager (start-up runs in a worker thread). `config` and `stats` give
    in-process access to what `/sim/config` and `/sim/stats` expose over HTTP.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._app = create_app(config)
        self._state: SimState = self._app.state.sim
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SimServer is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """The server's root URL (`/health`, `/sim/…`); OpenAI clients want `openai_base_url`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """`base_url` + `/v1`, the form OpenAI clients take."""
        return f"{self.base_url}/v1"

    @property
    def config(self) -> SimConfig:
        return self._state.config

    @config.setter
    def config(self, config: SimConfig) -> None:
        # An attribute swap: the serving loop sees either the old or the new config, never a mix.
        self._state.set_config(config)

    @property
    def stats(self) -> SimStats:
        return self._state.stats.model_copy(deep=True)

    def start(self) -> str:
        """Bind, serve in a daemon thread; return `base_url` once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("SimServer is already running")
        # Binding here, before the thread starts, makes port 0 race-free and reports a busy
        # port to the caller instead of inside the thread.
        # An explicit IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every keep-alive request stalls ~40 ms on Nagle's algorithm.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        # No log_level and no log_config: uvicorn would set them on its loggers process-wide,
        # muting (or re-formatting) the lines of the API serving in this same process.
        logging.getLogger("uvicorn.error").addFilter(_QUIET)
        config = uvicorn.Config(
            self._app,
            log_level=None,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._server = server = _Server(config, self._state, ready)

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            finally:
                sock.close()
                ready.set()  # unblock start() if serving failed before it was ready

        self._thread = threading.Thread(target=run, name=f"{_THREAD_PREFIX}{self._port}", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_SECONDS) or not server.started:
            self.stop()
            raise RuntimeError("the simulated model server did not start")
        return self.base_url

    def stop(self) -> None:
        """Stop serving; pending latency sleeps and hangs end at once."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join()
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)


def serve(port: int, config: SimConfig, *, host: str = "127.0.0.1") -> None:
    """Serve the simulated model in the foreground until interrupted (`heavyresearch sim-llm`)."""
    app = create_app(config)
    server_config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS
    )
    log.warning(
        "SIMULATED model server: %s is not a real LLM. OpenAI base URL http://%s:%d/v1 "
        "(latency %.2fs, fault rate %.2f, min rounds %d, seed %d)",
        MODEL_ID,
        host,
        port,
        config.latency,
        config.fault_rate,
        config.min_rounds,
        config.seed,
    )
    _Server(server_config, app.state.sim).run()
