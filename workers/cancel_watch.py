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
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.wake = anyio.Event()  # set when its cancel was seen, or the poll is handed to it
        self.cancelled = False


class CancelWatch:
    """`until_cancelled(job_id)` returns once the job's cancel was requested."""

    def __init__(self, backend: Backend, interval: float) -> None:
        self.backend = backend
        self.interval = interval
        # Per call, not per job id: a job run twice in one process (a lease that lapsed and was
        # claimed back) has two watchers, and each is told.
        self._watchers: set[_Watcher] = set()
        self._polling = False  # a watcher's task runs the poll

    async def until_cancelled(self, job_id: str) -> None:
        """Returns when a cancel for the job was seen; an error of the backend's from the poll
        is raised in whichever job's task ran it."""
        watcher = _Watcher(job_id)
        self._watchers.add(watcher)
        try:
            while not watcher.cancelled:
                if not self._polling:
                    self._polling = True
                    try:
                        await self._poll(watcher)
                    finally:
                        self._polling = False
                else:
                    await watcher.wake.wait()
                    watcher.wake = anyio.Event()
        finally:
            self._watchers.discard(watcher)
            if not self._polling:
                self._hand_over()

    async def _poll(self, mine: _Watcher) -> None:
        while not mine.cancelled:
            await anyio.sleep(self.interval)
            found = await self.backend.cancel_requested(list({w.job_id for w in self._watchers}))
            if not found:
                continue
            for watcher in self._watchers:
                if watcher.job_id in found:
                    watcher.cancelled = True
                    watcher.wake.set()

    def _hand_over(self) -> None:
        # Woken, a watcher finds no poll running and takes it; one that leaves first (its job
        # ended meanwhile) hands it on from its own `finally`.
        heir = next(iter(self._watchers), None)
        if heir is not None:
            heir.wake.set()
