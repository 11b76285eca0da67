"""`search` and `visit` over the local corpus (SQLite FTS5, BM25): the embedded default tools.

Every hit and every visited document is registered in the job's source registry, so all agents
of a job cite one url by one id. The observation formats are documented in `workers.tools.render`.

`VisitTool` reads the urls the corpus lacks through an optional `fallback` tool (a web fetcher),
one call per url, concurrently, so each is cached and fetched on its own; the call carries the
url's share of the character budget as `max_chars`. A fallback's
`ToolError` becomes that url's "not found" line; any other error fails the whole call, as the
tool contract says. Without a fallback the model gets a "not found" line and can search again.

Observations carry job-specific source ids: cache below the registration (hits, page text),
never a rendered `ToolOutput` across jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import anyio

from workers.corpus import Corpus
from workers.errors import ToolError
from workers.models import Source
from workers.tools.base import Tool, ToolContext, ToolOutput, string_list
from workers.tools.render import (
    SearchItem,
    join_blocks,
    render_not_found,
    render_page,
    render_search,
    trim_text,
)

PROVIDER = "local"


def unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def add_source(sources: list[Source], source: Source) -> None:
    if all(s.id != source.id for s in sources):
        sources.append(source)


class HitLike(Protocol):
    """A search hit from any provider (the corpus's, or a web API's)."""

    @property
    def url(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def snippet(self) -> str: ...


async def render_hits(query: str, hits: Iterable[HitLike], ctx: ToolContext, sources: list[Source]) -> str:
    """One query's observation block, every hit registered in the job's source registry (and
    added to `sources`). Shared by every search tool, so they all read alike to the model."""
    items: list[SearchItem] = []
    for hit in hits:
        source = await ctx.register_source(hit.url, hit.title)
        add_source(sources, source)
        items.append(SearchItem(source.id, hit.title, hit.url, hit.snippet))
    return render_search(query, items)


def dropped_queries_note(max_queries: int) -> str:
    # Said in the observation rather than raised: the other queries' results are good.
    return f"(Only the first {max_queries} queries were run; send the rest again.)"


class SearchTool:
    name = "search"
    description = "search(query: string[]) — web search; returns ranked results with source ids"

    def __init__(self, corpus: Corpus, top_k: int = 5, *, max_queries: int = 8) -> None:
        self.corpus = corpus
        self.top_k = top_k
        self.max_queries = max_queries

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        queries = unique(string_list(arguments, "query"))
        dropped = queries[self.max_queries :]
        blocks: list[str] = []
        sources: list[Source] = []
        for query in queries[: self.max_queries]:
            blocks.append(await render_hits(query, await self.corpus.search(query, self.top_k), ctx, sources))
        if dropped:
            blocks.append(dropped_queries_note(self.max_queries))
        return ToolOutput(text=join_blocks(blocks), sources=sources, provider=PROVIDER)


class VisitTool:
    name = "visit"
    description = (
        "visit(url: string[], goal: string) — read pages; returns their text for the goal with source ids"
    )

    def __init__(
        self, corpus: Corpus, max_chars: int = 6000, *, fallback: Tool | None = None, max_urls: int = 5
    ) -> None:
        self.corpus = corpus
        self.max_chars = max_chars
        self.fallback = fallback
        self.max_urls = max_urls

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        urls = unique(string_list(arguments, "url"))
        goal = arguments.get("goal")
        if not isinstance(goal, str) or not goal.strip():
            raise ToolError("argument 'goal' must be a non-empty string: what to look for on the pages")
        goal = goal.strip()
        dropped = urls[self.max_urls :]
        urls = urls[: self.max_urls]
        budget = max(1, self.max_chars // len(urls))

        blocks: dict[int, str] = {}
        found: dict[int, list[Source]] = {}
        missing: list[int] = []
        for i, url in enumerate(urls):
            doc = await self.corpus.get(url)
            if doc is None:
                missing.append(i)
                continue
            source = await ctx.register_source(doc.url, doc.title)
            found[i] = [source]
            blocks[i] = render_page(source.id, doc.title, doc.url, goal, trim_text(doc.text, budget))

        remote: dict[int, ToolOutput] = {}
        if missing and self.fallback is not None:
            fetched = await self._fetch(self.fallback, [urls[i] for i in missing], goal, budget, ctx)
            for i, result in zip(missing, fetched, strict=True):
                if isinstance(result, ToolOutput):
                    remote[i] = result
                    found[i] = result.sources
                    blocks[i] = result.text
                else:
                    blocks[i] = render_not_found(urls[i], result)
        for i in missing:
            blocks.setdefault(i, render_not_found(urls[i]))

        text = join_blocks(blocks[i] for i in range(len(urls)))
        if dropped:
            text += f"\n\n(Only the first {self.max_urls} urls were read; visit the rest separately.)"
        sources: list[Source] = []
        for i in range(len(urls)):
            for source in found.get(i, []):
                add_source(sources, source)
        return ToolOutput(
            text=text,
            sources=sources,
            provider=self._provider(len(urls) - len(remote), list(remote.values())),
            cached=len(remote) == len(urls) and all(o.cached for o in remote.values()),
        )

    @staticmethod
    async def _fetch(
        fallback: Tool, urls: list[str], goal: str, budget: int, ctx: ToolContext
    ) -> list[ToolOutput | str]:
        """The fallback's output per url, or its `ToolError` message."""
        results: list[ToolOutput | str] = [""] * len(urls)
        failures: list[Exception] = []

        async def fetch(i: int) -> None:
            try:
                results[i] = await fallback({"url": [urls[i]], "goal": goal, "max_chars": budget}, ctx)
            except ToolError as exc:
                results[i] = str(exc) or "could not be read"
            except Exception as exc:
                # Re-raised bare after the group: callers tell a retryable outage from a bug by
                # its type, which an ExceptionGroup would hide.
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(urls)):
                tg.start_soon(fetch, i)
        if failures:
            raise failures[0]
        return results

    @staticmethod
    def _provider(local: int, remote: list[ToolOutput]) -> str:
        names = ([PROVIDER] if local else []) + [o.provider or "fallback" for o in remote]
        return "+".join(unique(names)) or PROVIDER
