"""Builds an engine's tools from settings: the one place that decides what can reach the web.

    HR_SEARCH__PROVIDERS          tools
    ["local"] (offline, default)  search + visit over the corpus; no HTTP client, no fetcher:
                                  a url the corpus lacks answers "not in the local corpus";
                                  google_scholar over the corpus
    anything else                 search over the provider chain (cached, coalesced); visit
                                  reads the corpus first and the web for the rest (SSRF-guarded,
                                  summarised against the goal); google_scholar over its own
                                  chain (workers/tools/scholar: OpenAlex, Semantic Scholar,
                                  arXiv, Serper Scholar with a key, the corpus)

Always, whatever the chain: PythonInterpreter when a sandbox works (workers/tools/python), and
parse_file (offered only to jobs that carry uploaded files).

Start-up fails with `ValueError` naming the setting when a chosen provider cannot work
(no API key, no SearXNG URL) or `visit.allow_hosts` holds a bad entry. Tools holding HTTP
clients are closed by `aclose_tools`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from workers.backend.base import Backend
from workers.corpus import Corpus
from workers.llm.types import ChatModel
from workers.net.client import page_client
from workers.net.ssrf import AddressGuard, Resolver, system_resolver
from workers.settings import Settings
from workers.tools.base import Tool
from workers.tools.local import SearchTool, VisitTool
from workers.tools.parse_file import ParseFileTool
from workers.tools.python import PythonInterpreterTool, build_python_tool
from workers.tools.scholar import build_scholar_tool
from workers.tools.web.cache import SharedCache
from workers.tools.web.chain import ProviderChain
from workers.tools.web.fetch import PageFetcher
from workers.tools.web.providers import make_provider
from workers.tools.web.search import SearchService, WebSearchTool
from workers.tools.web.summarise import PageSummariser, load_template
from workers.tools.web.visit import WebVisitTool

log = logging.getLogger(__name__)


class _OwningVisitTool(VisitTool):
    """The corpus visit tool with the web reader behind it; it owns the HTTP clients, which
    are closed with the engine (`aclose_tools`)."""

    def __init__(
        self, corpus: Corpus, max_chars: int, *, fallback: Tool, clients: list[httpx.AsyncClient]
    ) -> None:
        super().__init__(corpus, max_chars, fallback=fallback)
        self._clients = clients

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()


def build_tools(
    settings: Settings,
    *,
    corpus: Corpus,
    backend: Backend,
    model: ChatModel,
    resolver: Resolver = system_resolver,
    status: dict[str, str] | None = None,
) -> dict[str, Tool]:
    """The tools agents may call, by name. `resolver` is the SSRF guard's DNS (tests stub it).
    `status`, when given, is filled with a sentence per optional tool saying what it runs on,
    or why it is not offered (for the log and /readyz)."""
    tools, api = _research_tools(settings, corpus=corpus, backend=backend, model=model, resolver=resolver)
    notes = status if status is not None else {}
    tools["google_scholar"], notes["google_scholar"] = build_scholar_tool(
        settings, corpus=corpus, backend=backend, client=api
    )
    python, notes["PythonInterpreter"] = build_python_tool(settings.sandbox)
    if python is not None:
        tools["PythonInterpreter"] = python
    # Offered per job, only to jobs that name uploaded files (see JobRunner._tools).
    tools["parse_file"] = ParseFileTool(
        min(settings.files.parse_max_chars, settings.agent.observation_max_chars)
    )
    for name, note in notes.items():
        missing = name not in tools and not (name == "PythonInterpreter" and settings.sandbox.mode == "off")
        log.log(logging.WARNING if missing else logging.INFO, "tool %s: %s", name, note)
    return tools


def _research_tools(
    settings: Settings, *, corpus: Corpus, backend: Backend, model: ChatModel, resolver: Resolver
) -> tuple[dict[str, Tool], httpx.AsyncClient | None]:
    """search and visit, and the pooled API client (None offline) other web tools may share;
    the visit tool owns and closes it."""
    search, visit = settings.search, settings.visit
    if search.offline:
        return {
            "search": SearchTool(corpus, search.top_k),
            "visit": VisitTool(corpus, visit.max_chars),
        }, None

    guard = AddressGuard(visit.allow_hosts, resolver)
    # API calls (search providers, the reader service): configured endpoints, pooled.
    api = httpx.AsyncClient(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=32))
    providers = [make_provider(name, search, client=api, corpus=corpus) for name in search.providers]
    pages = page_client()
    search_cache = SharedCache(backend, wait=search.coalesce_wait, store=search.cache_ttl > 0)
    visit_cache = SharedCache(backend, wait=visit.coalesce_wait, store=visit.cache_ttl > 0)

    tools: dict[str, Tool] = {
        "search": WebSearchTool(
            SearchService(ProviderChain(providers), search_cache, top_k=search.top_k, ttl=search.cache_ttl)
        )
    }
    fetcher = PageFetcher(
        pages,
        guard,
        timeout=visit.timeout,
        max_bytes=visit.max_bytes,
        max_redirects=visit.max_redirects,
        user_agent=visit.user_agent,
        pdf=visit.pdf,
        reader_client=api if visit.reader_base_url else None,
        reader_base_url=visit.reader_base_url,
        reader_api_key=visit.reader_api_key,
    )
    summariser = PageSummariser(
        model,
        load_template(),
        page_tokens=visit.summary_page_tokens,
        max_tokens=visit.summary_max_tokens,
        retries=visit.summary_retries,
    )
    web_visit = WebVisitTool(fetcher, summariser, visit_cache, max_chars=visit.max_chars, ttl=visit.cache_ttl)
    tools["visit"] = _OwningVisitTool(corpus, visit.max_chars, fallback=web_visit, clients=[api, pages])
    return tools, api


async def aclose_tools(tools: Mapping[str, Tool]) -> None:
    """Close what the tools hold open (HTTP clients); a no-op for the offline tools."""
    for tool in tools.values():
        if isinstance(tool, _OwningVisitTool | PythonInterpreterTool):
            await tool.aclose()
