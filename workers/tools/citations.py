"""Citations of source ids in reports and answers: `[S3]`, `[S1, S3]`, `[S1][S3]`.

Agents cite the job-wide ids the tools hand out (`S<n>`). Before a result is returned, citations
of ids the job never retrieved are removed and counted (`strip_unknown_citations`), and the rest
are renumbered from 1 in order of first appearance (`cited_ids` + `renumber_citations`).
Renumbered groups are written `[1, 2]`, never `[1][2]`, which Markdown reads as a reference link.
"""

from __future__ import annotations

import re

# One bracket holding one or more ids, separated by commas, semicolons or spaces.
_ONE = r"\[\s*S\d+(?:\s*[,;]\s*S\d+|\s+S\d+)*\s*\]"
CITATION_RE = re.compile(_ONE)
# Citations written next to each other, which renumbering merges into one group.
_RUN_RE = re.compile(f"{_ONE}(?:[ \t]*{_ONE})*")
_ID_RE = re.compile(r"S\d+")


def _ids(group: str) -> list[str]:
    return _ID_RE.findall(group)


def cited_ids(text: str) -> list[str]:
    """Every cited id once, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in CITATION_RE.finditer(text):
        for sid in _ids(match.group()):
            seen.setdefault(sid, None)
    return list(seen)


def strip_unknown_citations(text: str, known: set[str]) -> tuple[str, int]:
    """Remove citations of ids not in `known`; returns the text and how many were removed.

    A group keeps its known ids; a citation left empty is removed with the space before it, and
    with a comma tying it to a neighbouring citation or the parentheses around it.
    """
    removed = 0
    # Marks a removed citation until the tidying below has looked at its surroundings.
    mark = next(c for c in ("\x00", "\ufdd0", "\ufdd1", "\ufdd2") if c not in text)

    def replace(match: re.Match[str]) -> str:
        nonlocal removed
        ids = _ids(match.group())
        keep = [sid for sid in ids if sid in known]
        removed += len(ids) - len(keep)
        if len(keep) == len(ids):
            return match.group()
        return "[" + ", ".join(keep) + "]" if keep else mark

    text = CITATION_RE.sub(replace, text)
    if not removed:
        return text, 0
    m = re.escape(mark)
    tidy = [
        (rf"({_ONE})[ \t]*[,;][ \t]*{m}", rf"\1{mark}"),  # "[S1], [S9]" -> "[S1]"
        (rf"{m}[ \t]*[,;][ \t]*(?=\[S\d)", mark),  # "[S9], [S1]" -> "[S1]"
        (rf"\([ \t]*{m}[ \t]*\)", mark),  # "([S9])" -> ""
        (rf"[ \t]+{m}(?=[ \t]|$|[.,;:!?)\]])", ""),  # "fact [S9]." -> "fact."
        (rf"[ \t]+{m}", " "),  # "see [S9][S1]" -> "see [S1]"
        (rf"^{m}[ \t]*", ""),  # a citation opening a line
        (m, ""),
    ]
    for pattern, replacement in tidy:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text, removed


def renumber_citations(text: str, order: dict[str, int]) -> str:
    """Rewrite `[S7]` as `[1]` by `order`; adjacent citations merge into one sorted group
    (`[S7][S2]` -> `[1, 2]`). Ids missing from `order` are kept as written, after the numbers."""

    def replace(match: re.Match[str]) -> str:
        ids = list(dict.fromkeys(_ids(match.group())))
        numbers = sorted({order[sid] for sid in ids if sid in order})
        if not numbers:
            return match.group()
        rest = [sid for sid in ids if sid not in order]
        return "[" + ", ".join([str(n) for n in numbers] + rest) + "]"

    return _RUN_RE.sub(replace, text)
