"""Keyless scholarly search APIs for `google_scholar`, each behind `SearchProvider`.

    openalex          GET {base}/works?search=…&per-page=k[&mailto=…][&api_key=…]
    semanticscholar   GET {base}/paper/search?query=…&limit=k&fields=…   (x-api-key optional)
    arxiv             GET {base}/query?search_query=all:…&max_results=k   (an Atom feed)

Every hit's snippet carries the paper's facts the way the released tool lists them, so the model
reads every provider alike (see `paper_snippet`); the hit's url is the paper's DOI or landing
page, and its PDF link, when known, is in the snippet.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from workers.errors import ProviderError
from workers.settings import SearchProviderSettings
from workers.tools.web.http import request_json, request_raw
from workers.tools.web.providers._parse import results_at
from workers.tools.web.types import Hit, Locale

MAX_AUTHORS = 3
ABSTRACT_CHARS = 400


@dataclass(frozen=True)
class Paper:
    url: str
    title: str
    authors: Sequence[str] = ()
    year: int | None = None
    venue: str = ""
    cited_by: int | None = None
    pdf_url: str = ""
    abstract: str = ""

    def hit(self) -> Hit:
        return Hit(url=self.url, title=self.title, snippet=paper_snippet(self))


def paper_snippet(paper: Paper) -> str:
    """`Authors: A, B, C et al. · Venue: V · Year: 2019 · Cited by: 42 · PDF: url — abstract`,
    each part only when known."""
    facts: list[str] = []
    if paper.authors:
        names = ", ".join(paper.authors[:MAX_AUTHORS]) + (
            " et al." if len(paper.authors) > MAX_AUTHORS else ""
        )
        facts.append(f"Authors: {names}")
    if paper.venue:
        facts.append(f"Venue: {paper.venue}")
    if paper.year:
        facts.append(f"Year: {paper.year}")
    if paper.cited_by is not None:
        facts.append(f"Cited by: {paper.cited_by}")
    facts.append(f"PDF: {paper.pdf_url}" if paper.pdf_url else "PDF: no available link")
    lead = " · ".join(facts)
    abstract = " ".join(paper.abstract.split())[:ABSTRACT_CHARS]
    return f"{lead} — {abstract}" if abstract else lead


def _str(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _get(item: Any, *path: str) -> Any:
    for step in path:
        item = item.get(step) if isinstance(item, dict) else None
    return item


def _http_url(*candidates: Any) -> str:
    return next((c for c in map(_str, candidates) if c.startswith(("http://", "https://"))), "")


class OpenAlexProvider:
    name = "openalex"

    def __init__(
        self, client: httpx.AsyncClient, settings: SearchProviderSettings, *, mailto: str = ""
    ) -> None:
        self._client = client
        self._settings = settings
        self._mailto = mailto

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        params: dict[str, str | int] = {"search": query, "per-page": k}
        if self._mailto:
            params["mailto"] = self._mailto
        if self._settings.api_key:
            params["api_key"] = self._settings.api_key
        payload = await request_json(
            self._client,
            self.name,
            "GET",
            self._settings.base_url.rstrip("/") + "/works",
            timeout=self._settings.timeout,
            params=params,
        )
        papers = [self._paper(item) for item in results_at(self.name, payload, "results")]
        return [p.hit() for p in papers if p is not None][:k]

    @staticmethod
    def _paper(item: Any) -> Paper | None:
        url = _http_url(
            _get(item, "doi"), _get(item, "primary_location", "landing_page_url"), _get(item, "id")
        )
        title = _str(_get(item, "display_name")) or _str(_get(item, "title"))
        if not url or not title:
            return None
        authorships = _get(item, "authorships")
        authors = [
            _str(_get(a, "author", "display_name"))
            for a in (authorships if isinstance(authorships, list) else [])
        ]
        return Paper(
            url=url,
            title=title,
            authors=[a for a in authors if a],
            year=_int(_get(item, "publication_year")),
            venue=_str(_get(item, "primary_location", "source", "display_name")),
            cited_by=_int(_get(item, "cited_by_count")),
            pdf_url=_http_url(
                _get(item, "best_oa_location", "pdf_url"), _get(item, "primary_location", "pdf_url")
            ),
            abstract=_abstract(_get(item, "abstract_inverted_index")),
        )


def _abstract(index: Any) -> str:
    """OpenAlex ships abstracts as an inverted index (word -> positions); put it back in order."""
    if not isinstance(index, dict):
        return ""
    at: dict[int, str] = {}
    for word, positions in index.items():
        for position in positions if isinstance(positions, list) else []:
            if isinstance(position, int) and len(at) < 2000:
                at[position] = str(word)
    return " ".join(at[i] for i in sorted(at))


class SemanticScholarProvider:
    name = "semanticscholar"
    FIELDS = "title,url,year,venue,citationCount,openAccessPdf,authors,abstract,externalIds"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        headers = {"x-api-key": self._settings.api_key} if self._settings.api_key else None
        payload = await request_json(
            self._client,
            self.name,
            "GET",
            self._settings.base_url.rstrip("/") + "/paper/search",
            timeout=self._settings.timeout,
            headers=headers,
            params={"query": query, "limit": k, "fields": self.FIELDS},
        )
        # No `data` at all means no match (the API then answers {"total": 0}).
        items = results_at(self.name, payload, "data", required=False)
        papers = [self._paper(item) for item in items]
        return [p.hit() for p in papers if p is not None][:k]

    @staticmethod
    def _paper(item: Any) -> Paper | None:
        doi = _str(_get(item, "externalIds", "DOI"))
        url = _http_url(f"https://doi.org/{doi}" if doi else "", _get(item, "url"))
        title = _str(_get(item, "title"))
        if not url or not title:
            return None
        authors = _get(item, "authors")
        return Paper(
            url=url,
            title=title,
            authors=[
                n
                for n in (_str(_get(a, "name")) for a in (authors if isinstance(authors, list) else []))
                if n
            ],
            year=_int(_get(item, "year")),
            venue=_str(_get(item, "venue")),
            cited_by=_int(_get(item, "citationCount")),
            pdf_url=_http_url(_get(item, "openAccessPdf", "url")),
            abstract=_str(_get(item, "abstract")),
        )


_ATOM = "{http://www.w3.org/2005/Atom}"


class ArxivProvider:
    name = "arxiv"

    def __init__(self, client: httpx.AsyncClient, settings: SearchProviderSettings) -> None:
        self._client = client
        self._settings = settings

    async def search(self, query: str, k: int, locale: Locale) -> list[Hit]:
        raw = await request_raw(
            self._client,
            self.name,
            "GET",
            self._settings.base_url.rstrip("/") + "/query",
            timeout=self._settings.timeout,
            params={"search_query": f"all:{query}", "start": 0, "max_results": k},
        )
        try:
            # expat (Python >= 3.7.1 bundles >= 2.4) refuses entity-expansion bombs.
            feed = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise ProviderError(
                self.name, f"answered with something that is not an Atom feed ({exc})"
            ) from None
        if feed.tag != f"{_ATOM}feed":
            raise ProviderError(self.name, f"answered with <{feed.tag}>, not an Atom feed")
        return [p.hit() for p in map(self._paper, feed.iter(f"{_ATOM}entry")) if p is not None][:k]

    @staticmethod
    def _paper(entry: ET.Element) -> Paper | None:
        def text(tag: str) -> str:
            return _str(entry.findtext(f"{_ATOM}{tag}"))

        url, title = _http_url(text("id")), text("title")
        if not url or not title:
            return None
        pdf = next(
            (link.get("href", "") for link in entry.iter(f"{_ATOM}link") if link.get("title") == "pdf"), ""
        )
        published = text("published")
        return Paper(
            url=url,
            title=title,
            authors=[_str(a.findtext(f"{_ATOM}name")) for a in entry.iter(f"{_ATOM}author")],
            year=int(published[:4]) if published[:4].isdigit() else None,
            venue="arXiv",
            pdf_url=_http_url(pdf),
            abstract=text("summary"),
        )
