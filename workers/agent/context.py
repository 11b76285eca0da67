"""What one job's agents share while they run: the model, the tools, the event sink, budgets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from workers.agent.outage import OutageClock
from workers.agent.prompts import PromptSet
from workers.agent.tokens import EstimateCounter, TokenCounter
from workers.backend.base import Backend
from workers.budget import TimePlan as TimePlan
from workers.budget import TokenBudget as TokenBudget
from workers.events import Event, NewEvent
from workers.llm.types import ChatModel
from workers.metrics import engine_metrics
from workers.models import AgentCheckpoint
from workers.tools.base import Tool
from workers.tools.sources import JobSources


@dataclass
class JobContext:
    job_id: str
    question: str
    backend: Backend
    model: ChatModel
    tools: dict[str, Tool]
    prompts: PromptSet
    max_rounds: int
    deadline: float | None  # time.monotonic() value, None = no deadline
    budget: TokenBudget
    observation_max_chars: int = 6000
    # After a deadline, a forced answer still gets this long to come back from the model.
    grace_seconds: float = 20.0
    date: str = field(default_factory=lambda: datetime.now(UTC).date().isoformat())
    # ReAct mode: the transcript's token budget (`agent.react_context_tokens`) and how to count.
    context_tokens: int = 110_000
    token_counter: TokenCounter = field(default_factory=EstimateCounter)
    # One clock for the job's model outage, shared by its agents (see workers.agent.outage).
    outage: OutageClock = field(default_factory=lambda: OutageClock(budget=600.0, pause=10.0))
    # With `max_seconds`: when research, forced answers and the synthesis must be done.
    time_plan: TimePlan | None = None
    # The job's source registry, loaded from the store when the run starts.
    sources: JobSources = field(default_factory=JobSources)

    def forced_timeout(self) -> float:
        """How long a forced answer may still wait for the model."""
        return (
            self.grace_seconds
            if self.time_plan is None
            else self.time_plan.forced_timeout(self.grace_seconds)
        )

    def synthesis_timeout(self) -> float | None:
        return None if self.time_plan is None else self.time_plan.synthesis_timeout()

    async def emit(self, event: NewEvent) -> Event | None:
        appended = await self.backend.append_event(self.job_id, event)
        if appended is not None:  # None: a resumed job replaying an event already counted
            engine_metrics().event(appended)
        return appended

    async def commit(self, events: list[NewEvent], checkpoint: AgentCheckpoint | None) -> list[Event]:
        """Store an agent's round in one step, with every source not yet stored."""
        sources = self.sources.unconfirmed()
        appended = await self.backend.commit_round(self.job_id, events, checkpoint, sources)
        self.sources.confirm(sources)
        for event in appended:  # a resumed job's replayed events are skipped, already counted
            engine_metrics().event(event)
        return appended

    def seconds_left(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def tool_list(self) -> str:
        return "\n".join(f"- {tool.description}" for tool in self.tools.values())
