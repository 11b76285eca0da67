"""The web half of `visit`: fetch a page, extract its text, summarise it against the goal.

It stands behind the local `VisitTool` as its `fallback` (urls the corpus has are still read
from the corpus) and reads one url per call. Two cache entries serve it: the page text by
normalised url (shared by every goal), and the summary by url and normalised goal (a repeated
visit costs no model call). A degraded summary — the summariser gave nothing usable — is not
cached, so a later visit tries again.

The block reads like the local one, with evidence and summary as its text:

    [S3] Title
    URL: https://...
    Goal: GOAL
    Evidence: ...
    Summary: ...
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from workers.errors import ToolError
from workers.tools.base import ToolContext, ToolOutput, string_list
from workers.tools.render import render_page, trim_text
from workers.tools.web.cache import Made, SharedCache, cache_key, normalise_text, normalise_url
from workers.tools.web.fetch import Page, PageFetcher
from workers.tools.web.summarise import PageSummariser


class WebVisitTool:
    name = "visit"
    description = (
        "visit(url: string[], goal: string) — read web pages; returns evidence and a summary for the goal"
    )

    def __init__(
        self,
        fetcher: PageFetcher,
        summariser: PageSummariser,
        cache: SharedCache,
        *,
        max_chars: int,
        ttl: int,
    ) -> None:
        self.fetcher = fetcher
        self.summariser = summariser
        self.cache = cache
        self.max_chars = max_chars
        self.ttl = ttl

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        url = string_list(arguments, "url")[0]
        goal = arguments.get("goal")
        if not isinstance(goal, str) or not goal.strip():
            raise ToolError("argument 'goal' must be a non-empty string: what to look for on the page")
        goal = goal.strip()
        budget = arguments.get("max_chars")
        budget = budget if isinstance(budget, int) and budget > 0 else self.max_chars

        read, cached = await self._summary(url, goal)
        source = await ctx.register_source(url, read["title"])
        if read["degraded"]:
            body = trim_text(read["evidence"], budget)
        else:
            body = trim_text(f"Evidence: {read['evidence'] or '(none)'}\nSummary: {read['summary']}", budget)
        return ToolOutput(
            text=render_page(source.id, read["title"], url, goal, body),
            sources=[source],
            provider=read["via"],
            cached=cached,
        )

    async def _summary(self, url: str, goal: str) -> tuple[dict[str, Any], bool]:
        key = cache_key(
            "visit-summary", normalise_url(url), normalise_text(goal), self.summariser.fingerprint
        )

        async def make() -> Made:
            page = await self._page(url)
            summary = await self.summariser.summarise(
                goal=goal, url=page.final_url, title=page.title, text=page.text, fallback_chars=self.max_chars
            )
            value = {
                "title": page.title,
                "via": page.via,
                "evidence": summary.evidence,
                "summary": summary.summary,
                "degraded": summary.degraded,
            }
            return Made(json.dumps(value), 0 if summary.degraded else self.ttl)

        value, cached = await self.cache.get_or_make(key, make)
        return json.loads(value), cached

    async def _page(self, url: str) -> Page:
        key = cache_key("visit-page", normalise_url(url))

        async def make() -> Made:
            return Made(json.dumps(asdict(await self.fetcher.fetch(url))), self.ttl)

        value, _ = await self.cache.get_or_make(key, make)
        return Page(**json.loads(value))
