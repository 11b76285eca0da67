"""How well a passage answers the question, for the simulated model (SIMULATION, not a model).

A passage scores by the question's content words it shares, and more when it names the entity
the question asks about (a capitalised name such as "War and Peace", else the question's last
content word), when it answers a superlative with one ("the highest mountain" answers "the
tallest mountain"; "the larger bodies" does not), and when it holds the kind of thing asked for:
a person's name for "who", a year for "when", a number for "how many". A passage *matches* only
if it names the entity, answers a superlative with one (about the same noun) and shares at least
half of the content words. The policy answers only from a matching finding, so when nothing it
read matches it says it found nothing instead of stating something unrelated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from workers.sim.text import CITATION, keywords, norm, sentences, stem, stems

Kind = Literal["who", "when", "number", "where", "other"]

_WORD = re.compile(r"[^\W_][\w'’-]*")
# Small words that may sit inside a name ("War and Peace", "Leonardo da Vinci").
_NAME_GLUE = frozenset({"and", "of", "the", "de", "da", "von", "van", "del", "la", "le", "y"})
_QUESTION_WORDS = frozenset(
    {"who", "whom", "whose", "when", "where", "which", "what", "how", "in", "on", "at"}
)
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NOT_SUPERLATIVE = frozenset({"interest", "forest", "west", "east", "request", "test", "honest", "contest"})


@dataclass(frozen=True)
class Question:
    terms: frozenset[str]  # stems of the content words
    entity: str  # normalised phrase ("war and peace"), may be ""
    entity_stems: frozenset[str]
    superlatives: frozenset[str]
    superlative_heads: frozenset[str]  # stems of what the superlatives qualify
    kind: Kind
    words: frozenset[str]  # lowercased words of the question, for "a name it does not use"


@lru_cache(maxsize=1024)
def parse_question(text: str) -> Question:
    words = _WORD.findall(text)
    runs: list[list[str]] = []
    current: list[str] = []
    for index, word in enumerate(words):
        first = index == 0
        capital = word[:1].isupper() and not (first and word.lower() in _QUESTION_WORDS)
        if capital or (current and word.lower() in _NAME_GLUE):
            current.append(word)
        else:
            if current:
                runs.append(current)
            current = []
    if current:
        runs.append(current)
    names = [run[: max(i for i, w in enumerate(run) if w[:1].isupper()) + 1] for run in runs]
    names = [name for name in names if name]
    content = keywords(text)
    if names:
        entity_words = max(names, key=len)
        entity = norm(" ".join(entity_words))
    else:
        entity = content[-1] if content else ""
    lowered = text.lower()
    kind: Kind = "other"
    if re.match(r"\s*(who|whom|whose)\b", lowered):
        kind = "who"
    elif re.match(r"\s*when\b", lowered) or re.search(r"\b(what|which|in which) year\b", lowered):
        kind = "when"
    elif re.search(r"\bhow (many|much|long|old|tall|far)\b", lowered):
        kind = "number"
    elif re.match(r"\s*where\b", lowered) or re.search(r"\bin which (city|country)\b", lowered):
        kind = "where"
    superlatives = _superlatives(content)
    # What a superlative is about ("largest planet"): a passage must name it too.
    heads = frozenset(stem(content[i + 1]) for i, w in enumerate(content[:-1]) if w in superlatives)
    return Question(
        terms=frozenset(stems(text)),
        entity=entity,
        entity_stems=frozenset(stems(entity)),
        superlatives=superlatives,
        superlative_heads=heads,
        kind=kind,
        words=frozenset(w.lower() for w in words),
    )


def _has_new_name(text: str, question: Question) -> bool:
    """Whether `text` names someone or something the question does not: a capitalised word
    past the sentence's first ("... attributed to Homer")."""
    words = _WORD.findall(CITATION.sub("", text))[1:]
    return any(
        len(w) > 2
        and w[:1].isupper()
        and w.lower() not in question.words
        and stem(w.lower()) not in question.terms
        for w in words
    )


def _superlatives(words: list[str]) -> frozenset[str]:
    return frozenset(w for w in words if w.endswith("est") and len(w) > 5 and w not in _NOT_SUPERLATIVE)


