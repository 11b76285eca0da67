"""Is an agent's answer a real answer? One classifier that every agent loop and synthesis share.

Small models end rounds without `<answer>`, answer with nothing, or copy text from the prompt
they were given (a template's instructions, a placeholder, the question itself). Reporting those
as answers made jobs "succeed" with nothing in them, so an answer is checked before it counts:
`non_answer_reason` says why a text is not an answer, or None when it is one.

    answer                                          verdict
    None, empty, only punctuation                   "no answer given"
    a known placeholder ("N/A", "unknown", "…")     "a placeholder, not an answer"
    the question repeated                           "the question repeated"
    text lifted from a prompt template              "a copy of the prompt's own text"
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from string import Template

from workers.agent.prompts import PromptSet
from workers.models import AgentStatus, JobRecord, JobStatus

_WORDS = re.compile(r"[^\W_]+")
# Answers that say nothing, whatever the question. Compared after normalising (lower case, words).
_PLACEHOLDERS = frozenset(
    {
        "",
        "n a",
        "na",
        "none",
        "null",
        "unknown",
        "no answer",
        "tbd",
        "todo",
        "answer",
        "final answer",
        "the final answer",
        "your answer",
        "your answer here",
        "the answer",
        "insert answer here",
        "i don t know",
        "i do not know",
    }
)
# Fewer words than this is too short to call a copy of template text (a one-word answer such as
# "Paris" may well appear in a prompt by chance).
_MIN_COPY_WORDS = 3


def normalise(text: str) -> str:
    """Lower case words separated by single spaces: what the comparisons here look at."""
    return " ".join(_WORDS.findall(text.lower()))


# The prompts' and the question's words, asked for on every answer: a job has only a few.
_normalised_static = functools.lru_cache(maxsize=128)(normalise)


def template_text(template: Template) -> str:
    """A template's own words, with its `${placeholders}` cut out (they are filled per call)."""
    return template.pattern.sub(" ", template.template)


def prompt_texts(prompts: PromptSet) -> list[str]:
    """The static text of every prompt a research or synthesis model is shown."""
    return [
        template_text(t)
        for t in (
            prompts.research_system,
            prompts.research_round,
            prompts.research_final,
            prompts.synthesis_system,
            prompts.synthesis_user,
            prompts.synthesis_agent,
        )
    ]


def non_answer_reason(
    answer: str | None, *, question: str = "", prompt_text: Iterable[str] = ()
) -> str | None:
    """Why `answer` is not a real answer, or None when it is one.

    `prompt_text` is the static text the model was shown (see `prompt_texts`); `question` the
    job's question. Both are optional so a caller without them still gets the basic checks.
    """
    words = normalise(answer or "")
    if not words:
        return "no answer given"
    if words in _PLACEHOLDERS:
        return "a placeholder, not an answer"
    if question and words == _normalised_static(question):
        return "the question repeated"
    if len(words.split()) >= _MIN_COPY_WORDS:
        for text in prompt_text:
            if words in _normalised_static(text):
                return "a copy of the prompt's own text"
    return None


def is_answer(answer: str | None, *, question: str = "", prompt_text: Iterable[str] = ()) -> bool:
    return non_answer_reason(answer, question=question, prompt_text=prompt_text) is None


def job_outcome(record: JobRecord) -> str | None:
    """What a client is told a job came to: "answered" (succeeded with an answer), "no_answer"
    (failed because no agent found a real answer), or None (failed otherwise, cancelled, running).
    A job where no agent answered ends `failed`, never `succeeded` with a non-answer."""
    if record.status == JobStatus.succeeded:
        return "answered"
    statuses = {a.status for a in record.agents}
    if (
        record.status == JobStatus.failed
        and AgentStatus.no_answer in statuses
        and AgentStatus.finished not in statuses
    ):
        return "no_answer"
    return None
