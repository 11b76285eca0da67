"""The ordered provider chain: the first provider with hits answers the query.

    outcome of a provider                         what the chain does
    hits                                          returns them, naming that provider
    no hits                                       tries the next one
    ProviderError (HTTP 4xx/5xx incl. 429,        logs it and tries the next one (401/403 logged
      timeout, connection error, bad answer)        as an error: a key to fix, not an outage)

When no provider has hits: an empty result, named after the last provider that answered, if
at least one did (the query simply has none); else `RetryableError` listing every failure,
which the agent sees as "search is unavailable right now" and can work around.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from workers.errors import ProviderError, RetryableError
from workers.tools.web.types import Hit, Locale, SearchProvider

log = logging.getLogger(__name__)

_TAG = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True, slots=True)
class ChainResult:
    provider: str
    hits: list[Hit]


def clean_hits(hits: Sequence[Hit], k: int) -> list[Hit]:
    """Hits with markup stripped from titles and snippets, each url once, at most `k`."""
    out: dict[str, Hit] = {}
    for hit in hits:
        if hit.url in out:
            continue
        title = " ".join(html.unescape(_TAG.sub("", hit.title)).split())
        snippet = " ".join(html.unescape(_TAG.sub("", hit.snippet)).split())
        out[hit.url] = Hit(hit.url, title, snippet)
        if len(out) == k:
            break
    return list(out.values())


class ProviderChain:
    def __init__(self, providers: Sequence[SearchProvider]) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.providers = tuple(providers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.providers)

    async def search(self, query: str, k: int, locale: Locale) -> ChainResult:
        failures: list[str] = []
        answered: str | None = None
        for provider in self.providers:
            try:
                found = clean_hits(await provider.search(query, k, locale), k)
            except ProviderError as exc:
                failures.append(str(exc))
                level = logging.ERROR if exc.status in (401, 403) else logging.WARNING
                log.log(level, "search provider failed, trying the next one: %s", exc)
                continue
            if found:
                return ChainResult(provider.name, found)
            answered = provider.name
            log.info("search provider %s found nothing for %r; trying the next one", provider.name, query)
        if answered is not None:
            return ChainResult(answered, [])
        raise RetryableError("every search provider failed: " + "; ".join(failures))
