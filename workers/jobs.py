"""Job lifecycle operations shared by every front end (HTTP, CLI): submit, cancel, delete.

They talk only to the backend, so they work the same whether the engine runs in this process
or in worker processes elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from workers import tracing
from workers.backend.base import Backend, new_job_id
from workers.errors import JobConflict, JobNotFound
from workers.events import EventType, NewEvent
from workers.models import JobRecord, JobStatus, ResearchRequest

log = logging.getLogger(__name__)

# Every terminal event is appended with this key, so a job can never end twice.
TERMINAL_KEY = "job.terminal"


def request_hash(request: ResearchRequest) -> str:
    body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


async def submit_job(
    backend: Backend,
    request: ResearchRequest,
    *,
    simulated: bool,
    idempotency_key: str | None = None,
    owner: str | None = None,
) -> tuple[JobRecord, bool]:
    """Store and enqueue a job. Returns (job, created); an idempotent replay returns created=False.

    Raises `JobConflict` when the key was used with a different body, `QueueFull` at capacity.
    """
    digest = request_hash(request)
    record = JobRecord(
        id=new_job_id(),
        request=request,
        simulated=simulated,
        idempotency_key=idempotency_key,
        request_hash=digest,
        owner=owner,
        trace_context=tracing.trace_context(),
    )
    stored, created = await backend.create_job(record)
    if not created:
        if stored.request_hash != digest:
            raise JobConflict(
                f"Idempotency-Key {idempotency_key!r} was already used with a different request body"
            )
        return stored, False
    # job.queued goes first, so it is event 1 even when a worker claims the job at once.
    await backend.append_event(
        record.id,
        NewEvent(
            type=EventType.job_queued,
            data={
                "agents": request.agents,
                "max_rounds": request.max_rounds,
                "mode": request.mode,
                "simulated": simulated,
            },
            key="job.queued",
        ),
    )
    try:
        await backend.enqueue(record.id)
    except Exception:
        # A job nobody will ever run must not linger as 'queued'.
        await backend.delete_job(record.id)
        raise
    log.info("job queued", extra={"job_id": record.id})
    return record, True


async def cancel_job(backend: Backend, job_id: str) -> JobRecord:
    """Ask for cancellation; idempotent, and a no-op on a finished job."""
    record = await backend.get_job(job_id)
    if record is None:
        raise JobNotFound(job_id)
    if record.status.terminal:
        return record
    await backend.request_cancel(job_id)
    if record.status == JobStatus.queued:
        # Nobody runs it yet, so finish it here; a worker that claims it later sees it terminal.
        # The terminal event's key makes a racing worker's own job.cancelled a no-op.
        record.cancel_requested = True
        record.status = JobStatus.cancelled
        record.finished_at = time.time()
        await backend.save_job(record)
        await backend.append_event(
            job_id,
            NewEvent(
                type=EventType.job_cancelled, data={"reason": "cancelled while queued"}, key=TERMINAL_KEY
            ),
        )
    else:
        # Only the flag: saving the whole record here could overwrite the runner's own save.
        record.cancel_requested = True
    log.info("job cancel requested", extra={"job_id": job_id})
    return record


async def delete_job(backend: Backend, job_id: str) -> None:
    record = await backend.get_job(job_id)
    if record is None:
        raise JobNotFound(job_id)
    if not record.status.terminal:
        raise JobConflict(f"job {job_id} is {record.status.value}; cancel it before deleting it")
    await backend.delete_job(job_id)
    log.info("job deleted", extra={"job_id": job_id})
