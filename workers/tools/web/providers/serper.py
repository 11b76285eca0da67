"""Serper (Google results): `POST {base_url}/search` and `/scholar`, key in `X-API-KEY`.

Locale as the Tongyi search tool sends it: `gl`/`hl` of the query's language (China for
Chinese, the US otherwise; Japan and Korea for their languages). Errors come as
`{"message": …, "statusCode": …}` (HTTP 400 for "Not enough credits", 401/403 for a bad key).
"""

from __future__ import annotations

from typing import Any

import httpx

from workers.settings import SearchProviderSettings
from workers.tools.web.http import request_json
from workers.tools.web.providers._parse import hits, results_at, text
from workers.tools.web.types import Hit, Language, Locale

MARKETS: dict[Language, tuple[str, str]] = {
    "en": ("us", "en"),
    "zh": ("cn", "zh-cn"),
    "ja": ("jp", "ja"),
    "ko": ("kr", "ko"),
}


class SerperProvider:
    name = "serper"
    endpoint = "/search"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def _call(self, query: str, k: int, locale: Locale) -> Any:
        gl, hl = MARKETS[locale.language]
        return await request_json(
            self._client,
            self.name,
            "POST",
            self._settings.base_url.rstrip("/") + self.endpoint,
            timeout=self._settings.timeout,
            headers={"X-API-KEY": self._settings.api_key},
            body={"q": query, "gl": gl, "hl": hl, "num": k},
        )

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        payload = await self._call(query, k, locale)
        # Serper leaves `organic` out when Google found nothing.
        items = results_at(self.name, payload, "organic", required=False)
        return hits(items, url="link", title="title", snippet="snippet")[:k]


class SerperScholarProvider(SerperProvider):
    """Google Scholar through Serper, for the `google_scholar` tool. The snippet leads with the
    publication line, year and citation count, which is what a researcher scans for."""

    name = "serper-scholar"
    endpoint = "/scholar"

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        payload = await self._call(query, k, locale)
        out: list[Hit] = []
        for item in results_at(self.name, payload, "organic", required=False):
            if not isinstance(item, dict):
                continue
            found = hits([item], url="link", title="title", snippet="snippet")
            if not found:
                continue
            facts = [text(item, "publicationInfo")]
            year = item.get("year")
            if isinstance(year, int | str) and str(year).strip():
                facts.append(str(year).strip())
            cited = item.get("citedBy")
            if isinstance(cited, int):
                facts.append(f"cited by {cited}")
            lead = " · ".join(f for f in facts if f)
            snippet = (
                f"{lead} — {found[0].snippet}" if lead and found[0].snippet else lead or found[0].snippet
            )
            out.append(Hit(found[0].url, found[0].title, snippet))
        return out[:k]
