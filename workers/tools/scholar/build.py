"""google_scholar's provider chain from settings (`scholar.providers`, tried in order):

    openalex, semanticscholar, arxiv   keyless scholarly APIs (keys optional)
    serper                             Google Scholar through Serper: only with
                                       search.serper.api_key, silently left out without one
    local                              the local corpus: always works, so the tool always exists

Offline (search.providers = ["local"]) the chain is the corpus alone and nothing leaves the
machine. The tool is the search tool's (`WebSearchTool`: cached, coalesced, the same
observation format), so scholar hits are registered sources like any other.
"""

from __future__ import annotations

import httpx

from workers.backend.base import Backend
from workers.corpus import Corpus
from workers.settings import Settings
from workers.tools.scholar.providers import ArxivProvider, OpenAlexProvider, SemanticScholarProvider
from workers.tools.web.cache import SharedCache
from workers.tools.web.chain import ProviderChain
from workers.tools.web.providers import LocalProvider, SerperScholarProvider
from workers.tools.web.search import SearchService, WebSearchTool
from workers.tools.web.types import SearchProvider

SCHOLAR_DESCRIPTION = (
    "google_scholar(query: string[]) — academic search: papers with authors, venue, year, citation "
    "count and PDF link, with source ids"
)


def scholar_providers(
    settings: Settings, *, corpus: Corpus, client: httpx.AsyncClient | None
) -> list[SearchProvider]:
    s = settings.scholar  # names checked by ScholarSettings
    out: list[SearchProvider] = []
    for name in dict.fromkeys(s.providers):
        if client is None and name != "local":
            continue  # offline
        if name == "openalex" and client is not None:
            out.append(OpenAlexProvider(client, s.openalex, mailto=s.mailto))
        elif name == "semanticscholar" and client is not None:
            out.append(SemanticScholarProvider(client, s.semanticscholar))
        elif name == "arxiv" and client is not None:
            out.append(ArxivProvider(client, s.arxiv))
        elif name == "serper" and client is not None and settings.search.serper.api_key:
            out.append(SerperScholarProvider(client, settings.search.serper))
        elif name == "local":
            out.append(LocalProvider(corpus))
    if not any(isinstance(p, LocalProvider) for p in out):
        out.append(LocalProvider(corpus))  # the last resort that makes the tool always work
    return out


def build_scholar_tool(
    settings: Settings, *, corpus: Corpus, backend: Backend, client: httpx.AsyncClient | None
) -> tuple[WebSearchTool, str]:
    """The tool, and a sentence naming its chain. `client` None means offline."""
    search = settings.search
    chain = ProviderChain(scholar_providers(settings, corpus=corpus, client=client))
    cache = SharedCache(backend, wait=search.coalesce_wait, store=client is not None and search.cache_ttl > 0)
    service = SearchService(chain, cache, top_k=settings.scholar.top_k, ttl=search.cache_ttl)
    tool = WebSearchTool(service, name="google_scholar", description=SCHOLAR_DESCRIPTION)
    return tool, "google_scholar searches " + " → ".join(chain.names)
