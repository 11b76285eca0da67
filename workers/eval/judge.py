"""Scoring a prediction: an LLM judge on its own endpoint, or exact / normalised matching.

The LLM judge fills a prompt template from `config/prompts/` (`judge_browsecomp.md`,
`judge_hle.md`, or a file of the user's) and reads back the released judges' fields:
`extracted_final_answer`, `reasoning`, `correct: yes|no`, `confidence`. The output is parsed
tolerantly (a JSON object, or `field: value` lines, with or without markdown around them); an
answer that cannot be parsed, or a failed call, is tried again up to `attempts` times.

Every verdict goes into the run's judge cache (`judgements.jsonl`), keyed by the judge (model and
prompt), question, correct answer and prediction, so a re-run judges nothing twice. A verdict the
judge could not give is not cached: the next run tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from pathlib import Path
from string import Template
from typing import Any, Protocol

from pydantic import BaseModel

from workers.errors import HeavyResearchError, JudgeError
from workers.eval.records import append_jsonl, read_jsonl
from workers.llm import OpenAIChatModel
from workers.settings import config_dir

log = logging.getLogger(__name__)

BUILTIN_PROMPTS = ("browsecomp", "hle")
_PLACEHOLDERS = ("question", "response", "correct_answer")


class Verdict(BaseModel):
    correct: bool
    judge: str
    extracted: str = ""
    reasoning: str = ""
    confidence: float | None = None
    simulated: bool = False
    error: str | None = None  # the judge gave no usable verdict (then `correct` is False)


class Scorer(Protocol):
    name: str  # part of the cache key: another model or prompt judges afresh

    async def score(self, question: str, answer: str, prediction: str) -> Verdict: ...


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Case, accents, punctuation, articles, thousands separators and spacing dropped."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"[^\w\s.]|(?<!\d)\.|\.(?!\d)", " ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


class ExactMatch:
    name = "exact"

    async def score(self, question: str, answer: str, prediction: str) -> Verdict:
        return Verdict(correct=prediction.strip() == answer.strip(), judge=self.name, extracted=prediction)


class NormalizedMatch:
    name = "normalized"

    async def score(self, question: str, answer: str, prediction: str) -> Verdict:
        return Verdict(
            correct=normalize(prediction) == normalize(answer), judge=self.name, extracted=prediction
        )


def load_judge_prompt(name_or_path: str) -> tuple[str, Template]:
    """(a short name for the cache key, the template) of a built-in prompt or a template file."""
    if name_or_path in BUILTIN_PROMPTS:
        path = config_dir() / "prompts" / f"judge_{name_or_path}.md"
    else:
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise JudgeError(
            f"judge prompt {name_or_path!r} not found: use {' or '.join(BUILTIN_PROMPTS)}, or a template file"
        )
    text = path.read_text(encoding="utf-8")
    if "${" not in text and all(f"{{{p}}}" in text for p in _PLACEHOLDERS):
        # A prompt copied from a Python `str.format` judge: its `{question}` fields become ours.
        text = text.replace("$", "$$")
        for name in _PLACEHOLDERS:
            text = text.replace(f"{{{name}}}", f"${{{name}}}")
    missing = [p for p in _PLACEHOLDERS if f"${{{p}}}" not in text and f"${p}" not in text]
    if missing:
        raise JudgeError(
            f"judge prompt {path} lacks the placeholder(s) {', '.join('${' + m + '}' for m in missing)}"
        )
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{path.stem}@{digest}", Template(text)


_FIELD = re.compile(
    r"^[\s>*_#`-]*\**(extracted_final_answer|reasoning|correct|confidence)\**\s*[:=]\s*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_YES = {"yes", "y", "true", "correct", "1"}
_NO = {"no", "n", "false", "incorrect", "wrong", "0"}


def _from_json(text: str) -> dict[str, Any] | None:
    for match in re.finditer(r"\{.*\}", text, re.DOTALL):
        candidate = re.sub(r",\s*([}\]])", r"\1", match.group(0))
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "correct" in value:
            return value
    return None


def parse_verdict(text: str, judge: str) -> Verdict | None:
    """The verdict in a judge's output, or None when it holds none."""
    fields: dict[str, Any] = _from_json(text) or {}
    if not fields:
        matches = list(_FIELD.finditer(text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            value = (match.group(2) + text[match.end() : end]).strip()
            fields.setdefault(match.group(1).lower(), value)
    raw = str(fields.get("correct", "")).strip().strip("*`'\".").lower()
    word = raw.split()[0].strip(".,;:") if raw.split() else ""
    if word not in _YES | _NO:
        return None
    confidence: float | None = None
    if number := re.search(r"\d+(?:\.\d+)?", str(fields.get("confidence", ""))):
        confidence = float(number.group(0))
    return Verdict(
        correct=word in _YES,
        judge=judge,
        extracted=str(fields.get("extracted_final_answer", "")).strip(),
        reasoning=str(fields.get("reasoning", "")).strip(),
        confidence=confidence,
    )


class LLMJudge:
    def __init__(
        self,
        model: OpenAIChatModel,
        model_id: str,
        prompt: str,
        *,
        attempts: int,
        max_tokens: int,
        simulated: bool,
    ) -> None:
        self.model = model
        prompt_name, self.template = load_judge_prompt(prompt)
        self.name = f"llm:{model_id}:{prompt_name}"
        self.attempts = attempts
        self.max_tokens = max_tokens
        self.simulated = simulated

    async def score(self, question: str, answer: str, prediction: str) -> Verdict:
        prompt = self.template.safe_substitute(question=question, response=prediction, correct_answer=answer)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                result = await self.model.chat(
                    "research",
                    [{"role": "user", "content": prompt}],
                    temperature=0.0,
                    max_tokens=self.max_tokens,
                )
            except HeavyResearchError as exc:
                problem = f"judge call failed: {exc}"
                log.warning("attempt %d/%d: %s", attempt, self.attempts, problem)
                continue
            verdict = parse_verdict(result.content, self.name)
            if verdict is not None:
                verdict.simulated = self.simulated
                return verdict
            problem = f"no 'correct: yes|no' in the judge's output: {result.content[:200]!r}"
            log.warning("attempt %d/%d: %s", attempt, self.attempts, problem)
        return Verdict(correct=False, judge=self.name, simulated=self.simulated, error=problem)


def cache_key(judge: str, question: str, answer: str, prediction: str) -> str:
    body = json.dumps([judge, question, answer, prediction], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


class JudgeCache:
    """`judgements.jsonl`: {key, verdict} lines, loaded once, appended as verdicts arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.verdicts: dict[str, Verdict] = {}
        for _, value in read_jsonl(path):
            try:
                self.verdicts[str(value["key"])] = Verdict.model_validate(value["verdict"])
            except (KeyError, ValueError):
                continue

    def get(self, key: str) -> Verdict | None:
        return self.verdicts.get(key)

    def put(self, key: str, verdict: Verdict) -> None:
        if verdict.error is not None:
            return
        self.verdicts[key] = verdict
        append_jsonl(self.path, {"key": key, "verdict": verdict.model_dump(mode="json")})
