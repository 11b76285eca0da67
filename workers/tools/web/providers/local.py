"""The local corpus (SQLite FTS5) as a search provider, so it can close a web chain."""

from __future__ import annotations

from workers.corpus import Corpus
from workers.errors import CorpusError, ProviderError
from workers.tools.web.types import Hit, Locale


class LocalProvider:
    name = "local"

    def __init__(self, corpus: Corpus) -> None:
        self._corpus = corpus

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        # BM25 over the corpus has no notion of market; the locale does not apply.
        try:
            found = await self._corpus.search(query, k)
        except CorpusError as exc:
            raise ProviderError(self.name, str(exc)) from None
        return [Hit(url=h.url, title=h.title, snippet=h.snippet) for h in found]
