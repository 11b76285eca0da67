"""Tavily: `POST {base_url}/search` with a bearer key.

Errors come as `{"detail": {"error": …}}`: 401 (bad key), 429 (rate), 432/433 (plan or
pay-as-you-go limit). Tavily has no language parameter; `country` (full English names,
general topic only) boosts results from the query's market.
"""

from __future__ import annotations

from typing import Any

import httpx

from workers.settings import SearchProviderSettings
from workers.tools.web.http import request_json
from workers.tools.web.providers._parse import hits, results_at
from workers.tools.web.types import Hit, Language, Locale

COUNTRIES: dict[Language, str | None] = {"en": None, "zh": "china", "ja": "japan", "ko": "south korea"}
# Tavily's documented range for max_results.
MAX_RESULTS = 20


class TavilyProvider:
    name = "tavily"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        body: dict[str, Any] = {
            "query": query,
            "max_results": min(k, MAX_RESULTS),
            "search_depth": "basic",
            "topic": "general",
        }
        country = COUNTRIES[locale.language]
        if country:
            body["country"] = country
        payload = await request_json(
            self._client,
            self.name,
            "POST",
            self._settings.base_url.rstrip("/") + "/search",
            timeout=self._settings.timeout,
            headers={"Authorization": f"Bearer {self._settings.api_key}"},
            body=body,
        )
        items = results_at(self.name, payload, "results")
        return hits(items, url="url", title="title", snippet="content")[:k]
