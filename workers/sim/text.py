"""Text helpers of the simulated model (SIMULATION): its tokenizer, keywords and sentences."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

SimRole = Literal["research", "synthesis", "summariser", "judge", "other"]

# A finding is one line of at most this many characters, in reports and syntheses alike.
MAX_FINDING_CHARS = 200

_STOPWORD_TEXT = """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own same she should so some such
    than that the their theirs them then there these they this those through to too under until up
    very was we were what when where which while who whom whose why will with would you your yours
    also many much name named find give tell list please known first one two"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

CITATION = re.compile(r"\[(S\d+)\]")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
# A sentence ends at . ! ? before a capital, but not after an initial ("Philip K. Dick") or a
# common abbreviation.
_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bvs\.)(?<!\bNo\.)"
    r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])"
)


def count_tokens(text: str) -> int:
    """The simulation's tokenizer: one token per four characters, rounded up.

    Cheap and deterministic; usage figures and the bounded-context benchmark are measured in it.
    """
    return -(-len(text) // 4)


@dataclass(frozen=True)
class Reply:
    role: SimRole
    content: str
    reasoning: str = ""


def keywords(text: str) -> list[str]:
    """Content words of `text`, lowercased, in order, without duplicates."""
    return list(_keywords(text))


@lru_cache(maxsize=4096)
def _keywords(text: str) -> tuple[str, ...]:
    # Cached: the same sentences are scored again every round, and the sim's CPU is charged
    # to the model's latency in the benchmarks.
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        word = word.strip("'-")
        if len(word) > 1 and word not in STOPWORDS:
            seen.setdefault(word, None)
    return tuple(seen)


def stem(word: str) -> str:
    # A five-letter prefix matches "inspired"/"inspiration" without a real stemmer.
    return word[:5]


def stems(text: str) -> set[str]:
    return {stem(w) for w in keywords(text)}


def overlap(text: str, terms: set[str]) -> int:
    return len(stems(text) & terms)


def sentences(text: str) -> list[str]:
    return list(_sentences(text))


@lru_cache(maxsize=1024)
def _sentences(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip().lstrip("#*->").strip()
        for piece in _SENTENCE_END.split(line):
            piece = " ".join(piece.split())
            if len(piece) >= 25:
                out.append(piece)
    return tuple(out)


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


def top_sentences(text: str, terms: set[str], k: int) -> list[str]:
    """The `k` sentences that overlap `terms` most, in the order they appear."""
    scored = [(overlap(s, terms), i, s) for i, s in enumerate(sentences(text))]
    best = sorted((x for x in scored if x[0] > 0), key=lambda x: (-x[0], x[1]))[:k]
    return [s for _, _, s in sorted(best, key=lambda x: x[1])]


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", CITATION.sub("", text).lower()).split())
