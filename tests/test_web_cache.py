"""The shared tool cache and call coalescing: parallel agents asking the same thing reach
upstream once, in one process and across processes (two caches over one backend stand for two
worker processes; with Redis they are two real connections), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest

from tests.backend_contract import BackendMaker
from tests.fake_search_apis import API_KEY, SearchAPIs, Website
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.backend.base import Backend
from workers.backend.memory import MemoryBackend
from workers.errors import BackendUnavailable, RetryableError
from workers.llm.types import ChatMessage, ChatResult, DeltaCallback, Role
from workers.net.client import page_client
from workers.net.ssrf import AddressGuard
from workers.settings import SearchProviderSettings
from workers.tools.base import ToolContext, ToolOutput
from workers.tools.web.cache import Made, SharedCache, normalise_url
from workers.tools.web.chain import ProviderChain
from workers.tools.web.fetch import PageFetcher
from workers.tools.web.providers import SerperProvider
from workers.tools.web.search import SearchService, WebSearchTool
from workers.tools.web.summarise import PageSummariser, load_template
from workers.tools.web.visit import WebVisitTool

AGENTS = 8


@pytest.fixture(autouse=True)
def reset(apis: SearchAPIs) -> None:
    apis.set("ok")
    apis.requests.clear()
    apis.arrived.clear()
    apis.released.clear()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


# Two "worker processes": on memory, two caches over the one backend object; on Redis, two
# backends on their own connections.
Processes = Callable[[], Awaitable[tuple[Backend, Backend]]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def processes(request: pytest.FixtureRequest) -> AsyncIterator[Processes]:
    if request.param == "memory":
        shared = MemoryBackend()

        async def memory() -> tuple[Backend, Backend]:
            return shared, shared

        yield memory
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    maker = BackendMaker("redis", server.url)

    async def redis() -> tuple[Backend, Backend]:
        return maker(), maker()

    try:
        yield redis
    finally:
        await maker.aclose()


def search_tool(
    apis: SearchAPIs, client: httpx.AsyncClient, backend: Backend, wait: float = 10
) -> WebSearchTool:
    settings = SearchProviderSettings(base_url=apis.url("serper"), api_key=API_KEY, timeout=10)
    chain = ProviderChain([SerperProvider(client, settings)])
    return WebSearchTool(SearchService(chain, SharedCache(backend, wait=wait), top_k=3, ttl=60))


async def all_at_once(
    calls: list[Callable[[], Awaitable[ToolOutput]]], apis: SearchAPIs | None = None
) -> list[ToolOutput]:
    """Start every call; with `apis` holding its answers, let them go once the first request has
    arrived upstream, so the calls overlap for real."""
    outputs: list[ToolOutput | None] = [None] * len(calls)

    async def run(i: int) -> None:
        outputs[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(run, i)
        if apis is not None:
            await anyio.to_thread.run_sync(apis.arrived.wait, 10)
            # Every other call is now parked on the first one's flight or the lock.
            await anyio.wait_all_tasks_blocked()
            apis.released.set()
    assert all(o is not None for o in outputs)
    return [o for o in outputs if o is not None]


@pytest.mark.anyio
async def test_eight_agents_one_query_one_upstream_request(
    apis: SearchAPIs, client: httpx.AsyncClient, processes: Processes
) -> None:
    backend, _ = await processes()
    apis.set("hold", "serper")
    tool = search_tool(apis, client, backend)

    def call(agent: int) -> Callable[[], Awaitable[ToolOutput]]:
        return lambda: tool(
            {"query": ["Who founded Halvard Observatory?"]}, ToolContext("job_1", agent, backend)
        )

    outputs = await all_at_once([call(a) for a in range(AGENTS)], apis)
    assert apis.count("serper") == 1
    assert sorted(o.cached for o in outputs) == [False] + [True] * (AGENTS - 1)
    assert {o.provider for o in outputs} == {"serper"}
    assert len({o.text for o in outputs}) == 1
    stats = tool.service.cache.stats
    assert (stats.made, stats.coalesced) == (1, AGENTS - 1)


@pytest.mark.anyio
async def test_coalescing_across_processes(
    apis: SearchAPIs, client: httpx.AsyncClient, processes: Processes
) -> None:
    first, second = await processes()
    apis.set("hold", "serper")
    tools = [search_tool(apis, client, first), search_tool(apis, client, second)]

    def call(agent: int) -> Callable[[], Awaitable[ToolOutput]]:
        tool = tools[agent % 2]
        backend = first if agent % 2 == 0 else second
        return lambda: tool({"query": ["Great Brass Refractor"]}, ToolContext("job_1", agent, backend))

    outputs = await all_at_once([call(a) for a in range(AGENTS)], apis)
    assert apis.count("serper") == 1
    assert sum(not o.cached for o in outputs) == 1
    assert sum(t.service.cache.stats.made for t in tools) == 1


@pytest.mark.anyio
async def test_later_calls_are_cache_hits(
    apis: SearchAPIs, client: httpx.AsyncClient, processes: Processes
) -> None:
    first, second = await processes()
    await search_tool(apis, client, first)({"query": ["Selka river"]}, ToolContext("j", 0, first))
    out = await search_tool(apis, client, second)({"query": ["selka   RIVER"]}, ToolContext("j", 1, second))
    assert out.cached is True
    assert apis.count() == 1


@pytest.mark.anyio
async def test_a_failed_call_fails_its_waiters_without_more_upstream_calls(
    apis: SearchAPIs, client: httpx.AsyncClient
) -> None:
    backend = MemoryBackend()
    apis.set("hold", "serper")
    tool = search_tool(apis, client, backend)
    failures: list[BaseException] = []

    async def call(agent: int) -> None:
        try:
            await tool({"query": ["doomed"]}, ToolContext("j", agent, backend))
        except RetryableError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for agent in range(AGENTS):
            tg.start_soon(call, agent)
        await anyio.to_thread.run_sync(apis.arrived.wait, 10)
        await anyio.wait_all_tasks_blocked()
        apis.set("500", "serper")  # the held request ends as a server error
        apis.released.set()
    assert apis.count("serper") == 1
    assert len(failures) == AGENTS
    # Nothing was cached: the next call goes upstream again.
    apis.set("ok", "serper")
    out = await tool({"query": ["doomed"]}, ToolContext("j", 0, backend))
    assert out.cached is False
    assert apis.count("serper") == 2


@pytest.mark.anyio
async def test_leader_cancelled_mid_flight() -> None:
    cache = SharedCache(MemoryBackend(), wait=5)
    started = anyio.Event()
    results: list[tuple[str, bool]] = []

    async def never() -> Made:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def quick() -> Made:
        return Made("value", 60)

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await cache.get_or_make("k", never)

        async def follow() -> None:
            results.append(await cache.get_or_make("k", quick))

        tg.start_soon(lead)
        await started.wait()
        tg.start_soon(follow)
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
    # The follower waited on the leader's flight, then made the value itself.
    assert results == [("value", False)]
    assert cache.stats.made == 2


@pytest.mark.anyio
async def test_a_stuck_lock_holder_is_waited_for_a_bounded_time() -> None:
    backend = MemoryBackend()
    # Another process took the lock and died without storing anything.
    assert await backend.try_lock("k", 60)
    cache = SharedCache(backend, wait=0.2)

    async def make() -> Made:
        return Made("mine", 60)

    with anyio.fail_after(5):
        assert await cache.get_or_make("k", make) == ("mine", False)
    assert cache.stats.made == 1


class DownBackend(MemoryBackend):
    """A backend whose cache is unreachable (a Redis outage, as the tools see it)."""

    async def cache_get(self, key: str) -> str | None:
        raise BackendUnavailable("redis is down")

    async def cache_set(self, key: str, value: str, ttl: int) -> None:
        raise BackendUnavailable("redis is down")

    async def try_lock(self, key: str, ttl: float) -> bool:
        raise BackendUnavailable("redis is down")

    async def unlock(self, key: str) -> None:
        raise BackendUnavailable("redis is down")


@pytest.mark.anyio
async def test_an_unreachable_cache_only_costs_upstream_calls(
    apis: SearchAPIs, client: httpx.AsyncClient
) -> None:
    backend = DownBackend()
    tool = search_tool(apis, client, backend)
    out = await tool({"query": ["outage"]}, ToolContext("j", 0, backend))
    assert (out.provider, out.cached) == ("serper", False)
    again = await tool({"query": ["outage"]}, ToolContext("j", 0, backend))
    assert again.cached is False
    assert apis.count() == 2


# -- visits ------------------------------------------------------------------------------------------
class GatedModel:
    """A summariser that holds every call until `gate` is set, and counts them."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.calls = 0

    async def chat(
        self,
        role: Role,
        messages: list[ChatMessage],
        *,
        seed: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ChatResult:
        self.calls += 1
        await self.gate.wait()
        goal = messages[-1]["content"].split("## Goal\n", 1)[1].split("\n", 1)[0]
        return ChatResult(content=f'{{"evidence": "about {goal}", "summary": "ok"}}')


@pytest.mark.anyio
async def test_eight_agents_visiting_one_page_fetch_it_once(site: Website, processes: Processes) -> None:
    first, second = await processes()
    model = GatedModel()
    url = site.url("/page/brass-refractor-1")
    async with page_client() as client:
        fetcher = PageFetcher(
            client, AddressGuard(["127.0.0.1"]), timeout=5, max_bytes=10**6, max_redirects=2, user_agent="t"
        )

        def tool(backend: Backend) -> WebVisitTool:
            summariser = PageSummariser(model, load_template(), page_tokens=1000, max_tokens=100, retries=0)
            return WebVisitTool(fetcher, summariser, SharedCache(backend, wait=10), max_chars=2000, ttl=60)

        tools = {first: tool(first)} if first is second else {first: tool(first), second: tool(second)}
        backends = list(tools)
        goals = ["who built it", "how large is it"]
        before = site.hits["/page/brass-refractor-1"]

        def call(agent: int) -> Callable[[], Awaitable[ToolOutput]]:
            backend = backends[agent % len(backends)]
            goal = goals[agent % 2]
            return lambda: tools[backend]({"url": [url], "goal": goal}, ToolContext("job_1", agent, backend))

        outputs: list[ToolOutput] = []

        async def run(i: int) -> None:
            outputs.append(await call(i)())

        async with anyio.create_task_group() as tg:
            for i in range(AGENTS):
                tg.start_soon(run, i)
            await anyio.wait_all_tasks_blocked()
            model.gate.set()
    assert site.hits["/page/brass-refractor-1"] == before + 1
    assert model.calls == len(goals)
    assert sum(not o.cached for o in outputs) == len(goals)
    assert {o.text.split("\n")[3] for o in outputs} == {f"Evidence: about {g}" for g in goals}


def test_url_normalisation() -> None:
    assert normalise_url("HTTPS://Example.COM:443/a?b=1#top") == "https://example.com/a?b=1"
    assert normalise_url("http://example.com") == "http://example.com/"
    assert normalise_url("http://example.com:8080/A") == "http://example.com:8080/A"
