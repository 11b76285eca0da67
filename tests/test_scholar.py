"""google_scholar: the keyless scholarly providers against local fakes of their APIs, the chain
(keyless first, Serper Scholar with a key, the corpus last), and the offline tool."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_scholar_apis import ScholarAPIs
from tests.fake_search_apis import API_KEY, SearchAPIs
from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus
from workers.errors import ProviderError
from workers.settings import SearchProviderSettings, Settings
from workers.tools.base import ToolContext
from workers.tools.factory import aclose_tools, build_tools
from workers.tools.scholar.providers import ArxivProvider, OpenAlexProvider, SemanticScholarProvider
from workers.tools.web.types import Locale

pytestmark = pytest.mark.anyio
EN = Locale("en")


@pytest.fixture(scope="module")
def scholar() -> Iterator[ScholarAPIs]:
    with ScholarAPIs() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(scholar: ScholarAPIs) -> None:
    scholar.modes = {name: "ok" for name in scholar.modes}
    scholar.requests.clear()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def corpus(mini_corpus: Path) -> Iterator[Corpus]:
    opened = Corpus.open(mini_corpus)
    yield opened
    opened.close()


def provider_settings(scholar: ScholarAPIs, name: str, **extra: Any) -> SearchProviderSettings:
    return SearchProviderSettings(base_url=scholar.url(name), timeout=5, **extra)


async def test_openalex_lists_the_papers_facts(scholar: ScholarAPIs, client: httpx.AsyncClient) -> None:
    provider = OpenAlexProvider(client, provider_settings(scholar, "openalex"), mailto="me@example.org")
    hits = await provider.search("comets", 5, EN)
    assert [h.url for h in hits] == ["https://doi.org/10.1234/comets.0", "https://doi.org/10.1234/comets.1"]
    assert hits[0].title == "OpenAlex paper 0 on comets"
    assert hits[0].snippet == (
        "Authors: Ada Lovelace, Alan Turing, Grace Hopper et al. · Venue: Journal of Examples · Year: 2019 · "
        "Cited by: 40 · PDF: https://journal.example/0.pdf — This studies comets"
    )
    assert "PDF: no available link" in hits[1].snippet
    _, params, _ = scholar.requests[-1]
    assert params == {"search": "comets", "per-page": "5", "mailto": "me@example.org"}


async def test_semantic_scholar_and_its_optional_key(scholar: ScholarAPIs, client: httpx.AsyncClient) -> None:
    keyed = SemanticScholarProvider(client, provider_settings(scholar, "semanticscholar", api_key="s2-key"))
    [hit] = await keyed.search("attention", 3, EN)
    assert hit.url == "https://doi.org/10.5555/s2" and hit.title == "Semantic Scholar paper on attention"
    assert hit.snippet == (
        "Authors: Yoshua Bengio · Venue: NeurIPS · Year: 2021 · Cited by: 7 · "
        "PDF: https://arxiv.org/pdf/2101.00001 — An abstract."
    )
    _, params, headers = scholar.requests[-1]
    assert params["query"] == "attention" and params["limit"] == "3" and "citationCount" in params["fields"]
    assert headers["x-api-key"] == "s2-key"
    await SemanticScholarProvider(client, provider_settings(scholar, "semanticscholar")).search("x", 1, EN)
    assert "x-api-key" not in scholar.requests[-1][2]


async def test_arxiv_reads_the_atom_feed(scholar: ScholarAPIs, client: httpx.AsyncClient) -> None:
    [hit] = await ArxivProvider(client, provider_settings(scholar, "arxiv")).search("black holes", 2, EN)
    assert hit.url == "http://arxiv.org/abs/2101.00001v1"
    assert hit.title == "An arXiv paper on black holes"
    assert hit.snippet == (
        "Authors: Geoffrey Hinton · Venue: arXiv · Year: 2021 · PDF: http://arxiv.org/pdf/2101.00001v1 — "
        "We study black holes."
    )
    assert scholar.requests[-1][1]["search_query"] == "all:black holes"


@pytest.mark.parametrize("name", ["openalex", "semanticscholar", "arxiv"])
@pytest.mark.parametrize("mode", ["429", "500", "garbage"])
async def test_failures_are_provider_errors(
    name: str, mode: str, scholar: ScholarAPIs, client: httpx.AsyncClient
) -> None:
    scholar.modes[name] = mode
    kinds = {"openalex": OpenAlexProvider, "semanticscholar": SemanticScholarProvider, "arxiv": ArxivProvider}
    with pytest.raises(ProviderError):
        await kinds[name](client, provider_settings(scholar, name)).search("q", 2, EN)


@pytest.mark.parametrize("name", ["openalex", "semanticscholar", "arxiv"])
async def test_no_papers_is_no_hits(name: str, scholar: ScholarAPIs, client: httpx.AsyncClient) -> None:
    scholar.modes[name] = "empty"
    kinds = {"openalex": OpenAlexProvider, "semanticscholar": SemanticScholarProvider, "arxiv": ArxivProvider}
    assert await kinds[name](client, provider_settings(scholar, name)).search("q", 2, EN) == []


class NoModel:
    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")


def web_settings(scholar: ScholarAPIs, apis: SearchAPIs, *, serper_key: str = "") -> Settings:
    return Settings(
        search={
            "providers": ["searxng", "local"],
            "searxng": {"base_url": apis.url("searxng")},
            "serper": {"base_url": apis.url("serper"), "api_key": serper_key},
            "cache_ttl": 0,
        },
        scholar={
            "openalex": {"base_url": scholar.url("openalex")},
            "semanticscholar": {"base_url": scholar.url("semanticscholar")},
            "arxiv": {"base_url": scholar.url("arxiv")},
        },
        sandbox={"mode": "off"},
    )


async def scholar_call(settings: Settings, corpus: Corpus, query: str) -> Any:
    backend = MemoryBackend()
    status: dict[str, str] = {}
    tools = build_tools(settings, corpus=corpus, backend=backend, model=NoModel(), status=status)  # type: ignore[arg-type]
    try:
        out = await tools["google_scholar"]({"query": [query]}, ToolContext("job_s", 0, backend))
    finally:
        await aclose_tools(tools)
    return out, status["google_scholar"], await backend.get_sources("job_s")


async def test_the_chain_falls_through_keyless_sources_then_serper_then_the_corpus(
    scholar: ScholarAPIs, apis: SearchAPIs, corpus: Corpus
) -> None:
    out, note, sources = await scholar_call(web_settings(scholar, apis), corpus, "comets")
    assert (
        out.provider == "openalex"
        and note == "google_scholar searches openalex → semanticscholar → arxiv → local"
    )
    assert out.text.startswith("A search for 'comets' found 2 results:\n1. [S1] OpenAlex paper 0 on comets\n")
    assert sources["S1"].url == "https://doi.org/10.1234/comets.0"

    scholar.modes.update(openalex="500", semanticscholar="429")
    out, _, _ = await scholar_call(web_settings(scholar, apis), corpus, "comets")
    assert out.provider == "arxiv"

    scholar.modes["arxiv"] = "500"
    out, note, _ = await scholar_call(
        web_settings(scholar, apis, serper_key=API_KEY), corpus, "orbital mechanics"
    )
    assert "arxiv → serper-scholar → local" in note and out.provider == "serper-scholar"

    out, _, _ = await scholar_call(web_settings(scholar, apis), corpus, "Comet Brandvik")
    assert out.provider == "local" and "[S1]" in out.text


async def test_offline_google_scholar_is_the_corpus_and_connects_nowhere(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"offline google_scholar tried the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    out, note, _ = await scholar_call(Settings(sandbox={"mode": "off"}), corpus, "Comet Brandvik")
    assert note == "google_scholar searches local"
    assert out.provider == "local" and "[S1]" in out.text


def test_an_unknown_scholar_provider_fails_at_start_up(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="unknown scholar provider"):
        build_tools(
            Settings(scholar={"providers": ["scopus"]}),
            corpus=corpus,
            backend=MemoryBackend(),
            model=NoModel(),
        )  # type: ignore[arg-type]
