"""Job events: one ordered log per job; `seq` starts at 1 and has no gaps."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventType(StrEnum):
    job_queued = "job.queued"
    job_started = "job.started"
    agent_started = "agent.started"
    round_started = "round.started"
    tool_called = "tool.called"
    tool_result = "tool.result"
    report_updated = "report.updated"
    agent_finished = "agent.finished"
    agent_failed = "agent.failed"
    synthesis_started = "synthesis.started"
    synthesis_delta = "synthesis.delta"
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    usage = "usage"
    # The model endpoint stayed down for a whole call: the agent waits, then tries again.
    agent_paused = "agent.paused"
    agent_resumed = "agent.resumed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({EventType.job_succeeded, EventType.job_failed, EventType.job_cancelled})


class Event(BaseModel):
    job_id: str
    seq: int
    ts: float
    type: EventType
    agent: int | None = None
    round: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class NewEvent(BaseModel):
    """An event before the log gives it a `seq` and `ts`.

    `key` makes appends idempotent: a resumed agent that replays a round re-emits events with
    the same key, and the log drops them instead of duplicating.
    """

    type: EventType
    agent: int | None = None
    round: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None

    def stamped(self, job_id: str) -> Event:
        """The event as the log stores it, before the log gives it its `seq`. `ts` is when the
        log takes it (an agent's round lands at once), so it never goes back along `seq`.
        Built without validation: every field comes from this validated event."""
        return Event.model_construct(
            job_id=job_id,
            seq=0,
            ts=time.time(),
            type=self.type,
            agent=self.agent,
            round=self.round,
            data=dict(self.data),  # its own top level, as validation would have made it
        )
