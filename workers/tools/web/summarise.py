"""Goal-directed extraction: a visited page summarised against the call's goal by the
summariser model, as evidence + summary (the shape of the Tongyi visit tool).

The prompt is the template `config/prompts/visit_summary.md` (`${goal}`, `${page}`, `${url}`,
`${title}`), so users can swap in the one their summariser was trained on. The page is trimmed
to `page_tokens` (about four characters a token) first. An empty or unparseable reply is asked
again up to `retries` times; when none is usable, or the summariser is unreachable, the visit
degrades to the trimmed page text itself rather than failing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from workers.errors import LLMConfigError, RetryableError
from workers.llm.types import ChatModel
from workers.settings import config_dir
from workers.tools.render import one_line, trim_text

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Summary:
    evidence: str
    summary: str
    # True when no usable reply came: `evidence` then holds the trimmed page text.
    degraded: bool = False


def load_template(folder: Path | None = None) -> Template:
    path = (folder or config_dir() / "prompts") / "visit_summary.md"
    return Template(path.read_text(encoding="utf-8"))


def parse_reply(content: str) -> tuple[str, str] | None:
    """(evidence, summary) from a reply holding a JSON object with those keys, fenced or among
    other text; None when there is none or both are empty."""
    text = _THINK.sub("", content)
    start = text.find("{")
    while start != -1:
        try:
            value: Any = _DECODER.raw_decode(text, start)[0]
        except ValueError:
            value = None
        if isinstance(value, dict) and ("evidence" in value or "summary" in value):
            evidence, summary = _field(value.get("evidence")), _field(value.get("summary"))
            return (evidence, summary) if evidence or summary else None
        start = text.find("{", start + 1)
    return None


def _field(value: Any) -> str:
    if isinstance(value, list):
        value = "\n".join(str(v) for v in value if v)
    return value.strip() if isinstance(value, str) else ""


class PageSummariser:
    def __init__(
        self,
        model: ChatModel,
        template: Template,
        *,
        page_tokens: int,
        max_tokens: int,
        retries: int,
    ) -> None:
        self._model = model
        self._template = template
        # Part of the summary cache key: a new prompt must not be served old summaries.
        self.fingerprint = hashlib.sha256(template.template.encode()).hexdigest()[:16]
        self._page_chars = page_tokens * CHARS_PER_TOKEN
        self._max_tokens = max_tokens
        self._retries = retries

    async def summarise(self, *, goal: str, url: str, title: str, text: str, fallback_chars: int) -> Summary:
        # Goal and title on one line each: the prompt's `## ` sections must stay its own.
        prompt = self._template.safe_substitute(
            goal=one_line(goal, 1000),
            url=url,
            title=one_line(title, 300),
            page=trim_text(text, self._page_chars),
        )
        problem = ""
        for attempt in range(self._retries + 1):
            try:
                result = await self._model.chat(
                    "summariser",
                    [{"role": "user", "content": prompt}],
                    # Extraction wants the most likely reading, not variety.
                    temperature=0.0 if attempt == 0 else 0.3,
                    max_tokens=self._max_tokens,
                )
            except (RetryableError, LLMConfigError) as exc:
                problem = f"summariser unavailable: {exc}"
                break
            parsed = parse_reply(result.content)
            if parsed is not None:
                return Summary(evidence=parsed[0], summary=parsed[1])
            problem = "empty reply" if not result.content.strip() else "reply without the JSON fields"
            log.info("visit summary of %s attempt %d unusable (%s)", url, attempt + 1, problem)
        log.warning("visit summary of %s failed (%s); returning the page text instead", url, problem)
        return Summary(evidence=trim_text(text, fallback_chars), summary="", degraded=True)
