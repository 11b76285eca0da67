"""The text of an uploaded file, per kind, with a well-kept library each:

    pdf         pypdf (already used by visit; pure Python). Encrypted or corrupt: a ToolError
    docx        python-docx: paragraphs (headings marked #) and tables
    xlsx        openpyxl, read-only with cached values: one block per sheet, cells joined " | "
    pptx        python-pptx: one block per slide, its text frames, tables and notes
    html        trafilatura (visit's extractor): the main text
    csv, md, txt, json   decoded as UTF-8 (JSON pretty-printed when it parses)

markitdown would do all of these through one call, but pulls in much more (magika with
onnxruntime, several converters we do not need) for the same text; these four small libraries
are the ones it uses underneath anyway for the Office formats.

Parsers are CPU-bound and synchronous: call them through `anyio.to_thread`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from workers.errors import ParseError
from workers.tools.web.extract import extract_html

# Rows of a sheet or table shown at most: a huge workbook must not stall a worker.
MAX_ROWS = 2000


def parse(kind: str, data: bytes, name: str) -> str:
    try:
        match kind:
            case "pdf":
                return _pdf(data, name)
            case "docx":
                return _docx(data)
            case "xlsx":
                return _xlsx(data)
            case "pptx":
                return _pptx(data)
            case "html":
                return extract_html(data, f"upload:{name}").text
            case "json":
                return _json(_decode(data))
            case _:
                return _decode(data)
    except ParseError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ParseError(f"{name} could not be read: it looks corrupt ({type(exc).__name__})") from None


def _decode(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").strip()


def _pdf(data: bytes, name: str) -> str:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name} is an encrypted PDF; it cannot be read without its password")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except PyPdfError as exc:
        raise ParseError(f"{name} could not be read: a corrupt PDF ({type(exc).__name__})") from None
    return "\n\n".join(f"## Page {i}\n{text}" for i, text in enumerate(pages, start=1) if text)


def _docx(data: bytes) -> str:
    from docx import Document  # imported on use: only parse_file needs it

    doc = Document(io.BytesIO(data))
    lines: list[str] = []
    for paragraph in doc.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading"):
            level = style.removeprefix("Heading").strip()
            text = "#" * (int(level) if level.isdigit() else 1) + " " + text
        lines.append(text)
    for table in doc.tables:
        lines.append("")
        lines += _rows([cell.text for cell in row.cells] for row in table.rows)
    return "\n".join(lines).strip()


def _xlsx(data: bytes) -> str:
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        blocks = []
        for sheet in book.worksheets:
            rows = _rows(sheet.iter_rows(values_only=True))
            blocks.append(f"## Sheet: {sheet.title}\n" + "\n".join(rows))
    finally:
        book.close()
    return "\n\n".join(blocks)


def _pptx(data: bytes) -> str:
    from pptx import Presentation

    deck = Presentation(io.BytesIO(data))
    blocks = []
    for number, slide in enumerate(deck.slides, start=1):
        lines: list[str] = []
        for shape in slide.shapes:
            if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                lines.append(shape.text_frame.text.strip())
            if getattr(shape, "has_table", False):
                lines += _rows([cell.text for cell in row.cells] for row in shape.table.rows)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"Notes: {notes}")
        blocks.append(f"## Slide {number}\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def _json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text  # not valid JSON: the model still gets what the file says


def _rows(rows: Iterable[Iterable[Any]]) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        if i == MAX_ROWS:
            out.append(f"… (rows past {MAX_ROWS} left out)")
            break
        cells = ["" if value is None else " ".join(str(value).split()) for value in row]
        if any(cells):
            out.append(" | ".join(cells).rstrip(" |"))
    return out
