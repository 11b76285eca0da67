"""The corpus file format and the text rules the builder and the reader must share.

One SQLite file:

- `docs(id, url, url_key, title, text)` — the documents as shown to the model;
- `docs_fts(title, body, extra)` — a contentless FTS5 index (English stemming, diacritics folded,
  BM25 via the `rank` column): `body` is the text with CJK characters spaced apart so they index
  one per token, `extra` holds keywords that are searched but never shown (a Wikipedia summary's
  description and topic);
- `meta(key, value)` — schema version, build time, sources, licence and attribution.

The reader and the builder must tokenise identically, hence `segment_cjk`,
`query_terms` and `url_key` live here.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise
from urllib.parse import unquote, urlsplit

SCHEMA_VERSION = "1"

# Title hits count most: a query naming the subject should find the article about it.
RANK_WEIGHTS = (5.0, 1.0, 2.0)

DDL = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    url_key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE VIRTUAL TABLE docs_fts USING fts5(
    title, body, extra, content='', tokenize='porter unicode61 remove_diacritics 2'
);
INSERT INTO docs_fts(docs_fts, rank) VALUES ('rank', 'bm25({", ".join(map(str, RANK_WEIGHTS))})');
"""


# Scripts written without spaces between words. unicode61 would index a whole run of them as
# one token, so a query could only match an identical run; one character per token, queried as
# overlapping two-character phrases, finds words without a segmenter. Hangul uses spaces.
_CJK = (
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
CJK_CHAR = re.compile(f"[{_CJK}]")


def segment_cjk(text: str) -> str:
    return CJK_CHAR.sub(lambda m: f" {m.group()} ", text)


def _is_token_char(ch: str) -> bool:
    # unicode61's token characters (L*, N*, Co) plus marks, so an Indic word stays one phrase.
    return unicodedata.category(ch)[0] in "LNM" or unicodedata.category(ch) == "Co"


def query_terms(text: str) -> list[str]:
    """Split free text into search terms the way the index was tokenised.

    A term is a run of letters/digits/marks. A run of CJK characters, written without spaces,
    becomes its overlapping character pairs, each a two-token FTS phrase ("山海关" -> "山 海",
    "海 关"): a question matches a document sharing some of its words without knowing where the
    words end. Terms never contain quotes or control characters, so quoting them always yields a
    valid FTS5 string.
    """
    terms: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            terms.append("".join(current))
            current.clear()

    for ch in unicodedata.normalize("NFC", text):
        if CJK_CHAR.match(ch):
            if current and not CJK_CHAR.match(current[-1]):
                flush()
            current.append(ch)
        elif _is_token_char(ch):
            if current and CJK_CHAR.match(current[-1]):
                flush()
            current.append(ch)
        else:
            flush()
    flush()
    out: list[str] = []
    for term in terms:
        if CJK_CHAR.match(term[0]) and len(term) > 1:
            out.extend(f"{a} {b}" for a, b in pairwise(term))
        else:
            out.append(term)
    return out


def url_key(url: str) -> str:
    """A lookup key under which spellings of one address agree.

    Models copy urls loosely: http for https, `www.`, a trailing slash, a fragment,
    percent-encoding or not, spaces for underscores in Wikipedia titles, the mobile host.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme:
        return url
    scheme = "http" if parts.scheme.lower() in ("http", "https") else parts.scheme.lower()
    host = parts.netloc.lower().removeprefix("www.")
    path = unquote(parts.path)
    if host.endswith("wikipedia.org"):
        host = host.replace(".m.wikipedia.org", ".wikipedia.org")
        path = path.replace(" ", "_")
    path = path.rstrip("/")
    query = unquote(parts.query)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
