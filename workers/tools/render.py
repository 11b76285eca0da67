"""The text formats of tool observations: exactly what the model reads.

Search results, one block per query, blocks separated by a blank line::

    A search for 'QUERY' found N results:
    1. [S3] Title
       URL: https://...
       snippet text (one line, <= 300 chars)
    2. [S7] ...

and for a query without hits the single line ``A search for 'QUERY' found no results.``
(N is always followed by "results", even for 1.) Titles, queries and snippets are squashed onto
one line. ``S3`` is the job-wide source id the model cites.

Visited pages, blocks separated by a blank line::

    [S3] Title
    URL: https://...
    Goal: GOAL
    page text, trimmed to the call's budget, ending in "… [trimmed]" when cut

and for a url that could not be read the single line ``[not found] URL: not in the local corpus``
(with the url in place of URL).

The simulated model reads these formats; `parse_search_results` is the reference reader. Change a
format only together with it and its tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SNIPPET_CHARS = 300
TITLE_CHARS = 200
TRIM_MARK = "… [trimmed]"


@dataclass(frozen=True, slots=True)
class SearchItem:
    source_id: str
    title: str
    url: str
    snippet: str


def one_line(text: str, max_chars: int) -> str:
    """Whitespace squashed to single spaces, cut at a word boundary with "…" past `max_chars`."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max(0, max_chars - 1)]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


# A sentence ends at . ! ? (optionally closed by a quote or bracket) before whitespace, at a CJK
# full stop, or at a line break.
_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]?(?=\s)|[。！？]|\n")


def trim_text(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`; else cut at the last sentence end (or, failing that,
    word boundary) in the final 40% of the room and marked with "… [trimmed]".

    The result never exceeds `max_chars`; below room for the mark it is a plain hard cut.
    """
    if len(text) <= max_chars:
        return text
    room = max_chars - len(TRIM_MARK) - 1
    if room <= 0:
        return text[:max_chars]
    floor = room * 6 // 10
    end = 0
    for match in _BOUNDARY.finditer(text, 0, room + 1):
        if floor <= match.end() <= room:
            end = match.end()
    if not end:
        space = max(text.rfind(" ", floor, room + 1), text.rfind("\n", floor, room + 1))
        end = space if space > 0 else room
    return text[:end].rstrip() + " " + TRIM_MARK


def join_blocks(blocks: Iterable[str]) -> str:
    return "\n\n".join(blocks)


def render_search(query: str, items: list[SearchItem]) -> str:
    shown = one_line(query, SNIPPET_CHARS)
    if not items:
        return f"A search for '{shown}' found no results."
    lines = [f"A search for '{shown}' found {len(items)} results:"]
    for n, item in enumerate(items, start=1):
        lines.append(f"{n}. [{item.source_id}] {one_line(item.title, TITLE_CHARS) or item.url}")
        lines.append(f"   URL: {item.url}")
        lines.append(f"   {one_line(item.snippet, SNIPPET_CHARS)}")
    return "\n".join(lines)


def render_page(source_id: str, title: str, url: str, goal: str, text: str) -> str:
    header = f"[{source_id}] {one_line(title, TITLE_CHARS) or url}\nURL: {url}\nGoal: {one_line(goal, 1000)}"
    return f"{header}\n{text}" if text else header


def render_not_found(url: str, reason: str = "not in the local corpus") -> str:
    return f"[not found] {url}: {reason}"


_HEADER = re.compile(r"^A search for '(.*)' found (?:(\d+) results:|no results\.)$")
_ITEM = re.compile(r"^(\d+)\. \[(S\d+)\] (.*)$")


def parse_search_results(text: str) -> list[tuple[str, list[SearchItem]]]:
    """Read `render_search` blocks back: (query, items) per block. Lines that fit no part of the
    format are ignored, so a truncated observation still yields what it holds."""
    results: list[tuple[str, list[SearchItem]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        header = _HEADER.match(lines[i])
        i += 1
        if not header:
            continue
        items: list[SearchItem] = []
        results.append((header.group(1), items))
        while i < len(lines):
            item = _ITEM.match(lines[i])
            if not item:
                break
            url = snippet = ""
            if i + 1 < len(lines) and lines[i + 1].startswith("   URL: "):
                url = lines[i + 1][len("   URL: ") :]
                if i + 2 < len(lines) and lines[i + 2].startswith("   "):
                    snippet = lines[i + 2][3:]
                    i += 1
                i += 1
            items.append(SearchItem(item.group(2), item.group(3), url, snippet))
            i += 1
    return results
