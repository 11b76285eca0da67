"""The provider chain and the web `search` tool over the local fakes: fallback under 500s, 429s,
timeouts and empty answers; which provider answered and whether it was cached; the observation
format shared with the local tool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_search_apis import API_KEY, SearchAPIs
from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus
from workers.errors import ProviderError, RetryableError
from workers.settings import SearchProviderSettings
from workers.tools.base import ToolContext
from workers.tools.render import parse_search_results
from workers.tools.web.cache import SharedCache
from workers.tools.web.chain import ProviderChain
from workers.tools.web.providers import LocalProvider, SearxngProvider, SerperProvider, TavilyProvider
from workers.tools.web.search import SearchService, WebSearchTool
from workers.tools.web.types import Hit, Locale, SearchProvider

EN = Locale("en")


@pytest.fixture(autouse=True)
def reset(apis: SearchAPIs) -> None:
    apis.set("ok")
    apis.requests.clear()


@pytest.fixture(scope="module")
def corpus(mini_corpus: Path) -> Iterator[Corpus]:
    c = Corpus.open(mini_corpus)
    yield c
    c.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def chain(
    apis: SearchAPIs, client: httpx.AsyncClient, corpus: Corpus | None = None, timeout: float = 5
) -> ProviderChain:
    def cfg(name: str) -> SearchProviderSettings:
        return SearchProviderSettings(base_url=apis.url(name), api_key=API_KEY, timeout=timeout)

    providers: list[SearchProvider] = [
        SearxngProvider(client, cfg("searxng")),
        SerperProvider(client, cfg("serper")),
        TavilyProvider(client, cfg("tavily")),
    ]
    if corpus is not None:
        providers.append(LocalProvider(corpus))
    return ProviderChain(providers)


@pytest.mark.anyio
async def test_first_provider_answers(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    result = await chain(apis, client).search("comet", 3, EN)
    assert result.provider == "searxng"
    assert len(result.hits) == 3
    assert [r.provider for r in apis.requests] == ["searxng"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["500", "429", "401", "empty", "garbage", "hang"])
async def test_next_provider_serves_the_query(mode: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set(mode, "searxng")
    result = await chain(apis, client, timeout=0.3).search("comet", 3, EN)
    assert result.provider == "serper"
    assert [r.provider for r in apis.requests] == ["searxng", "serper"]


@pytest.mark.anyio
async def test_failures_in_a_row_reach_the_corpus(
    apis: SearchAPIs, client: httpx.AsyncClient, corpus: Corpus
) -> None:
    apis.set("500", "searxng")
    apis.set("429", "serper")
    apis.set("empty", "tavily")
    result = await chain(apis, client, corpus).search("Comet Brandvik", 3, EN)
    assert result.provider == "local"
    assert result.hits[0].url == "https://valdoria.example/wiki/Comet_Brandvik"


@pytest.mark.anyio
async def test_every_provider_failing_is_an_outage(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("500", "searxng")
    apis.set("429", "serper")
    apis.set("401", "tavily")
    with pytest.raises(RetryableError) as info:
        await chain(apis, client).search("comet", 3, EN)
    message = str(info.value)
    assert "every search provider failed" in message
    assert "searxng: HTTP 500" in message
    assert "serper: HTTP 429" in message
    assert "tavily: HTTP 401: Unauthorized: missing or invalid API key." in message


@pytest.mark.anyio
async def test_nothing_found_anywhere_is_an_empty_answer(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("500", "searxng")
    apis.set("empty", "serper", "tavily")
    result = await chain(apis, client).search("comet", 3, EN)
    assert (result.provider, result.hits) == ("tavily", [])


# -- the tool -------------------------------------------------------------------------------------------
def tool(
    apis: SearchAPIs, client: httpx.AsyncClient, backend: MemoryBackend, corpus: Corpus | None = None
) -> WebSearchTool:
    cache = SharedCache(backend, wait=5)
    return WebSearchTool(SearchService(chain(apis, client, corpus, timeout=0.3), cache, top_k=2, ttl=60))


@pytest.mark.anyio
async def test_tool_output_matches_the_local_format(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    backend = MemoryBackend()
    ctx = ToolContext("job_1", 0, backend)
    out = await tool(apis, client, backend)({"query": ["comet brandvik"]}, ctx)
    assert out.text == (
        "A search for 'comet brandvik' found 2 results:\n"
        "1. [S1] comet brandvik result 1 (searxng)\n"
        "   URL: https://searxng.example/comet-brandvik/1\n"
        "   Snippet 1 about comet brandvik & more, from searxng.\n"
        "2. [S2] comet brandvik result 2 (searxng)\n"
        "   URL: https://searxng.example/comet-brandvik/2\n"
        "   Snippet 2 about comet brandvik & more, from searxng."
    )
    assert out.provider == "searxng"
    assert out.cached is False
    assert [s.id for s in out.sources] == ["S1", "S2"]
    assert set(await backend.get_sources("job_1")) == {"S1", "S2"}
    ((query, items),) = parse_search_results(out.text)
    assert query == "comet brandvik"
    assert [i.source_id for i in items] == ["S1", "S2"]


@pytest.mark.anyio
async def test_tool_caches_hits_not_source_ids(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    backend = MemoryBackend()
    search = tool(apis, client, backend)
    first = await search({"query": ["comet"]}, ToolContext("job_1", 0, backend))
    # Another job, same query, different spacing and case: served from the cache with that
    # job's own source ids.
    await backend.register_source("job_2", "https://elsewhere.example/", "Other")
    second = await search({"query": ["  COMET "]}, ToolContext("job_2", 0, backend))
    assert second.cached is True
    assert second.provider == "searxng"
    assert [s.id for s in second.sources] == ["S2", "S3"]
    assert [s.url for s in second.sources] == [s.url for s in first.sources]
    assert apis.count() == 1


class FlakyProvider:
    """Fails the queries it is told to; finds one hit for the others."""

    name = "flaky"

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        if query in self.failing:
            raise ProviderError(self.name, "HTTP 503: Service Unavailable", status=503)
        return [Hit(f"https://flaky.example/{len(query)}", query.title(), "found")]


@pytest.mark.anyio
async def test_tool_names_every_provider_that_answered(
    apis: SearchAPIs, client: httpx.AsyncClient, corpus: Corpus
) -> None:
    backend = MemoryBackend()
    ctx = ToolContext("j", 0, backend)
    apis.set("empty", "searxng", "tavily")
    apis.set("500", "serper")
    out = await tool(apis, client, backend, corpus)({"query": ["Comet Brandvik", "zzzz"]}, ctx)
    assert out.provider == "local"
    assert out.text.endswith("A search for 'zzzz' found no results.")

    apis.set("ok", "serper")
    out = await tool(apis, client, backend, corpus)({"query": ["Halvard", "Selka"]}, ctx)
    assert out.provider == "serper"


@pytest.mark.anyio
async def test_one_failed_query_does_not_sink_the_others() -> None:
    backend = MemoryBackend()
    ctx = ToolContext("j", 0, backend)
    service = SearchService(
        ProviderChain([FlakyProvider({"down"})]), SharedCache(backend, wait=5), top_k=3, ttl=60
    )
    out = await WebSearchTool(service)({"query": ["up", "down"]}, ctx)
    assert out.text.startswith("A search for 'up' found 1 results:\n1. [S1] Up\n")
    assert out.text.endswith(
        "A search for 'down' could not be run: "
        "every search provider failed: flaky: HTTP 503: Service Unavailable"
    )
    assert out.provider == "flaky"
    with pytest.raises(RetryableError):
        await WebSearchTool(service)({"query": ["down"]}, ctx)
