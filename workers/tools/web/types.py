"""The search-provider seam: one protocol, the hit it returns, and the query's locale."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

Language = Literal["en", "zh", "ja", "ko"]


@dataclass(frozen=True, slots=True)
class Locale:
    """The language a query is written in, which providers turn into their own parameters
    (Serper gl/hl, SearXNG language, Brave search_lang/country, …).

    Like the Tongyi tools, a query in Chinese is searched as Chinese and anything that is not
    CJK as English; Japanese and Korean get their own markets too.
    """

    language: Language = "en"


_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def detect_locale(text: str) -> Locale:
    # Kana or Hangul decide first: Japanese and Korean text also holds Han characters.
    if _KANA.search(text):
        return Locale("ja")
    if _HANGUL.search(text):
        return Locale("ko")
    if _HAN.search(text):
        return Locale("zh")
    return Locale("en")


@dataclass(frozen=True, slots=True)
class Hit:
    url: str
    title: str
    snippet: str


class SearchProvider(Protocol):
    # The name reported as `ToolOutput.provider` and used in cache keys.
    name: str

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        """Up to `k` hits, best first; raises `ProviderError` when the query cannot be served."""
