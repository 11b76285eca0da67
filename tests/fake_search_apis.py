"""Local fakes of the web, served on 127.0.0.1 by a real uvicorn in a background thread:

- `SearchAPIs`: SearXNG, Serper (web and Scholar), Tavily and Brave, each at its documented
  path under `/<provider>`, answering with bodies shaped as the providers' public documentation
  shows them, including their error bodies. A mode per provider scripts its behaviour; every
  request is recorded, so tests count upstream calls.
- `Website`: pages for `visit`: a real-world-like article (navigation, scripts, cookie banner,
  sidebar, footer), plain text, a PDF, redirects, an endless body, an image, a hanging page.

Both are real code the tests drive over HTTP, not mocks of our own functions.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "test-key"
PROVIDERS = ("searxng", "serper", "serper-scholar", "tavily", "brave")

# What a provider does with the next requests:
#   ok       results for the query        empty    a valid answer with no results
#   429      its rate-limit answer        401      its bad-key answer (Brave: 422, as documented)
#   500      a server error               hang     no answer until the server stops
#   garbage  a 200 that is not JSON       quota    its out-of-credits answer (Serper 400,
#   hold     wait for `release()`                  Tavily 432, Brave 429 QUOTA_LIMITED)
MODES = ("ok", "empty", "429", "401", "500", "hang", "garbage", "quota", "hold")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "q"


@dataclass
class Recorded:
    provider: str
    query: str
    params: dict[str, Any]
    headers: dict[str, str]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LoopbackServer:
    """An ASGI app on a free 127.0.0.1 port, in a daemon thread. `stopping` is set on stop, so
    handlers that hang can end."""

    def __init__(self, app: Starlette, *, certfile: str | None = None) -> None:
        self.app = app
        # A PEM holding the key and the certificate chain: the server then speaks HTTPS.
        self.certfile = certfile
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"{'https' if self.certfile else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=self.certfile,
        )
        self._server = server = _Server(config, ready)

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"fake-web:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(30) or not server.started:
            raise RuntimeError("the fake server did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    async def until_stopped(self) -> None:
        """What a hanging handler awaits: returns only when the server stops."""
        await asyncio.to_thread(self.stopping.wait)


# -- search APIs ----------------------------------------------------------------------------------
@dataclass
class SearchAPIs:
    """The four providers' APIs. `modes[provider]` scripts each one (see MODES); `results`
    maps a query to the hits to answer with (default: made up from the query)."""

    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(PROVIDERS, "ok"))
    results: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    # When set, made-up hits link to `<hit_base>/page/<slug>-<i>` (a `Website`) instead of
    # `https://<provider>.example/…`, so an agent that visits them stays on loopback.
    hit_base: str | None = None
    latency: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    server: LoopbackServer | None = None

    def __enter__(self) -> Self:
        self.server = LoopbackServer(self.app()).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.released.set()
        assert self.server is not None
        self.server.__exit__(None, None, None)

    def url(self, provider: str) -> str:
        """The provider's base_url setting."""
        assert self.server is not None
        base = self.server.base_url
        return {"searxng": f"{base}/searxng", "serper": f"{base}/serper", "tavily": f"{base}/tavily"}.get(
            provider, f"{base}/brave/res/v1"
        )

    def count(self, provider: str | None = None) -> int:
        return sum(1 for r in self.requests if provider is None or r.provider == provider)

    def set(self, mode: str, *providers: str) -> None:
        assert mode in MODES
        for provider in providers or PROVIDERS:
            self.modes[provider] = mode

    def hits_for(self, provider: str, query: str, n: int) -> list[tuple[str, str, str]]:
        if query in self.results:
            return self.results[query][:n]
        base = (
            f"{self.hit_base}/page/{slug(query)}-"
            if self.hit_base
            else f"https://{provider}.example/{slug(query)}/"
        )
        return [
            (
                f"{base}{i}",
                f"{query} <b>result</b> {i} ({provider})",
                f"Snippet {i} about {query} &amp; more, from {provider}.",
            )
            for i in range(1, n + 1)
        ]

    # The HTTP side ------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/searxng/search", self._searxng, methods=["GET", "POST"]),
                Route("/serper/search", self._serper, methods=["POST"]),
                Route("/serper/scholar", self._serper_scholar, methods=["POST"]),
                Route("/tavily/search", self._tavily, methods=["POST"]),
                Route("/brave/res/v1/web/search", self._brave, methods=["GET"]),
            ]
        )

    async def _gate(self, provider: str, query: str, params: dict[str, Any], request: Request) -> str:
        self.requests.append(Recorded(provider, query, params, dict(request.headers)))
        mode = self.modes[provider]
        if self.latency:
            await asyncio.sleep(self.latency)
        if mode == "hold":
            self.arrived.set()
            await asyncio.to_thread(self.released.wait, 30)
            # A test may script how the held request ends.
            mode = self.modes[provider]
            return "ok" if mode == "hold" else mode
        if mode == "hang":
            assert self.server is not None
            await self.server.until_stopped()
        return mode

    async def _searxng(self, request: Request) -> Response:
        params = dict(request.query_params)
        query = params.get("q", "")
        mode = await self._gate("searxng", query, params, request)
        if params.get("format") != "json":
            return PlainTextResponse("Forbidden", status_code=403)
        if mode in ("401", "quota"):
            # What an instance without the json format enabled answers.
            return PlainTextResponse("Forbidden", status_code=403)
        if mode == "429":
            return PlainTextResponse("Too Many Requests", status_code=429)
        if mode == "500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        if mode == "garbage":
            return Response("<html><body>searx</body></html>", media_type="text/html")
        found = [] if mode == "empty" else self.hits_for("searxng", query, 12)
        return JSONResponse(
            {
                "query": query,
                "number_of_results": len(found),
                "results": [
                    {
                        "url": url,
                        "title": title,
                        "content": snippet,
                        "engine": "duckduckgo",
                        "parsed_url": ["https", "x", "/", "", "", ""],
                        "template": "default.html",
                        "engines": ["duckduckgo", "brave"],
                        "positions": [i + 1],
                        "score": 2.0 / (i + 1),
                        "category": "general",
                    }
                    for i, (url, title, snippet) in enumerate(found)
                ],
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        )

    def _serper_error(self, mode: str) -> Response | None:
        if mode == "401":
            return JSONResponse({"message": "Unauthorized.", "statusCode": 401}, status_code=401)
        if mode == "quota":
            return JSONResponse({"message": "Not enough credits", "statusCode": 400}, status_code=400)
        if mode == "429":
            return JSONResponse({"message": "Too many requests", "statusCode": 429}, status_code=429)
        if mode == "500":
            return JSONResponse({"message": "Internal server error", "statusCode": 500}, status_code=500)
        if mode == "garbage":
            return PlainTextResponse("upstream connect error")
        return None

    async def _serper_common(
        self, request: Request, provider: str
    ) -> tuple[dict[str, Any], str, Response | None]:
        body = await request.json()
        mode = await self._gate(provider, str(body.get("q", "")), body, request)
        if request.headers.get("x-api-key") != API_KEY:
            mode = "401"
        return body, mode, self._serper_error(mode)

    async def _serper(self, request: Request) -> Response:
        body, mode, error = await self._serper_common(request, "serper")
        if error is not None:
            return error
        query = str(body["q"])
        payload: dict[str, Any] = {
            "searchParameters": {
                "q": query,
                "gl": body.get("gl", "us"),
                "hl": body.get("hl", "en"),
                "type": "search",
                "num": body.get("num", 10),
                "engine": "google",
            },
            "credits": 1,
        }
        if mode != "empty":
            payload["organic"] = [
                {"title": title, "link": url, "snippet": snippet, "position": i + 1}
                for i, (url, title, snippet) in enumerate(
                    self.hits_for("serper", query, int(body.get("num", 10)))
                )
            ]
            payload["relatedSearches"] = [{"query": f"{query} history"}]
        return JSONResponse(payload)

    async def _serper_scholar(self, request: Request) -> Response:
        body, mode, error = await self._serper_common(request, "serper-scholar")
        if error is not None:
            return error
        query = str(body["q"])
        found = [] if mode == "empty" else self.hits_for("scholar", query, int(body.get("num", 10)))
        return JSONResponse(
            {
                "searchParameters": {"q": query, "type": "scholar", "engine": "google-scholar"},
                "organic": [
                    {
                        "title": title,
                        "link": url,
                        "publicationInfo": f"A Author, B Author - Journal of {query.title()}, {2000 + i}",
                        "snippet": snippet,
                        "year": 2000 + i,
                        "citedBy": 100 - i,
                        "pdfUrl": url + ".pdf",
                        "id": f"id{i}",
                    }
                    for i, (url, title, snippet) in enumerate(found)
                ],
                "credits": 1,
            }
        )

    async def _tavily(self, request: Request) -> Response:
        body = await request.json()
        query = str(body.get("query", ""))
        mode = await self._gate("tavily", query, body, request)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            mode = "401"
        errors = {
            "401": (401, "Unauthorized: missing or invalid API key."),
            "429": (
                429,
                "Your request has been blocked due to excessive requests. Please reduce rate of requests.",
            ),
            "quota": (
                432,
                "This request exceeds your plan's set usage limit. "
                "Please upgrade your plan or contact support@tavily.com",
            ),
            "500": (500, "Internal Server Error"),
        }
        if mode in errors:
            status, message = errors[mode]
            return JSONResponse({"detail": {"error": message}}, status_code=status)
        if mode == "garbage":
            return PlainTextResponse("Bad gateway", status_code=200)
        found = [] if mode == "empty" else self.hits_for("tavily", query, int(body.get("max_results", 5)))
        return JSONResponse(
            {
                "query": query,
                "answer": None,
                "images": [],
                "results": [
                    {
                        "title": title,
                        "url": url,
                        "content": snippet,
                        "score": 0.9 - i / 20,
                        "raw_content": None,
                    }
                    for i, (url, title, snippet) in enumerate(found)
                ],
                "response_time": 0.42,
                "request_id": "123e4567-e89b-12d3-a456-426614174111",
            }
        )

    async def _brave(self, request: Request) -> Response:
        params = dict(request.query_params)
        query = params.get("q", "")
        mode = await self._gate("brave", query, params, request)
        if request.headers.get("x-subscription-token") != API_KEY:
            mode = "401"
        errors = {
            "401": (
                422,
                "SUBSCRIPTION_TOKEN_INVALID",
                "The provided subscription token is invalid.",
                "authentication",
            ),
            "429": (429, "RATE_LIMITED", "Request rate limit exceeded for plan.", "rate_limiter"),
            "quota": (429, "QUOTA_LIMITED", "Request quota limit exceeded for plan.", "rate_limiter"),
            "500": (500, "INTERNAL_ERROR", "Internal error.", "search"),
        }
        if mode in errors:
            status, code, detail, component = errors[mode]
            return JSONResponse(
                {
                    "type": "ErrorResponse",
                    "error": {
                        "id": "5d832250-9396-4f6e-b84a-2a1fe524cd7d",
                        "status": status,
                        "code": code,
                        "detail": detail,
                        "meta": {"component": component},
                    },
                    "time": 1663072993,
                },
                status_code=status,
            )
        if mode == "garbage":
            return PlainTextResponse("not json")
        payload: dict[str, Any] = {
            "type": "search",
            "query": {"original": query, "show_strict_warning": False, "is_navigational": False},
            "mixed": {"type": "mixed", "main": [], "top": [], "side": []},
        }
        if mode != "empty":
            payload["web"] = {
                "type": "search",
                "family_friendly": True,
                "results": [
                    {
                        "type": "search_result",
                        "title": title,
                        "url": url,
                        "description": snippet.replace(query, f"<strong>{query}</strong>"),
                        "is_source_local": False,
                        "is_source_both": False,
                        "language": "en",
                        "family_friendly": True,
                        "age": "March 3, 2024",
                    }
                    for url, title, snippet in self.hits_for("brave", query, int(params.get("count", 20)))
                ],
            }
        return JSONResponse(payload)


# -- a website for visit ---------------------------------------------------------------------------
ARTICLE_HTML = """<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8"><title>Comet Brandvik | The Valdoria Observer</title>
<script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}</script>
<script src="/static/app.js"></script>
<style>body { font-family: sans-serif } .nav a { margin: 0 1em }</style>
</head><body>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>
<header><nav class="nav"><a href="/">Home</a><a href="/news">News</a><a href="/science">Science</a>
<a href="/subscribe">Subscribe</a><a href="/login">Sign in</a></nav></header>
<aside class="sidebar"><h3>Trending</h3><ul><li><a href="/x">Ten gadgets you need</a></li>
<li><a href="/y">Celebrity chef opens bistro</a></li></ul></aside>
<main><article>
<h1>Comet Brandvik returns to the evening sky</h1>
<p class="byline">By Marta Ek, science correspondent. Published 4 April 2024.</p>
<p>Comet Brandvik is a periodic comet with an orbital period of about 71 years. It was discovered by
the astronomer Ilse Brandvik at the Halvard Observatory on 3 March 1791, using the observatory's
Great Brass Refractor.</p>
<p>The comet's last perihelion passage was in 2004, when it reached a magnitude of 4.2 and was
visible to the naked eye from dark sites. Its next perihelion is expected in 2075.</p>
<p>Observers at Halvard still keep Brandvik's original logbook, in which she described the comet as
"a faint nebulous star without a tail" on the night of its discovery.</p>
</article></main>
<div class="newsletter">Sign up for our newsletter! Get the best stories in your inbox.</div>
<footer><p>Copyright 2024 The Valdoria Observer. All rights reserved.</p>
<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p></footer>
<script>document.querySelectorAll('.cookie-banner button').forEach(b => b.onclick = () => 1);</script>
</body></html>"""

PLAIN_TEXT = """Halvard Observatory visitor notes.
The observatory was founded by Ilse Brandvik in 1788.
Its Great Brass Refractor has an aperture of 30 centimetres."""


def make_pdf(lines: list[str], title: str = "Brandvik Report") -> bytes:
    """A minimal one-page PDF with text, written by hand (xref offsets computed)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


PDF_BYTES = make_pdf(["Brandvik Report.", "Comet Brandvik has an orbital period of about 71 years."])


@dataclass
class Website:
    """Pages under test. `hits` counts requests per path; `sent` counts body bytes per path."""

    hits: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    pages: dict[str, str] = field(default_factory=dict)
    # The reader service (`/reader/<url>`, Jina Reader style) answers 500 while this is set.
    reader_fails: bool = False
    certfile: str | None = None
    server: LoopbackServer | None = None

    def __enter__(self) -> Self:
        self.server = LoopbackServer(self.app(), certfile=self.certfile).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.__exit__(None, None, None)

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"{self.server.base_url}{path}"

    def app(self) -> Starlette:
        routes: list[Route] = [
            Route("/article", self._static(ARTICLE_HTML, "text/html; charset=utf-8")),
            Route("/notes.txt", self._static(PLAIN_TEXT, "text/plain; charset=utf-8")),
            Route("/report.pdf", self._static(PDF_BYTES, "application/pdf")),
            Route("/sniffed", self._static(ARTICLE_HTML, "application/octet-stream")),
            Route("/image.png", self._static(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")),
            Route("/archive.zip", self._static(b"PK\x03\x04" + b"\0" * 64, "application/zip")),
            Route("/empty", self._static("<html><body><script>x()</script></body></html>", "text/html")),
            Route("/missing", self._missing),
            Route("/redirect", self._redirect),
            Route("/loop", self._loop),
            Route("/endless", self._endless),
            Route("/endless.pdf", self._endless_pdf),
            Route("/slow", self._slow),
            Route("/page/{name}", self._page),
            Route("/reader/{target:path}", self._reader),
        ]
        return Starlette(routes=routes)

    def _count(self, request: Request) -> None:
        self.hits[request.url.path] += 1

    def _static(self, body: str | bytes, media_type: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            self._count(request)
            data = body.encode() if isinstance(body, str) else body
            self.sent[request.url.path] += len(data)
            return Response(data, headers={"content-type": media_type})

        return handler

    async def _missing(self, request: Request) -> Response:
        self._count(request)
        return PlainTextResponse("Not Found", status_code=404)

    async def _redirect(self, request: Request) -> Response:
        self._count(request)
        return RedirectResponse(
            request.query_params["to"], status_code=int(request.query_params.get("code", 302))
        )

    async def _loop(self, request: Request) -> Response:
        self._count(request)
        return RedirectResponse("/loop", status_code=302)

    def _stream(self, request: Request, head: bytes, media_type: str) -> StreamingResponse:
        path = request.url.path
        assert self.server is not None
        stopping = self.server.stopping

        async def body() -> AsyncIterator[bytes]:
            yield head
            self.sent[path] += len(head)
            chunk = b"<p>More and more text about nothing in particular. </p>\n" * 256
            # Endless: only the client going away (its size cap) or the server stopping ends it.
            while not stopping.is_set() and not await request.is_disconnected():
                yield chunk
                self.sent[path] += len(chunk)

        return StreamingResponse(body(), media_type=media_type)

    async def _endless(self, request: Request) -> Response:
        self._count(request)
        return self._stream(request, ARTICLE_HTML.split("<footer>")[0].encode(), "text/html")

    async def _endless_pdf(self, request: Request) -> Response:
        self._count(request)
        return self._stream(request, b"%PDF-1.4\n", "application/pdf")

    async def _slow(self, request: Request) -> Response:
        self._count(request)
        assert self.server is not None
        await self.server.until_stopped()
        return PlainTextResponse("too late")

    async def _reader(self, request: Request) -> Response:
        self._count(request)
        if self.reader_fails:
            return JSONResponse({"code": 500, "message": "reader broke"}, status_code=500)
        target = request.path_params["target"]
        return PlainTextResponse(
            f"Title: Read by the reader\nURL Source: {target}\n\nMarkdown Content:\n"
            "# Comet Brandvik\n\nComet Brandvik was discovered on 3 March 1791 by Ilse Brandvik."
        )

    async def _page(self, request: Request) -> Response:
        self._count(request)
        name = request.path_params["name"]
        # Pages nobody wrote read as a short article about the words of their name.
        words = " ".join(name.split("-")[:-1]) or name
        text = self.pages.get(name) or (
            f"This page is about {words}.\nThe study of {words} began in 1791 at the Halvard Observatory."
            f"\nMuch of what is known about {words} comes from the logbooks kept there."
        )
        paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n") if p.strip())
        html = (
            f"<html><head><title>{name}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>{name}</h1>{paragraphs}</article><footer>Footer text</footer></body></html>"
        )
        return Response(html, media_type="text/html")
