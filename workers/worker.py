"""The worker: claims jobs from the backend's queue and runs them, with heartbeats and drain.

With the memory backend it runs inside the API process; with redis, as `heavyresearch worker`
processes on any machines.
"""

from __future__ import annotations

import logging
import os
import socket

import anyio

from workers.backend.base import Backend
from workers.errors import BackendUnavailable, SourceConflict
from workers.runner import JobRunner

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class Worker:
    def __init__(
        self,
        backend: Backend,
        runner: JobRunner,
        *,
        max_jobs: int,
        heartbeat_seconds: float,
        worker_id: str | None = None,
        claim_timeout: float = 1.0,
    ) -> None:
        self.backend = backend
        self.runner = runner
        self.max_jobs = max_jobs
        self.heartbeat_seconds = heartbeat_seconds
        self.worker_id = worker_id or default_worker_id()
        self.claim_timeout = claim_timeout
        self._draining = anyio.Event()
        self._running: dict[str, anyio.CancelScope] = {}

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    def drain(self) -> None:
        """Stop claiming and hand running jobs back to the queue; they resume from checkpoints."""
        if self._draining.is_set():
            return
        log.info("worker %s draining %d job(s)", self.worker_id, len(self._running))
        self._draining.set()
        for scope in self._running.values():
            scope.cancel()

    async def run(self) -> None:
        """Claim and run jobs until drained."""
        slots = anyio.Semaphore(self.max_jobs)
        log.info("worker %s started (max %d jobs)", self.worker_id, self.max_jobs)
        async with anyio.create_task_group() as tg:
            while not self._draining.is_set():
                await slots.acquire()
                if self._draining.is_set():
                    slots.release()
                    break
                try:
                    job_id = await self._claim()
                except BackendUnavailable as exc:
                    # A worker outlives a backend outage: it keeps trying to claim.
                    slots.release()
                    log.warning("worker %s cannot claim jobs: %s", self.worker_id, exc)
                    await anyio.sleep(self.claim_timeout)
                    continue
                except BaseException:
                    slots.release()
                    raise
                if job_id is None:
                    slots.release()
                    continue
                scope = anyio.CancelScope()
                self._running[job_id] = scope
                tg.start_soon(self._run_job, job_id, scope, slots)
        log.info("worker %s stopped", self.worker_id)

    async def _claim(self) -> str | None:
        # A short claim timeout bounds how long a drain waits for the claim loop to notice.
        job_id = await self.backend.claim(self.worker_id, self.claim_timeout)
        if job_id is not None and self._draining.is_set():
            await self.backend.release(job_id)
            return None
        return job_id

    async def _run_job(self, job_id: str, scope: anyio.CancelScope, slots: anyio.Semaphore) -> None:
        finished = False
        lost = anyio.Event()
        failure: Exception | None = None
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat, job_id, lost, scope)
                    try:
                        await self.runner.run(job_id)
                        finished = True
                    except Exception as exc:
                        # Kept out of the task group, which would wrap it in an ExceptionGroup
                        # that none of the handlers below matches (all went to "crashed").
                        failure = exc
                    tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
        except BackendUnavailable as exc:
            log.warning("job stopped: backend unavailable (%s)", exc, extra={"job_id": job_id})
        except SourceConflict as exc:
            # Another worker runs the job (this one outlived its lease): leave it to that one.
            log.warning("job stopped: %s", exc, extra={"job_id": job_id})
            lost.set()
        except Exception:
            # A bug, not a job outcome: log it loudly and hand the job back rather than lose it.
            log.exception("job crashed in worker %s", self.worker_id, extra={"job_id": job_id})
        finally:
            # A run the drain stopped was not the job's fault: its attempt is given back, or a
            # long job would fail as poisoned after a few deploys.
            drained = not finished and failure is None and self._draining.is_set()
            with anyio.CancelScope(shield=True):
                await self._settle(job_id, finished=finished, lost=lost.is_set(), drained=drained)
            self._running.pop(job_id, None)
            slots.release()

    async def _settle(self, job_id: str, *, finished: bool, lost: bool, drained: bool) -> None:
        """Ack a finished job, hand back an unfinished one; a lost job is another worker's now.
        A job stopped after its end but before its webhook call (a drain) counts as unfinished:
        the worker that claims it next makes the call. A `drained` run's attempt is given back
        (`worker.max_attempts` counts the runs that crashed or were killed)."""
        if lost:
            log.warning("job lost to another worker (lease lapsed)", extra={"job_id": job_id})
            return
        try:
            record = None if finished else await self.backend.get_job(job_id)
            if finished or record is None or (record.status.terminal and not record.webhook_due):
                await self.backend.ack(job_id)
            else:
                if drained and record is not None and not record.status.terminal and record.attempts > 0:
                    record.attempts -= 1
                    await self.backend.save_job(record)
                await self.backend.release(job_id)
                log.info("job released by worker %s", self.worker_id, extra={"job_id": job_id})
        except BackendUnavailable as exc:
            # The lease lapses on its own and another worker reclaims the job.
            log.warning("could not settle job: %s", exc, extra={"job_id": job_id})

    async def _heartbeat(self, job_id: str, lost: anyio.Event, scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(self.heartbeat_seconds)
            try:
                held = await self.backend.heartbeat(self.worker_id, job_id)
            except BackendUnavailable as exc:
                log.warning("heartbeat failed: %s", exc, extra={"job_id": job_id})
                continue
            if not held:
                # Another worker took the job over (this one stalled past its lease): stop at
                # once so two workers never run the same agents.
                lost.set()
                scope.cancel()
                return
