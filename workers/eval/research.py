"""Running one rollout: a research job in this process (the engine, memory backend) or on a
running service (`POST /v1/research`, its event stream, then the job).

Both return the job as the JSON the service shows, read defensively so that a newer or older
service (fields added or missing, such as `usage.format_recoveries`) still gives a record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx

from workers.backend import Backend
from workers.commands.ask import _sse_events
from workers.errors import ResearchUnavailable
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.models import ResearchRequest

# A job's events are read in pages of this many while waiting for its end.
_WAIT_SECONDS = 5.0


@dataclass
class JobOutcome:
    job: dict[str, Any]  # the job as JSON (JobRecord locally, the JobView of the service)
    tool_calls: int
    submitted_at: float
    finished_at: float


class ResearchClient(Protocol):
    simulated: bool

    async def run(self, body: dict[str, Any], key: str) -> JobOutcome:
        """Research one question; `key` is the rollout's stable id (the Idempotency-Key)."""
        ...


def _count(events: list[Event]) -> tuple[int, bool]:
    calls = sum(1 for e in events if e.type == EventType.tool_called)
    return calls, any(e.type.terminal for e in events)


class LocalResearch:
    """Jobs on the in-process engine; its worker runs them."""

    def __init__(self, backend: Backend, *, simulated: bool) -> None:
        self.backend = backend
        self.simulated = simulated

    async def run(self, body: dict[str, Any], key: str) -> JobOutcome:
        unknown = set(body) - set(ResearchRequest.model_fields)
        if unknown:
            raise ResearchUnavailable(
                f"this engine does not know the request field(s) {sorted(unknown)} "
                "(run against a service that does, with --server)"
            )
        submitted = time.time()
        record, _ = await submit_job(self.backend, ResearchRequest(**body), simulated=self.simulated)
        after, tool_calls, done = 0, 0, False
        while not done:
            events = await self.backend.wait_events(record.id, after, _WAIT_SECONDS)
            if events:
                after = events[-1].seq
                calls, done = _count(events)
                tool_calls += calls
        final = await self.backend.get_job(record.id)
        if final is None:
            raise ResearchUnavailable(f"job {record.id} vanished from the backend")
        return JobOutcome(final.model_dump(mode="json"), tool_calls, submitted, time.time())


class RemoteResearch:
    """Jobs on a running service. The Idempotency-Key makes a re-run after an interruption pick
    up the job it had already started instead of researching the question again."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, simulated: bool = False) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.simulated = simulated

    async def run(self, body: dict[str, Any], key: str) -> JobOutcome:
        submitted = time.time()
        for attempt in range(6):
            response = await self.client.post(
                f"{self.base}/v1/research", json=body, headers={"Idempotency-Key": key}
            )
            if response.status_code not in (429, 503):
                break
            # A full queue or a restarting backend: wait as told, then try again.
            await anyio.sleep(min(float(response.headers.get("Retry-After", 1) or 1), 10.0) * (attempt + 1))
        if response.status_code >= 400:
            raise ResearchUnavailable(
                f"the service refused the job: HTTP {response.status_code} {response.text[:300]}"
            )
        job_id = str(response.json()["id"])
        tool_calls = 0
        async for event in _sse_events(self.client, f"{self.base}/v1/research/{job_id}/events"):
            if event.type == EventType.tool_called:
                tool_calls += 1
            if event.type.terminal:
                break
        view = await self.client.get(f"{self.base}/v1/research/{job_id}")
        if view.status_code >= 400:
            raise ResearchUnavailable(f"could not read job {job_id}: HTTP {view.status_code}")
        return JobOutcome(view.json(), tool_calls, submitted, time.time())


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def job_stats(job: Mapping[str, Any]) -> dict[str, Any]:
    """What a record keeps of a job, from its JSON."""
    result = job.get("result") or {}
    usage = job.get("usage") or {}
    agents = [a for a in job.get("agents") or [] if isinstance(a, Mapping)]
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    timings = job.get("timings") or {}
    job_seconds = timings.get("duration_seconds")
    if job_seconds is None and job.get("started_at") and job.get("finished_at"):
        job_seconds = float(job["finished_at"]) - float(job["started_at"])
    cut_short = [str(c) for c in result.get("cut_short") or []]
    status = str(job.get("status", ""))
    if status != "succeeded":
        termination = status or "unknown"
    else:
        termination = "answer" if not cut_short else "forced answer: " + "; ".join(cut_short)
    return {
        "job_id": job.get("id"),
        "status": status,
        "prediction": str(result.get("answer") or ""),
        "report": str(result.get("report") or ""),
        "reports": {str(k): str(v) for k, v in (result.get("agent_reports") or {}).items()},
        # The released ReAct record's transcript, when the service returns one (mode "react").
        "messages": list(result.get("messages") or job.get("messages") or []),
        "termination": termination,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
            "calls": _int(usage.get("calls")),
            "format_recoveries": _int(usage.get("format_recoveries")),
        },
        "job_seconds": job_seconds,
        "rounds": sum(_int(a.get("rounds")) for a in agents),
        "forced_answers": sum(1 for a in agents if str(a.get("stop_reason") or "").startswith("forced")),
        "simulated": bool(job.get("simulated") or result.get("simulated")),
        "error": None if status == "succeeded" else str(job.get("error") or f"job {status}"),
    }
