"""A job's model outage, measured in time: when it began, and whether the job still waits it out.

The LLM client already retries one call for `retry_budget` seconds. When a call still fails, the
endpoint is down for longer than that: the agent pauses (an `agent.paused` event says so) and
tries again, instead of failing. All agents of a job share one clock, so the job-level
`outage_budget` counts the outage once, not once per agent, from the first call that gave up
(that call had already retried for its `retry_budget`); any successful call ends it. Past the
budget, agents answer from their reports without the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OutageClock:
    budget: float  # seconds of outage the job rides out
    pause: float  # seconds an agent waits before calling a down endpoint again
    clock: Callable[[], float] = time.monotonic
    down_since: float | None = field(default=None, init=False)

    def failed(self) -> float:
        """A call failed for good: the outage (if not already running) starts now. Returns the
        seconds it has lasted."""
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
        return now - self.down_since

    def succeeded(self) -> None:
        self.down_since = None

    @property
    def lasted(self) -> float:
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    @property
    def spent(self) -> bool:
        return self.down_since is not None and self.lasted >= self.budget

    def next_pause(self) -> float:
        """How long to wait before the next try: never past the end of the budget."""
        return max(0.0, min(self.pause, self.budget - self.lasted))
