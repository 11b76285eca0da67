"""Cancel requests for the jobs one process runs, seen through one shared poll.

A running job must notice a cancel request within a poll period. Polled job by job, a worker
with 75 jobs made 375 backend calls a second for flags that are almost never set: a sixth of
the worker's CPU on Redis (`bench/bench_ceiling.py`). Here every watching job is answered by
one `Backend.cancel_requested` call a period.

There is no background task to own: the poll runs in one of the watching jobs' own tasks.
When that job leaves (it ended, or its cancel was seen), it hands the poll to another watcher,
so the poll lives exactly as long as someone watches.
"""

from __future__ import annotations

import anyio

from workers.backend.base import Backend


class _Watcher:
    def __init__(self) -> None:
        self.wake = anyio.Event()  # set when its cancel was seen, or the poll is handed to it
        self.cancelled = False


class CancelWatch:
    """`until_cancelled(job_id)` returns once the job's cancel was requested."""

    def __init__(self, backend: Backend, interval: float) -> None:
        self.backend = backend
        self.interval = interval
        self._watchers: dict[str, _Watcher] = {}
        self._poller: str | None = None  # the job whose task runs the poll

    async def until_cancelled(self, job_id: str) -> None:
        """Returns when a cancel for the job was seen; an error of the backend's from the poll
        is raised in whichever job's task ran it."""
        watcher = self._watchers[job_id] = _Watcher()
        try:
            while not watcher.cancelled:
                if self._poller is None:
                    self._poller = job_id
                    try:
                        await self._poll(watcher)
                    finally:
                        self._poller = None
                else:
                    await watcher.wake.wait()
                    watcher.wake = anyio.Event()
        finally:
            del self._watchers[job_id]
            if self._poller is None:
                self._hand_over()

    async def _poll(self, mine: _Watcher) -> None:
        while not mine.cancelled:
            await anyio.sleep(self.interval)
            for job_id in await self.backend.cancel_requested(list(self._watchers)):
                watcher = self._watchers.get(job_id)
                if watcher is not None:
                    watcher.cancelled = True
                    watcher.wake.set()

    def _hand_over(self) -> None:
        # Woken, a watcher finds no poller and takes the poll; one that leaves first (its job
        # ended meanwhile) hands it on from its own `finally`.
        for watcher in self._watchers.values():
            watcher.wake.set()
            return
