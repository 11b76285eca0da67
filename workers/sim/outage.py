"""A SIMULATED outage: a loopback TCP proxy in front of a model server that can be taken down.

While down, the proxy's port refuses connections (as a stopped server's does) and every open
connection is reset, which is what clients of a model server that stops or crashes see. Tests
and benchmarks put it between the engine and the simulated model (or a fake) to show how the
engine rides out an outage:

    with OutageProxy(sim.port) as proxy:
        ... HR_LLM__BASE_URL = f"http://127.0.0.1:{proxy.port}/v1" ...
        proxy.down_for(30)      # refused for 30 s, then serving again on the same port
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self


class OutageProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0  # chosen on the first start, then kept across outages
        self.outages = 0  # times it went down
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._up_task: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the outage ---------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self._server is not None

    def down(self) -> None:
        """Refuse new connections and reset the open ones, until `up()`."""
        self._call(self._close())
        self.outages += 1

    def up(self) -> None:
        self._call(self._listen())

    def down_for(self, seconds: float) -> None:
        """Down now, and up again `seconds` later (timed by the proxy, so the caller need not wait)."""
        self.down()

        def later() -> None:
            self._up_task = asyncio.ensure_future(self._listen())

        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, later)

    # -- inside the proxy's loop ----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _shutdown(self) -> None:
        await self._close()
        # Every connection's task ends here, not when the loop is dropped.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._conns):
            # An abort sends RST: the client sees a reset, as when a server process dies.
            writer.transport.abort()
        self._conns.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update({writer, up_writer})
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._conns.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
