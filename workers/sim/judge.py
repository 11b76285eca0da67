"""The simulated model's judge role (SIMULATION): a deterministic grader for `heavyresearch eval`.

It reads the `## Question`, `## Response` and `## Correct answer` sections of the judge prompt
templates (`config/prompts/judge_*.md`) and says `correct: yes` when the normalised correct
answer appears, word for word, inside the normalised response. That is a containment rule, not
understanding: it exists so the harness runs offline end to end, and it says so in its reasoning.
"""

from __future__ import annotations

from workers.sim.text import CITATION, Reply, norm, shorten

# "How to judge" only ends the response: the instructions themselves are not read.
JUDGE_SECTIONS = ("Question", "Response", "How to judge", "Correct answer")


def judge(question: str, response: str, correct_answer: str) -> Reply:
    """The verdict in the released judges' fields, one `field: value` line each."""
    gold, said = norm(correct_answer), norm(response)
    correct = bool(gold) and f" {gold} " in f" {said} "
    extracted = shorten(" ".join(CITATION.sub("", response).split()), 300) or "None"
    why = "contains" if correct else "does not contain"
    reasoning = (
        f"Simulated judge (heavyresearch-sim), not a language model: the normalised response {why} "
        f"the normalised correct answer {gold!r}."
    )
    content = "\n".join(
        [
            f"extracted_final_answer: {extracted}",
            f"reasoning: {reasoning}",
            f"correct: {'yes' if correct else 'no'}",
            "confidence: 100",
        ]
    )
    return Reply("judge", content)
