"""Which uploads we accept, told from the file name, the declared Content-Type and the bytes.

The name's extension names the kind; the declared type must agree with it (or say nothing:
`application/octet-stream`); the first bytes must look like the kind (a PDF starts `%PDF-`,
the Office formats are ZIP archives, text has no NUL bytes). Anything else is refused with
415, before it is stored.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from workers.errors import FileRejected

_OOXML = "application/vnd.openxmlformats-officedocument"
# kind -> (extensions, content types that name it)
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pdf": ((".pdf",), ("application/pdf", "application/x-pdf")),
    "docx": ((".docx",), (f"{_OOXML}.wordprocessingml.document",)),
    "xlsx": ((".xlsx",), (f"{_OOXML}.spreadsheetml.sheet",)),
    "pptx": ((".pptx",), (f"{_OOXML}.presentationml.presentation",)),
    "csv": ((".csv", ".tsv"), ("text/csv", "text/tab-separated-values", "application/csv")),
    "html": ((".html", ".htm"), ("text/html", "application/xhtml+xml")),
    "md": ((".md", ".markdown"), ("text/markdown", "text/x-markdown")),
    "txt": ((".txt", ".text", ".log"), ("text/plain",)),
    "json": ((".json",), ("application/json", "text/json")),
}
LABELS = {
    "pdf": "PDF",
    "docx": "Word document",
    "xlsx": "Excel workbook",
    "pptx": "PowerPoint deck",
    "csv": "CSV table",
    "html": "HTML page",
    "md": "Markdown",
    "txt": "text",
    "json": "JSON",
}
TEXT_KINDS = frozenset({"csv", "html", "md", "txt", "json"})
# Types that say nothing about the content; text/plain is what many clients send for any text.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
ACCEPTED = ", ".join(ext for exts, _ in KINDS.values() for ext in exts)


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def kind_of(name: str, content_type: str, head: bytes) -> str:
    """The upload's kind, or `FileRejected` (415) saying why it is not accepted."""
    ext = PurePosixPath(name).suffix.lower()
    mime = _mime(content_type)
    by_ext = next((k for k, (exts, _) in KINDS.items() if ext in exts), None)
    by_type = next((k for k, (_, types) in KINDS.items() if mime in types), None)
    kind = by_ext or by_type
    if kind is None:
        raise FileRejected(
            f"unsupported file type ({name!r}, {content_type or 'no content type'}); accepted: {ACCEPTED}",
            415,
        )
    declared_ok = mime in GENERIC_TYPES or by_type == kind or (kind in TEXT_KINDS and mime == "text/plain")
    if not declared_ok:
        raise FileRejected(f"the content type {mime} does not match the file name {name!r}", 415)
    _check_bytes(kind, name, head)
    return kind


def _check_bytes(kind: str, name: str, head: bytes) -> None:
    if kind == "pdf" and not head.lstrip()[:1024].startswith(b"%PDF-"):
        raise FileRejected(f"{name!r} is not a PDF (it does not start with %PDF-)", 415)
    if kind in ("docx", "xlsx", "pptx") and not head.startswith(b"PK\x03\x04"):
        raise FileRejected(f"{name!r} is not a {LABELS[kind]} (not a ZIP-based Office file)", 415)
    if kind in TEXT_KINDS and b"\x00" in head:
        raise FileRejected(f"{name!r} holds binary data, not {LABELS[kind]}", 415)


def clean_name(name: str) -> str:
    """The file name without any folder part, as the model will see it."""
    base = PurePosixPath(name.replace("\\", "/")).name.strip()
    return " ".join(base.split())[:200] or "upload"
