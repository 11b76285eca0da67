"""Heavy Mode: n research agents on one question, in parallel under one task group.

The agents are IterResearch agents (`mode="heavy"`) or ReAct agents (`mode="react"`, the
released evaluation's multi-rollout setting): the two modes differ only in the agent loop.
"""

from __future__ import annotations

import anyio

from workers import tracing
from workers.agent.context import JobContext
from workers.agent.iter_research import AgentSpec, IterResearchAgent
from workers.agent.react import ReActAgent
from workers.models import AgentCheckpoint, Mode

# The published sampling range; agents spread over it so they explore differently.
TEMPERATURE_RANGE = (0.6, 0.85)


def agent_specs(n: int, angles: list[str] | None, base_seed: int = 0) -> list[AgentSpec]:
    low, high = TEMPERATURE_RANGE
    specs = []
    for i in range(n):
        temperature = low if n == 1 else low + (high - low) * i / (n - 1)
        angle = angles[i % len(angles)] if angles else None
        specs.append(AgentSpec(index=i, seed=base_seed + i, temperature=round(temperature, 3), angle=angle))
    return specs


def agent_outcome(cp: AgentCheckpoint) -> tracing.Attributes:
    return {"heavyresearch.agent.status": cp.status.value, "heavyresearch.agent.rounds": cp.round}


async def run_agents(
    ctx: JobContext,
    specs: list[AgentSpec],
    checkpoints: dict[int, AgentCheckpoint],
    *,
    concurrency: int,
    mode: Mode = "heavy",
) -> list[AgentCheckpoint]:
    """Run (or resume) every agent; returns their final checkpoints in agent order.

    An agent's failure is recorded in its checkpoint and never stops the others; cancelling
    the caller's scope stops every agent, mid-call too.
    """
    limiter = anyio.CapacityLimiter(concurrency)
    agent_class = ReActAgent if mode == "react" else IterResearchAgent
    results: dict[int, AgentCheckpoint] = {}

    async def one(spec: AgentSpec) -> None:
        async with limiter:
            cp = checkpoints.get(spec.index) or AgentCheckpoint(agent=spec.index)
            results[spec.index] = await tracing.traced(
                "agent", agent_class(ctx, spec).run(cp), {tracing.AGENT: spec.index}, outcome=agent_outcome
            )

    async with anyio.create_task_group() as tg:
        for spec in specs:
            tg.start_soon(one, spec)
    return [results[spec.index] for spec in specs]
