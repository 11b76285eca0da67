"""Brave Search: `GET {base_url}/web/search`, key in `X-Subscription-Token`.

Errors come as `{"type": "ErrorResponse", "error": {"code", "detail", "status", …}}`; note that
a bad key is a 422 `SUBSCRIPTION_TOKEN_INVALID`, not a 401. Brave's language codes are its own
(`jp` for Japanese, `zh-hans` for simplified Chinese).
"""

from __future__ import annotations

import httpx

from workers.settings import SearchProviderSettings
from workers.tools.web.http import request_json
from workers.tools.web.providers._parse import hits, results_at
from workers.tools.web.types import Hit, Language, Locale

MARKETS: dict[Language, tuple[str, str]] = {
    "en": ("US", "en"),
    "zh": ("CN", "zh-hans"),
    "ja": ("JP", "jp"),
    "ko": ("KR", "ko"),
}
# Brave's documented maximum for `count`.
MAX_COUNT = 20


class BraveProvider:
    name = "brave"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        country, language = MARKETS[locale.language]
        payload = await request_json(
            self._client,
            self.name,
            "GET",
            self._settings.base_url.rstrip("/") + "/web/search",
            timeout=self._settings.timeout,
            headers={"X-Subscription-Token": self._settings.api_key, "Accept": "application/json"},
            params={
                "q": query,
                "count": min(k, MAX_COUNT),
                "country": country,
                "search_lang": language,
                # Plain snippets: no <strong> markup around matched words.
                "text_decorations": "false",
            },
        )
        # Brave leaves `web` out when it has no web results for the query.
        items = results_at(self.name, payload, "web", "results", required=False)
        return hits(items, url="url", title="title", snippet="description")[:k]
