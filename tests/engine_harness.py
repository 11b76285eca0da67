"""Runs the real engine against the real simulated model over HTTP, on the memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from workers.backend import MemoryBackend
from workers.engine import Engine, open_engine
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.models import JobRecord, ResearchRequest
from workers.settings import Settings


def engine_settings(corpus: Path, sim_url: str, **overrides: Any) -> Settings:
    """Settings for an engine whose research model is the simulated server at `sim_url`."""
    base: dict[str, Any] = {
        "backend": "memory",
        "corpus": {"path": str(corpus), "auto_build": False},
        "llm": {
            "base_url": f"{sim_url}/v1",
            "model": "heavyresearch-sim",
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "timeout": 30.0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Settings(**base)


@dataclass
class Harness:
    engine: Engine
    sim_url: str

    @property
    def backend(self) -> MemoryBackend:
        assert isinstance(self.engine.backend, MemoryBackend)
        return self.engine.backend

    async def submit(self, query: str, **fields: Any) -> JobRecord:
        record, _ = await submit_job(self.backend, ResearchRequest(query=query, **fields), simulated=True)
        return record

    async def events_until(self, job_id: str, done: Any, timeout: float = 60.0) -> list[Event]:
        """Collect events until `done(events)` is true (or the job ends)."""
        events: list[Event] = []
        with anyio.fail_after(timeout):
            while not done(events):
                batch = await self.backend.wait_events(job_id, events[-1].seq if events else 0, 1.0)
                events.extend(batch)
                if events and events[-1].type.terminal:
                    break
        return events

    async def run_to_end(self, job_id: str, timeout: float = 60.0) -> list[Event]:
        return await self.events_until(job_id, lambda ev: bool(ev) and ev[-1].type.terminal, timeout)

    async def sim_config(self, **config: Any) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.sim_url}/sim/config", json=config)
            response.raise_for_status()

    async def sim_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.sim_url}/sim/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data


@asynccontextmanager
async def harness(corpus: Path, sim_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    async with open_engine(engine_settings(corpus, sim_url, **overrides), run_worker=True) as engine:
        yield Harness(engine, sim_url)


def rounds_by_agent(events: list[Event]) -> dict[int, list[int]]:
    rounds: dict[int, list[int]] = {}
    for event in events:
        if event.type == EventType.round_started and event.agent is not None and event.round is not None:
            rounds.setdefault(event.agent, []).append(event.round)
    return rounds
