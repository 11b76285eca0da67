"""Tool cache + coalescing benchmark (issue 5). Prints figures; asserts nothing about timing.

Real 8-agent Heavy jobs run over local fakes of the web (tests/fake_search_apis.py): search
through a fake Serper (0.2 s per answer) whose hits link to a fake website, pages fetched from
it and summarised by the simulated model. Upstream calls are counted at the fakes: search API
requests, page fetches, summariser calls. Each job runs twice:

- with the shared cache and coalescing (what `build_tools` builds), and
- without (every tool call goes upstream: the baseline),

first cold, then again on the same question (a warm cache: a user asking twice, or another
worker taking the same question). Printed as calls and as a baseline / cached ratio.

    .venv/bin/python -m bench.bench_tool_cache
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from bench._common import corpus_file, settings_for
from tests.fake_search_apis import API_KEY, SearchAPIs, Website
from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus
from workers.engine import open_engine
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.llm import OpenAIChatModel
from workers.models import ResearchRequest
from workers.sim.faults import SimConfig
from workers.sim.server import SimServer
from workers.tools.base import ToolContext
from workers.tools.factory import aclose_tools, build_tools
from workers.tools.web.cache import SharedCache

AGENTS = 8
ROUNDS = 12
# Rounds a simulated agent researches before it answers (search, visit, search, visit, …).
MIN_ROUNDS = 8
QUESTIONS = [
    "When was the Halvard Observatory founded?",
    "Who discovered Comet Brandvik?",
]


@dataclass
class Upstream:
    search: int = 0
    pages: int = 0
    summaries: int = 0
    tool_calls: int = 0

    @property
    def total(self) -> int:
        return self.search + self.pages + self.summaries


async def run_job(engine: Any, question: str) -> list[Event]:
    request = ResearchRequest(query=question, agents=AGENTS, max_rounds=ROUNDS)
    record, _ = await submit_job(engine.backend, request, simulated=True)
    events: list[Event] = []
    while not (events and events[-1].type.terminal):
        events += await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
    assert events[-1].type == EventType.job_succeeded, events[-1]
    return events


async def scenario(coalesce: bool, question: str) -> tuple[Upstream, Upstream]:
    """Upstream calls of a cold job and of the same job again, with or without the cache."""
    with (
        corpus_file() as corpus,
        SimServer(SimConfig(latency=0.05, min_rounds=MIN_ROUNDS)) as sim,
        SearchAPIs(latency=0.2) as apis,
        Website() as site,
    ):
        assert site.server is not None
        apis.hit_base = site.server.base_url
        settings = settings_for(
            corpus,
            sim.base_url,
            search={
                "providers": ["serper", "local"],
                "serper": {"base_url": apis.url("serper"), "api_key": API_KEY},
            },
            visit={"allow_hosts": ["127.0.0.1"]},
        )
        counts: list[Upstream] = []
        async with open_engine(settings, run_worker=True) as engine:
            if not coalesce:
                assert engine.runner is not None
                _switch_off_coalescing(engine.runner.parts.tools)
            for _ in range(2):
                before = Upstream(apis.count(), sum(site.hits.values()), sim.stats.by_role["summariser"])
                events = await run_job(engine, question)
                counts.append(
                    Upstream(
                        apis.count() - before.search,
                        sum(site.hits.values()) - before.pages,
                        sim.stats.by_role["summariser"] - before.summaries,
                        sum(1 for e in events if e.type == EventType.tool_result),
                    )
                )
        return counts[0], counts[1]


async def first_round(coalesce: bool, question: str) -> Upstream:
    """8 agents' first two rounds at once, as Heavy Mode starts them: every agent searches the
    question and then reads the top three hits for it (the same calls, issued together)."""
    with (
        corpus_file() as corpus,
        SimServer(SimConfig(latency=0.05)) as sim,
        SearchAPIs(latency=0.2) as apis,
        Website() as site,
    ):
        assert site.server is not None
        apis.hit_base = site.server.base_url
        settings = settings_for(
            corpus,
            sim.base_url,
            search={"providers": ["serper"], "serper": {"base_url": apis.url("serper"), "api_key": API_KEY}},
            visit={"allow_hosts": ["127.0.0.1"]},
        )
        if not coalesce:
            settings = settings.model_copy(
                update={
                    "search": settings.search.model_copy(update={"cache_ttl": 0}),
                    "visit": settings.visit.model_copy(update={"cache_ttl": 0}),
                }
            )
        backend = MemoryBackend()
        llm = settings.llm.model_copy(update={"base_url": sim.openai_base_url})
        async with OpenAIChatModel.from_settings(llm) as model:
            reader = Corpus.open(corpus)
            tools = build_tools(settings, corpus=reader, backend=backend, model=model)
            if not coalesce:
                _switch_off_coalescing(tools)
            try:

                async def agent(n: int) -> None:
                    ctx = ToolContext("job_bench", n, backend)
                    found = await tools["search"]({"query": [question]}, ctx)
                    urls = [s.url for s in found.sources[:3]]
                    await tools["visit"]({"url": urls, "goal": question}, ctx)

                async with anyio.create_task_group() as tg:
                    for n in range(AGENTS):
                        tg.start_soon(agent, n)
            finally:
                await aclose_tools(tools)
                reader.close()
        return Upstream(apis.count(), sum(site.hits.values()), sim.stats.by_role["summariser"], AGENTS * 2)


def _switch_off_coalescing(tools: Mapping[str, Any]) -> None:
    """The baseline: the same tools with the cache and coalescing switched off."""
    search, visit = tools["search"], tools["visit"]
    search.service.cache = SharedCache(MemoryBackend(), wait=1, store=False, coalesce=False)
    visit.fallback.cache = SharedCache(MemoryBackend(), wait=1, store=False, coalesce=False)


def ratio(a: int, b: int) -> str:
    return f"{a / b:.1f}x fewer with the cache" if b else "none at all with the cache (all served from it)"


def row(label: str, u: Upstream) -> str:
    return f"{label:<40} {u.tool_calls:>10} {u.search:>7} {u.pages:>6} {u.summaries:>6} {u.total:>6}"


HEADER = f"{'':<40} {'tool calls':>10} {'search':>7} {'pages':>6} {'summ.':>6} {'total':>6}"


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    print(f"Tool cache + coalescing: upstream calls of {AGENTS} agents over local fakes of the web")
    print("(search = search API requests, pages = page fetches, summ. = summariser model calls)\n")
    question = QUESTIONS[0]
    print(f"1. {AGENTS} agents' first rounds at once: search {question!r}, visit its top 3 hits")
    print(HEADER)
    without, cached = await first_round(False, question), await first_round(True, question)
    print(row("  without cache and coalescing", without))
    print(row("  with cache and coalescing", cached))
    print(f"  upstream calls: {ratio(without.total, cached.total)}\n")

    totals = {True: 0, False: 0}
    for n, question in enumerate(QUESTIONS, start=2):
        base_cold, base_warm = await scenario(False, question)
        cached_cold, cached_warm = await scenario(True, question)
        print(f"{n}. A Heavy job, {AGENTS} simulated agents, {MIN_ROUNDS}+ rounds each: {question!r}")
        print(HEADER)
        print(row("  without cache, first run", base_cold))
        print(row("  with cache+coalescing, first run", cached_cold))
        print(row("  without cache, same job again", base_warm))
        print(row("  with cache+coalescing, same job again", cached_warm))
        print(f"  upstream calls, first run: {ratio(base_cold.total, cached_cold.total)}")
        print(f"  upstream calls, same job again: {ratio(base_warm.total, cached_warm.total)}\n")
        totals[False] += base_cold.total + base_warm.total
        totals[True] += cached_cold.total + cached_warm.total
    print(
        f"Heavy jobs in all: {totals[False]} upstream calls without the cache, {totals[True]} with it: "
        f"{ratio(totals[False], totals[True])}."
    )


if __name__ == "__main__":
    anyio.run(main)
