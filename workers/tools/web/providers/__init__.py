"""Search providers, one module each, all behind `SearchProvider` (workers.tools.web.types).

`make_provider` builds one by its settings name; vendor specifics (endpoints, headers, locale
parameters, response shapes) live only in the provider's module.
"""

from __future__ import annotations

import httpx

from workers.corpus import Corpus
from workers.settings import SearchSettings
from workers.tools.web.providers.brave import BraveProvider
from workers.tools.web.providers.local import LocalProvider
from workers.tools.web.providers.searxng import SearxngProvider
from workers.tools.web.providers.serper import SerperProvider, SerperScholarProvider
from workers.tools.web.providers.tavily import TavilyProvider
from workers.tools.web.types import SearchProvider

__all__ = [
    "BraveProvider",
    "LocalProvider",
    "SearxngProvider",
    "SerperProvider",
    "SerperScholarProvider",
    "TavilyProvider",
    "make_provider",
]


def make_provider(
    name: str, settings: SearchSettings, *, client: httpx.AsyncClient, corpus: Corpus
) -> SearchProvider:
    """The provider called `name`; `ValueError` naming the setting to fix when it cannot work."""
    if name == "local":
        return LocalProvider(corpus)
    if name == "searxng":
        if not settings.searxng.base_url:
            raise ValueError(
                "search provider 'searxng' needs HR_SEARCH__SEARXNG__BASE_URL (your instance's URL)"
            )
        return SearxngProvider(client, settings.searxng)
    key_setting = f"HR_SEARCH__{name.upper()}__API_KEY"
    if name == "serper":
        _need_key(settings.serper.api_key, key_setting)
        return SerperProvider(client, settings.serper)
    if name == "tavily":
        _need_key(settings.tavily.api_key, key_setting)
        return TavilyProvider(client, settings.tavily)
    if name == "brave":
        _need_key(settings.brave.api_key, key_setting)
        return BraveProvider(client, settings.brave)
    raise ValueError(f"unknown search provider {name!r}")


def _need_key(key: str, setting: str) -> None:
    if not key:
        raise ValueError(f"this search provider needs an API key: set {setting}")
