"""SearXNG (self-hosted metasearch): `GET {base_url}/search?q=…&format=json`.

The instance must list `json` under `search.formats` in its settings.yml; otherwise it answers
403. Its base_url is operator infrastructure (often on a private network), so it is not put
through the SSRF guard.
"""

from __future__ import annotations

import httpx

from workers.settings import SearchProviderSettings
from workers.tools.web.http import request_json
from workers.tools.web.providers._parse import hits, results_at
from workers.tools.web.types import Hit, Language, Locale

# SearXNG's `language` parameter takes its own locale codes.
LANGUAGES: dict[Language, str] = {"en": "en", "zh": "zh-CN", "ja": "ja", "ko": "ko"}


class SearxngProvider:
    name = "searxng"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        headers = {"Accept": "application/json"}
        if self._settings.api_key:
            # Instances behind an authenticating proxy; SearXNG itself takes no key.
            headers["Authorization"] = f"Bearer {self._settings.api_key}"
        payload = await request_json(
            self._client,
            self.name,
            "GET",
            self._settings.base_url.rstrip("/") + "/search",
            timeout=self._settings.timeout,
            headers=headers,
            params={"q": query, "format": "json", "language": LANGUAGES[locale.language], "pageno": 1},
        )
        # SearXNG has no result-count parameter: it returns a page (~10-20) and we keep k.
        items = results_at(self.name, payload, "results")
        return hits(items, url="url", title="title", snippet="content")[:k]