# Superlatives that answer one another ("the highest mountain" answers "the tallest mountain").
_SAME_SUPERLATIVE = (
    frozenset({"largest", "biggest", "greatest"}),
    frozenset({"tallest", "highest"}),
    frozenset({"smallest", "tiniest"}),
)


def _has_superlatives(text: str, wanted: frozenset[str]) -> bool:
    """Whether `text` holds each wanted superlative, or one that means the same; "third-largest"
    and "larger" do not count."""
    words = set(keywords(text))
    for word in wanted:
        same = next((group for group in _SAME_SUPERLATIVE if word in group), frozenset({word}))
        if not same & words:
            return False
    return True


def _shares_enough(shared: int, question: Question) -> bool:
    return shared >= max(1, -(-len(question.terms) // 2))


def score(text: str, question_text: str) -> float:
    """How well `text` answers the question; higher is better, 0 when it shares nothing."""
    question = parse_question(question_text)
    passage_stems = stems(text)
    shared = len(passage_stems & question.terms)
    if shared == 0:
        return 0.0
    value = float(shared)
    normalised = norm(text)
    if question.entity and f" {question.entity} " in f" {normalised} ":
        value += 3
        if normalised.removeprefix("the ").startswith(question.entity):
            value += 1  # the passage is about the entity: it is its subject
    elif question.entity_stems and question.entity_stems <= passage_stems:
        value += 1
    if question.superlatives:
        value += 1 if _has_superlatives(text, question.superlatives) else -2
    if (question.kind == "who" and _has_new_name(text, question)) or (
        question.kind == "when" and _YEAR.search(text)
    ):
        value += 1.5
    elif question.kind == "number" and _NUMBER.search(CITATION.sub("", text)):
        value += 1
    elif question.kind == "where" and _has_new_name(text, question):
        value += 0.5
    return value


def matches(text: str, question_text: str) -> bool:
    """Whether `text` is about what the question asks, enough to answer from it."""
    question = parse_question(question_text)
    passage_stems = stems(text)
    if not _shares_enough(len(passage_stems & question.terms), question):
        return False
    normalised = f" {norm(text)} "
    # A one-word entity may be inflected ("penicillins"); a name must stand as written.
    inflected = len(question.entity_stems) == 1 and question.entity_stems <= passage_stems
    if question.entity and f" {question.entity} " not in normalised and not inflected:
        return False
    if not _has_superlatives(text, question.superlatives):
        return False
    return question.superlative_heads <= passage_stems


def rank(texts: list[str], question_text: str) -> list[int]:
    """Indexes of `texts`, best answer first; ties keep their order."""
    return sorted(range(len(texts)), key=lambda i: (-score(texts[i], question_text), i))


def best_sentences(text: str, question_text: str, k: int, title: str = "") -> list[str]:
    """The `k` sentences of `text` that answer the question best, in the order they appear;
    each judged with a leading pronoun resolved to the page's `title`, as it will be kept."""
    found = [resolve_pronoun(s, title) for s in sentences(text)]
    scored = [(score(s, question_text), i) for i, s in enumerate(found)]
    best = sorted((x for x in scored if x[0] > 0), key=lambda x: (-x[0], x[1]))[:k]
    return [found[i] for _, i in sorted(best, key=lambda x: x[1])]


_PRONOUN = re.compile(r"^(He|She|It|His|Her|Its)\b")


def resolve_pronoun(sentence: str, title: str) -> str:
    """A page's sentence with a leading pronoun replaced by the page's subject ("He shared…" on
    "Alexander Fleming" becomes "Alexander Fleming shared…"), so a finding stands on its own."""
    subject = re.sub(r"\s*\([^)]*\)$", "", title).strip()
    match = _PRONOUN.match(sentence)
    if match is None or not subject:
        return sentence
    possessive = match.group(1) in ("His", "Her", "Its")
    return f"{subject}'s" + sentence[match.end() :] if possessive else subject + sentence[match.end() :]


__all__ = ["Question", "best_sentences", "matches", "parse_question", "rank", "resolve_pronoun", "score"]
