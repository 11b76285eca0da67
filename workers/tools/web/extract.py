"""Main text out of fetched bytes: HTML through trafilatura, PDF through pypdf, plain text as is.

The parsers are CPU-bound; `extract` runs them in a worker thread so the event loop (and every
other agent's round) keeps going.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

import anyio.to_thread
import trafilatura
from pypdf import PdfReader
from pypdf.errors import PyPdfError
from trafilatura.settings import Document

from workers.errors import ExtractionError

log = logging.getLogger(__name__)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/x-markdown"})
PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
# Types that say nothing about the content: the first bytes decide.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class Extracted:
    title: str
    text: str


def kind_of(content_type: str, head: bytes) -> str | None:
    """ "html", "text" or "pdf" for a Content-Type (sniffing the first bytes when it is missing
    or generic), or None for a type visit does not read."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in HTML_TYPES:
        return "html"
    if mime in TEXT_TYPES:
        return "text"
    if mime in PDF_TYPES:
        return "pdf"
    if mime in GENERIC_TYPES:
        start = head.lstrip()[:512].lower()
        if start.startswith(b"%pdf-"):
            return "pdf"
        if start.startswith((b"<!doctype html", b"<html")) or b"<body" in start:
            return "html"
    return None


def charset_of(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


async def extract(kind: str, body: bytes, *, url: str, content_type: str = "") -> Extracted:
    if kind == "html":
        return await anyio.to_thread.run_sync(extract_html, body, url)
    if kind == "pdf":
        return await anyio.to_thread.run_sync(extract_pdf, body)
    return extract_text(body, charset_of(content_type))


def extract_html(body: bytes, url: str) -> Extracted:
    """The article text without navigation, scripts, cookie banners and footers; pages too
    small for trafilatura's article heuristics fall back to all their visible text."""
    doc = trafilatura.bare_extraction(
        body, url=url, with_metadata=True, include_comments=False, include_tables=True, favor_recall=True
    )
    title = ""
    text = ""
    if isinstance(doc, Document):
        title = (doc.title or "").strip()
        text = (doc.text or "").strip()
    if not text:
        _, text, _ = trafilatura.baseline(body)
        text = text.strip()
    if not title:
        match = _TITLE.search(body[:200_000])
        if match:
            title = " ".join(match.group(1).decode("utf-8", "replace").split())
    return Extracted(title=title, text=_tidy(text))


def extract_pdf(body: bytes) -> Extracted:
    try:
        reader = PdfReader(io.BytesIO(body))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title).strip()
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise ExtractionError(f"the PDF could not be read ({type(exc).__name__}: {exc})") from None
    return Extracted(title=title, text=_tidy("\n\n".join(pages)))


def extract_text(body: bytes, charset: str | None) -> Extracted:
    try:
        text = body.decode(charset or "utf-8", "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    return Extracted(title="", text=_tidy(text))


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
