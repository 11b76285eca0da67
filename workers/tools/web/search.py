"""`search` (and `google_scholar`) over a provider chain, cached and coalesced.

The observation format is the local tool's (`workers.tools.render`), so the model reads every
provider alike. What is cached is the chain's raw answer (provider + hits) under a key of the
chain, the normalised query, its locale and k; source ids are registered per job afterwards.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from workers.errors import RetryableError
from workers.models import Source
from workers.tools.base import ToolContext, ToolOutput, string_list
from workers.tools.local import dropped_queries_note, render_hits, unique
from workers.tools.render import join_blocks, one_line
from workers.tools.web.cache import Made, SharedCache, cache_key, normalise_text
from workers.tools.web.chain import ChainResult, ProviderChain
from workers.tools.web.types import Hit, detect_locale

log = logging.getLogger(__name__)

# "Nothing found" is often a provider hiccup rather than the truth: it is kept for less long.
EMPTY_TTL = 600


class SearchService:
    """The chain behind the cache: what both search tools call."""

    def __init__(self, chain: ProviderChain, cache: SharedCache, *, top_k: int, ttl: int) -> None:
        self.chain = chain
        self.cache = cache
        self.top_k = top_k
        self.ttl = ttl

    async def search(self, query: str) -> tuple[ChainResult, bool]:
        """The chain's answer for `query` and whether it came without an upstream call."""
        locale = detect_locale(query)
        key = cache_key("search", self.chain.names, normalise_text(query), locale.language, self.top_k)

        async def make() -> Made:
            result = await self.chain.search(query, self.top_k, locale)
            value = json.dumps(
                {"provider": result.provider, "hits": [[h.url, h.title, h.snippet] for h in result.hits]}
            )
            return Made(value, self.ttl if result.hits else min(self.ttl, EMPTY_TTL))

        value, cached = await self.cache.get_or_make(key, make)
        data: dict[str, Any] = json.loads(value)
        return ChainResult(str(data["provider"]), [Hit(*h) for h in data["hits"]]), cached


class WebSearchTool:
    def __init__(
        self,
        service: SearchService,
        *,
        name: str = "search",
        description: str = "search(query: string[]) — web search; returns ranked results with source ids",
        max_queries: int = 8,
    ) -> None:
        self.service = service
        self.name = name
        self.description = description
        self.max_queries = max_queries

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        queries = unique(string_list(arguments, "query"))
        run = queries[: self.max_queries]
        answers: list[tuple[ChainResult, bool] | RetryableError | None] = [None] * len(run)

        async def one(i: int) -> None:
            try:
                answers[i] = await self.service.search(run[i])
            except RetryableError as exc:
                answers[i] = exc

        # Queries of one call run side by side: each has its own cache entry and flight.
        async with anyio.create_task_group() as tg:
            for i in range(len(run)):
                tg.start_soon(one, i)

        failures = [a for a in answers if isinstance(a, RetryableError)]
        if len(failures) == len(run):
            raise failures[0]
        blocks: list[str] = []
        sources: list[Source] = []
        providers: list[str] = []
        cached = True
        for query, answer in zip(run, answers, strict=True):
            if isinstance(answer, tuple):
                result, was_cached = answer
                providers.append(result.provider)
                cached = cached and was_cached
                blocks.append(await render_hits(query, result.hits, ctx, sources))
            else:
                # The other queries' results are good; this one can be sent again later.
                blocks.append(f"A search for '{one_line(query, 300)}' could not be run: {answer}")
        if queries[self.max_queries :]:
            blocks.append(dropped_queries_note(self.max_queries))
        return ToolOutput(
            text=join_blocks(blocks), sources=sources, provider="+".join(unique(providers)), cached=cached
        )
