"""Fetching a web page for `visit`: SSRF-checked, bounded in time, size and redirects.

Each hop is checked by the `AddressGuard` and the request goes to the checked address itself
(`Target.pinned_url`, with the real host in `Host` and in TLS SNI), so DNS is consulted once per
hop, by the guard. Redirects are followed here, one checked hop at a time, never by httpx.
The body is streamed and reading stops at `max_bytes`: a longer HTML or text page is cut there
(its start is what matters), a longer PDF is refused (a cut PDF cannot be parsed). Only HTML,
plain text and (when enabled) PDF are read.

With a reader service configured (Jina Reader style: `GET {reader}/{url}` answers with the
page as text), it is asked first, after the url has passed the guard, since the reader would
fetch private addresses for us as readily as public ones; when it fails the page is fetched
directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urljoin

import anyio
import httpx

from workers.errors import BlockedURL, FetchError
from workers.net.reads import error_detail, read_capped
from workers.net.ssrf import AddressGuard, Target
from workers.tools.web.extract import GENERIC_TYPES, Extracted, extract, kind_of

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.1"


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # the url that was asked for
    final_url: str  # after redirects
    title: str
    text: str
    truncated: bool  # the body was cut at max_bytes
    via: str  # "web" or "reader"


class PageFetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        guard: AddressGuard,
        *,
        timeout: float,
        max_bytes: int,
        max_redirects: int,
        user_agent: str,
        pdf: bool = True,
        reader_client: httpx.AsyncClient | None = None,
        reader_base_url: str = "",
        reader_api_key: str = "",
    ) -> None:
        self._client = client
        self._guard = guard
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._user_agent = user_agent
        self._pdf = pdf
        self._reader_client = reader_client
        self._reader = reader_base_url.rstrip("/")
        self._reader_key = reader_api_key

    async def fetch(self, url: str) -> Page:
        """The page's main text; `FetchError` (or `BlockedURL`) saying why it cannot be read."""
        try:
            with anyio.fail_after(self._timeout):
                target = await self._guard.check(url)
                if self._reader and self._reader_client is not None:
                    try:
                        return await self._via_reader(url, target)
                    except FetchError as exc:
                        log.warning("reader service failed for %s (%s); fetching it directly", url, exc)
                return await self._direct(url, target)
        except TimeoutError:
            raise FetchError(f"timed out after {self._timeout:g}s") from None

    async def _direct(self, url: str, target: Target) -> Page:
        for _ in range(self._max_redirects + 1):
            response = await self._send(target)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location", "").strip()
                    if not location:
                        raise FetchError(f"HTTP {response.status_code} redirect without a Location")
                    # Every hop passes the guard again: a public page may redirect inward.
                    target = await self._redirect(target, urljoin(target.url, location))
                    continue
                if response.status_code >= 400:
                    raise FetchError(f"HTTP {response.status_code}")
                extracted, truncated = await self._read(target, response)
            finally:
                await response.aclose()
            if not extracted.text:
                raise FetchError("the page has no readable text")
            return Page(url, target.url, extracted.title or target.url, extracted.text, truncated, "web")
        raise FetchError(f"more than {self._max_redirects} redirects")

    async def _redirect(self, source: Target, location: str) -> Target:
        try:
            return await self._guard.check(location)
        except BlockedURL as exc:
            raise BlockedURL(f"{source.url} redirected to {location}, which was refused. {exc}") from None

    async def _send(self, target: Target) -> httpx.Response:
        headers = {
            "Host": target.host_header,
            "User-Agent": self._user_agent,
            "Accept": _ACCEPT,
            "Accept-Language": "en;q=0.9,*;q=0.5",
        }
        # TLS must verify the certificate of the host, not of the address we pinned.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self._client.build_request("GET", target.pinned_url, headers=headers, extensions=extensions)
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise FetchError(f"could not be fetched ({type(exc).__name__}: {exc})") from None

    async def _read(self, target: Target, response: httpx.Response) -> tuple[Extracted, bool]:
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        kind = None if mime in GENERIC_TYPES else kind_of(content_type, b"")
        if kind is None and mime not in GENERIC_TYPES:
            # Refused before reading: no need to download an image or an archive.
            raise FetchError(f"unsupported content type {mime!r} (visit reads HTML, text and PDF)")
        if kind == "pdf":
            self._check_pdf_size(response)
        body, truncated = await read_capped(response, self._max_bytes)
        kind = kind or kind_of("", body[:1024])
        if kind is None:
            raise FetchError("unsupported content (neither HTML, text nor PDF)")
        if kind == "pdf":
            if not self._pdf:
                raise FetchError("PDF documents are not read here (visit.pdf is off)")
            if truncated:
                raise FetchError(f"the PDF is larger than {self._max_bytes} bytes")
        return await extract(kind, body, url=target.url, content_type=content_type), truncated

    def _check_pdf_size(self, response: httpx.Response) -> None:
        if not self._pdf:
            raise FetchError("PDF documents are not read here (visit.pdf is off)")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise FetchError(f"the PDF is larger than {self._max_bytes} bytes")

    async def _via_reader(self, url: str, target: Target) -> Page:
        assert self._reader_client is not None
        headers = {"Accept": "text/plain"}
        if self._reader_key:
            headers["Authorization"] = f"Bearer {self._reader_key}"
        try:
            reader_url = f"{self._reader}/{target.url}"
            request = self._reader_client.build_request("GET", reader_url, headers=headers)
            response = await self._reader_client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise FetchError(f"reader unreachable ({type(exc).__name__}: {exc})") from None
        try:
            body, truncated = await read_capped(response, self._max_bytes)
        finally:
            await response.aclose()
        if response.status_code >= 400:
            raise FetchError(f"reader answered HTTP {response.status_code}: {error_detail(body)}")
        title, text = parse_reader_text(body.decode("utf-8", "replace"))
        if not text:
            raise FetchError("the reader returned no text")
        return Page(url, target.url, title or target.url, text, truncated, "reader")


def parse_reader_text(text: str) -> tuple[str, str]:
    """Title and content of a reader answer: `Title: …` / `URL Source: …` header lines and
    then the content after `Markdown Content:`; a bare text answer is all content."""
    title = ""
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines[:12]):
        if line.startswith("Title:"):
            title = line[len("Title:") :].strip()
        elif line.strip() == "Markdown Content:":
            return title, "\n".join(lines[i + 1 :]).strip()
    return title, text.strip()
