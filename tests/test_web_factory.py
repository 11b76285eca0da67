"""`build_tools`: offline mode builds nothing that can reach the network; a web chain builds the
web tools (and `google_scholar` on its own chain); bad provider settings fail at start-up. And a
whole Heavy job over the fakes, whose `tool.result` events say which provider answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from tests.engine_harness import harness
from tests.fake_search_apis import API_KEY, SearchAPIs, Website
from workers.backend.memory import MemoryBackend
from workers.corpus import Corpus
from workers.events import EventType
from workers.settings import Settings
from workers.sim.server import SimServer
from workers.tools.base import ToolContext
from workers.tools.factory import aclose_tools, build_tools
from workers.tools.local import SearchTool, VisitTool
from workers.tools.web.search import WebSearchTool
from workers.tools.web.visit import WebVisitTool


class NoModel:
    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no model call expected")


@pytest.fixture
def corpus(mini_corpus: Path) -> Iterator[Corpus]:
    with Corpus.open(mini_corpus) as c:
        yield c


def settings(**search: Any) -> Settings:
    return Settings(search=search, visit={"allow_hosts": ["127.0.0.1"]})


@pytest.mark.anyio
async def test_offline_mode_builds_no_web_components_and_connects_nowhere(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = build_tools(Settings(), corpus=corpus, backend=MemoryBackend(), model=NoModel())
    # PythonInterpreter's sandbox has no network at all (tests/test_python_sandbox.py);
    # google_scholar offline is the corpus (tests/test_scholar.py); parse_file reads uploads.
    assert set(tools) - {"PythonInterpreter"} == {"search", "visit", "google_scholar", "parse_file"}
    assert type(tools["search"]) is SearchTool
    assert type(tools["visit"]) is VisitTool
    visit = tools["visit"]
    assert isinstance(visit, VisitTool)
    assert visit.fallback is None

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> Any:
        attempts.append(args)
        raise AssertionError(f"offline mode tried the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    backend = MemoryBackend()
    out = await visit(
        {"url": ["https://example.com/not-in-the-corpus", "http://127.0.0.1:9/x"], "goal": "anything"},
        ToolContext("j", 0, backend),
    )
    assert out.text == (
        "[not found] https://example.com/not-in-the-corpus: not in the local corpus\n\n"
        "[not found] http://127.0.0.1:9/x: not in the local corpus"
    )
    found = await tools["search"]({"query": ["Comet Brandvik"]}, ToolContext("j", 0, backend))
    assert found.provider == "local"
    assert attempts == []
    await aclose_tools(tools)


@pytest.mark.anyio
async def test_a_web_chain_builds_the_web_tools(corpus: Corpus) -> None:
    tools = build_tools(
        settings(providers=["serper", "local"], serper={"api_key": "k"}),
        corpus=corpus,
        backend=MemoryBackend(),
        model=NoModel(),
    )
    try:
        assert set(tools) - {"PythonInterpreter"} == {"search", "visit", "google_scholar", "parse_file"}
        search, visit = tools["search"], tools["visit"]
        assert isinstance(search, WebSearchTool)
        assert search.service.chain.names == ("serper", "local")
        assert isinstance(tools["google_scholar"], WebSearchTool)
        assert tools["google_scholar"].description.startswith("google_scholar(query: string[]) — ")
        scholar = tools["google_scholar"]
        assert isinstance(scholar, WebSearchTool)
        assert scholar.service.chain.names == (
            "openalex",
            "semanticscholar",
            "arxiv",
            "serper-scholar",
            "local",
        )
        assert isinstance(visit, VisitTool)
        assert isinstance(visit.fallback, WebVisitTool)
    finally:
        await aclose_tools(tools)

    no_serper = build_tools(
        settings(providers=["searxng"], searxng={"base_url": "http://127.0.0.1:1"}),
        corpus=corpus,
        backend=MemoryBackend(),
        model=NoModel(),
    )
    # Without a Serper key google_scholar is still there, on the keyless sources and the corpus.
    keyless = no_serper["google_scholar"]
    assert isinstance(keyless, WebSearchTool)
    assert keyless.service.chain.names == ("openalex", "semanticscholar", "arxiv", "local")
    await aclose_tools(no_serper)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"providers": ["serper"]}, "HR_SEARCH__SERPER__API_KEY"),
        ({"providers": ["tavily", "local"]}, "HR_SEARCH__TAVILY__API_KEY"),
        ({"providers": ["brave"]}, "HR_SEARCH__BRAVE__API_KEY"),
        ({"providers": ["searxng"]}, "HR_SEARCH__SEARXNG__BASE_URL"),
    ],
)
def test_unusable_providers_fail_at_start_up(search: dict[str, Any], message: str, corpus: Corpus) -> None:
    with pytest.raises(ValueError, match=message):
        build_tools(settings(**search), corpus=corpus, backend=MemoryBackend(), model=NoModel())


def test_bad_settings_are_refused(corpus: Corpus) -> None:
    with pytest.raises(ValidationError, match="unknown search provider"):
        Settings(search={"providers": ["google"]})
    with pytest.raises(ValidationError, match="at least one search provider"):
        Settings(search={"providers": []})
    with pytest.raises(ValueError, match="allow_hosts"):
        build_tools(
            Settings(
                search={"providers": ["local", "serper"], "serper": {"api_key": "k"}},
                visit={"allow_hosts": ["a b"]},
            ),
            corpus=corpus,
            backend=MemoryBackend(),
            model=NoModel(),
        )


def test_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HR_SEARCH__PROVIDERS", '["SearXNG", "serper", "local"]')
    monkeypatch.setenv("HR_SEARCH__SEARXNG__BASE_URL", "http://searx.internal:8080")
    monkeypatch.setenv("HR_SEARCH__SERPER__API_KEY", "secret")
    monkeypatch.setenv("HR_SEARCH__SERPER__TIMEOUT", "3.5")
    monkeypatch.setenv("HR_VISIT__ALLOW_HOSTS", '["127.0.0.1", "10.0.0.0/8"]')
    s = Settings()
    assert s.search.providers == ["searxng", "serper", "local"]
    assert s.search.searxng.base_url == "http://searx.internal:8080"
    assert (s.search.serper.api_key, s.search.serper.timeout) == ("secret", 3.5)
    assert s.search.serper.base_url == "https://google.serper.dev"
    assert s.visit.allow_hosts == ["127.0.0.1", "10.0.0.0/8"]
    assert not s.search.offline
    assert Settings().search.offline is False
    monkeypatch.delenv("HR_SEARCH__PROVIDERS")
    assert Settings().search.offline is True


# -- a whole job ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_job_over_the_web_tools(mini_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(*args: object, **kwargs: object) -> Any:
        raise OSError(f"tests resolve no names: {args!r}")

    # Every url in this job is on 127.0.0.1; a name lookup would be a bug, and must not leave.
    monkeypatch.setattr(anyio, "getaddrinfo", no_dns)
    with SimServer() as sim, SearchAPIs() as apis, Website() as site:
        assert site.server is not None
        apis.hit_base = site.server.base_url
        overrides: dict[str, Any] = {
            "search": {
                "providers": ["serper", "local"],
                "serper": {"base_url": apis.url("serper"), "api_key": API_KEY},
            },
            "visit": {"allow_hosts": ["127.0.0.1"]},
        }
        async with harness(mini_corpus, sim.base_url, **overrides) as h:
            record = await h.submit("When was the Halvard Observatory founded?", agents=2, max_rounds=6)
            events = await h.run_to_end(record.id)
        assert events[-1].type == EventType.job_succeeded, events[-1]
        results = [e.data for e in events if e.type == EventType.tool_result]
        searches = [r for r in results if r["name"] == "search"]
        visits = [r for r in results if r["name"] == "visit" and "error" not in r]
        assert searches and visits
        assert {r["provider"] for r in searches} == {"serper"}
        assert all(isinstance(r["cached"], bool) for r in results)
        assert any(r["provider"] in ("web", "local+web") for r in visits)
        assert apis.count("serper") >= 1
        assert sum(site.hits.values()) >= 1
        assert sim.stats.by_role["summariser"] >= 1
