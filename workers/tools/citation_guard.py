"""Citations that cannot be faked: every form a model writes, checked against the job's sources.

`citations.py` knows the canonical form, `[S3]` and `[S3, S5]`. Models also write a bare `[7]`,
ranges (`[S3-S5]`, `[3–5]`), Markdown links (`[title](url)`, `[S3](url)`) and bare URLs. Here each
is read, checked against the job's source registry, and:

- an id form is rewritten canonically (`[7]` -> `[S7]`, `[S3-S5]` -> `[S3, S4, S5]`), keeping the
  ids the job retrieved and removing the others (`strip_unknown_citations` tidies the text);
- a Markdown link to a url the job did not retrieve is unlinked: its text stays, its url goes;
- a bare url the job did not retrieve is removed.

Every removal is returned as a `RemovedCitation` naming where it was, so a result can list them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from workers.models import AgentCheckpoint, RemovedCitation, Source
from workers.tools.citations import strip_unknown_citations

# A range longer than this is not a citation anyone checked: only its two ends are read.
MAX_RANGE = 50

_ID = r"S?\d+"
_ITEM = rf"{_ID}(?:\s*[-–—]\s*{_ID})?"
# One bracket of ids, numbers and ranges: [S3], [7], [S3, S5], [3-5], [S1; S4–S6].
_GROUP = re.compile(rf"\[\s*({_ITEM}(?:\s*[,;]\s*{_ITEM}|\s+{_ITEM})*)\s*\]")
_ITEM_RE = re.compile(r"(S?)(\d+)(?:\s*[-–—]\s*(S?)(\d+))?")
# [label](url "title") and ![alt](url); the url may be wrapped in <…>.
_LINK = re.compile(r"(!?)\[([^\[\]\n]*)\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
# No word boundary: "Shttps://…" (a url glued to a word) is still a url.
_BARE_URL = re.compile(r"<?(?:https?|ftp)://[^\s<>()\[\]\"']+>?", re.IGNORECASE)
_TRAILING = ".,;:!?'\"*_"
_WORD_BEFORE = re.compile(r"[A-Za-z0-9_]$")


def normalise_url(url: str) -> str:
    """The form two urls are compared in: scheme and host lowercased, no fragment, no trailing /."""
    try:
        parts = urlsplit(url.strip().strip("<>"))
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    if parts.port:
        host = f"{host}:{parts.port}"
    host = host.removeprefix("www.")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), host, path, parts.query, ""))


class SourceGuard:
    """The job's source registry, as the check reads it."""

    def __init__(self, sources: Iterable[Source]) -> None:
        listed = list(sources)
        self.ids = {s.id for s in listed}
        self.urls = {normalise_url(s.url) for s in listed}

    def knows_url(self, url: str) -> bool:
        return normalise_url(url) in self.urls

    def check(self, text: str, where: str) -> tuple[str, list[RemovedCitation]]:
        return check_citations(text, self, where)

    def clean_agents(self, checkpoints: Iterable[AgentCheckpoint]) -> list[RemovedCitation]:
        """Clean each agent's report and answer in place; what was removed, agent by agent."""
        removed: list[RemovedCitation] = []
        for cp in checkpoints:
            cp.report, in_report = self.check(cp.report, f"agent_reports.{cp.agent}")
            if cp.answer is not None:
                cp.answer, in_answer = self.check(cp.answer, f"agents.{cp.agent}.answer")
                removed += in_answer
            removed += in_report
        return removed


def _expand(body: str) -> list[str]:
    """The ids a bracket names, in order, ranges spelled out (`S3-S5`, `3–5`)."""
    ids: list[str] = []
    for match in _ITEM_RE.finditer(body):
        start, last = int(match.group(2)), match.group(4)
        end = int(last) if last is not None else start
        if start <= end < start + MAX_RANGE:
            ids.extend(f"S{n}" for n in range(start, end + 1))
        else:
            ids.extend((f"S{start}", f"S{end}"))
    return list(dict.fromkeys(ids))


def check_citations(
    text: str, sources: Iterable[Source] | SourceGuard, where: str
) -> tuple[str, list[RemovedCitation]]:
    """`text` with every citation of a source not in `sources` removed or unlinked; and each one."""
    registry = sources if isinstance(sources, SourceGuard) else SourceGuard(sources)
    removed: list[RemovedCitation] = []
    text = _check_links(text, registry, where, removed)
    text = _check_groups(text, registry, where, removed)
    return text, removed


def _check_links(text: str, registry: SourceGuard, where: str, removed: list[RemovedCitation]) -> str:
    # Placeholders keep a kept link's url away from the bare-url pass below.
    kept: list[str] = []
    mark = next(c for c in ("\ufdd3", "\ufdd4", "\ufdd5", "\ufdd6") if c not in text)

    def keep(piece: str) -> str:
        kept.append(piece)
        return f"{mark}{len(kept) - 1}{mark}"

    def link(match: re.Match[str]) -> str:
        label, url = match.group(2), match.group(3)
        if registry.knows_url(url):
            return keep(match.group())
        removed.append(RemovedCitation(where=where, citation=match.group(), removed=[url]))
        if _GROUP.fullmatch(f"[{label.strip()}]"):
            return f"[{label.strip()}]"  # [S3](fake-url): the id is checked on its own below
        return label

    text = _LINK.sub(link, text)
    gone = "\ufdd7" if "\ufdd7" not in text else "\ufdd8"

    def bare(match: re.Match[str]) -> str:
        raw = match.group()
        url = raw.strip("<>")
        tail = ""
        while url and url[-1] in _TRAILING:
            url, tail = url[:-1], url[-1] + tail
        if registry.knows_url(url):
            return keep(raw)
        removed.append(RemovedCitation(where=where, citation=url, removed=[url]))
        return gone + tail

    text = _BARE_URL.sub(bare, text)
    if gone in text:
        g = re.escape(gone)
        for pattern, replacement in (
            (rf"\([ \t]*{g}[ \t]*\)", gone),  # "(https://fake)"
            (rf"[ \t]*[:\-–—][ \t]*{g}", gone),  # "source: https://fake"
            (rf"[ \t]+{g}(?=[ \t]|$|[.,;:!?)\]])", ""),
            (rf"[ \t]+{g}", " "),
            (rf"^{g}[ \t]*", ""),
            (g, ""),
        ):
            text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    m = re.escape(mark)
    return re.sub(rf"{m}(\d+){m}", lambda k: kept[int(k.group(1))], text)


def _check_groups(text: str, registry: SourceGuard, where: str, removed: list[RemovedCitation]) -> str:
    def group(match: re.Match[str]) -> str:
        raw = match.group()
        bare_number = not re.search(r"S\d", raw)
        if bare_number and _WORD_BEFORE.search(text[: match.start()]):
            return raw  # x[0], items[2]: an index, not a citation
        ids = _expand(match.group(1))
        unknown = [sid for sid in ids if sid not in registry.ids]
        if unknown:
            removed.append(RemovedCitation(where=where, citation=raw, removed=unknown))
        # Canonical, so that stripping and renumbering see one form.
        return "[" + ", ".join(ids) + "]"

    text = _GROUP.sub(group, text)
    text, _ = strip_unknown_citations(text, registry.ids)
    return text
