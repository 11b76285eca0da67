"""Local fakes of the keyless scholarly APIs google_scholar calls, on 127.0.0.1: OpenAlex
(`/openalex/works`), Semantic Scholar (`/s2/paper/search`) and arXiv (`/arxiv/query`, an
Atom feed), with bodies shaped as their public documentation shows them.

`modes[name]` scripts each: `ok`, `empty` (a valid answer with no papers), `429`, `500`,
`garbage` (a 200 that cannot be parsed). Every request is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_search_apis import LoopbackServer, slug

NAMES = ("openalex", "semanticscholar", "arxiv")


@dataclass
class ScholarAPIs:
    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(NAMES, "ok"))
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    server: LoopbackServer | None = None

    def __enter__(self) -> Self:
        routes = [
            Route("/openalex/works", self._openalex),
            Route("/s2/paper/search", self._s2),
            Route("/arxiv/query", self._arxiv),
        ]
        self.server = LoopbackServer(Starlette(routes=routes))
        self.server.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    def url(self, name: str) -> str:
        """The base URL to configure for provider `name` (scholar.<name>.base_url)."""
        assert self.server is not None
        path = "s2" if name == "semanticscholar" else name
        return f"{self.server.base_url}/{path}"

    def calls(self, name: str) -> int:
        return sum(1 for n, _, _ in self.requests if n == name)

    def _record(self, name: str, request: Request) -> str:
        self.requests.append((name, dict(request.query_params), dict(request.headers)))
        return self.modes[name]

    @staticmethod
    def _failure(mode: str) -> Response | None:
        if mode == "429":
            return JSONResponse({"message": "Too Many Requests"}, status_code=429)
        if mode == "500":
            return JSONResponse({"error": "internal"}, status_code=500)
        if mode == "garbage":
            return Response("<html>maintenance</html>", media_type="text/html")
        return None

    async def _openalex(self, request: Request) -> Response:
        mode = self._record("openalex", request)
        if failed := self._failure(mode):
            return failed
        query = request.query_params["search"]
        n = 0 if mode == "empty" else min(int(request.query_params.get("per-page", 25)), 2)
        results = [
            {
                "id": f"https://openalex.org/W{100 + i}",
                "doi": f"https://doi.org/10.1234/{slug(query)}.{i}",
                "display_name": f"OpenAlex paper {i} on {query}",
                "publication_year": 2019 + i,
                "cited_by_count": 40 + i,
                "authorships": [
                    {"author": {"display_name": name}}
                    for name in ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra")
                ],
                "primary_location": {
                    "landing_page_url": f"https://journal.example/{i}",
                    "pdf_url": None,
                    "source": {"display_name": "Journal of Examples"},
                },
                "best_oa_location": {"pdf_url": f"https://journal.example/{i}.pdf"} if i == 0 else None,
                "abstract_inverted_index": {"studies": [1], "This": [0], query: [2]},
            }
            for i in range(n)
        ]
        return JSONResponse({"meta": {"count": n}, "results": results})

    async def _s2(self, request: Request) -> Response:
        mode = self._record("semanticscholar", request)
        if failed := self._failure(mode):
            return failed
        if mode == "empty":
            return JSONResponse({"total": 0, "offset": 0})
        query = request.query_params["query"]
        data = [
            {
                "paperId": "abc123",
                "url": "https://www.semanticscholar.org/paper/abc123",
                "title": f"Semantic Scholar paper on {query}",
                "abstract": "An abstract.",
                "venue": "NeurIPS",
                "year": 2021,
                "citationCount": 7,
                "openAccessPdf": {"url": "https://arxiv.org/pdf/2101.00001"},
                "authors": [{"authorId": "1", "name": "Yoshua Bengio"}],
                "externalIds": {"DOI": "10.5555/s2"},
            }
        ]
        return JSONResponse({"total": 1, "offset": 0, "data": data})

    async def _arxiv(self, request: Request) -> Response:
        mode = self._record("arxiv", request)
        if failed := self._failure(mode):
            return failed
        query = request.query_params["search_query"].removeprefix("all:")
        entries = (
            ""
            if mode == "empty"
            else f"""
  <entry>
    <id>http://arxiv.org/abs/2101.00001v1</id>
    <published>2021-01-01T00:00:00Z</published>
    <title>An arXiv paper on {escape(query)}</title>
    <summary>  We study {escape(query)}. </summary>
    <author><name>Geoffrey Hinton</name></author>
    <link href="http://arxiv.org/abs/2101.00001v1" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/2101.00001v1" rel="related" type="application/pdf"/>
  </entry>"""
        )
        head = '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        feed = f"{head}<title>ArXiv Query</title>{entries}\n</feed>"
        return Response(feed, media_type="application/atom+xml")
