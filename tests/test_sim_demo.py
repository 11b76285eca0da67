"""The demo answers sensibly: on the offline Wikipedia corpus, the simulated model's agents read
the passage that answers the question, its synthesis picks the best-supported answer, and a
question the corpus knows nothing about gets "found nothing", not an unrelated statement.

It is still a SIMULATION (a deterministic policy, no language model); these checks are about
the demo a newcomer sees on the embedded defaults, and they print the score.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine_harness import harness
from workers.models import JobStatus
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

pytestmark = pytest.mark.anyio

# Questions whose answer is in the corpus's article summaries, and a word the answer must hold.
QUESTIONS = [
    ("Who wrote Pride and Prejudice?", "austen"),
    ("Who discovered penicillin?", "fleming"),
    ("Who painted the Mona Lisa?", "leonardo"),
    ("Who developed the theory of general relativity?", "einstein"),
    ("What is the capital of France?", "paris"),
    ("Who composed The Magic Flute?", "mozart"),
    ("Who wrote Hamlet?", "shakespeare"),
    ("Who was the first person to walk on the Moon?", "armstrong"),
    ("Who wrote War and Peace?", "tolstoy"),
    ("Who is credited with inventing the telephone?", "bell"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("Who wrote One Hundred Years of Solitude?", "márquez"),
    ("In which city is the Eiffel Tower?", "paris"),
    ("Who painted The Starry Night?", "gogh"),
    ("Who wrote the Odyssey?", "homer"),
    ("Who discovered the law of universal gravitation?", "newton"),
    ("Who wrote Don Quixote?", "cervantes"),
    # Missed: the search never returns Darwin's article, and a passage on Ronald Fisher matches.
    ("Who proposed the theory of evolution by natural selection?", "darwin"),
]
# The corpus has nothing on these: the honest answer is that nothing was found.
UNKNOWN = ["Who painted the Zorblax Tapestry of Quenmoor?", "What is the largest planet in the Solar System?"]


async def answer(h: object, question: str) -> tuple[str, bool]:
    from tests.engine_harness import Harness

    assert isinstance(h, Harness)
    job = await h.submit(question, agents=4, max_rounds=8)
    await h.run_to_end(job.id, timeout=120)
    record = await h.backend.get_job(job.id)
    assert record is not None and record.status == JobStatus.succeeded, record
    assert record.result is not None
    return record.result.answer, record.result.simulated


async def test_the_demo_answers_questions_whose_answers_are_in_the_corpus(wiki_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=3)) as sim:
        async with harness(wiki_corpus, sim.base_url) as h:
            answers = [(q, expected, await answer(h, q)) for q, expected in QUESTIONS]
            again = await answer(h, QUESTIONS[0][0])
    right = [q for q, expected, (text, _) in answers if expected in text.lower()]
    print(f"\nsimulated demo: {len(right)}/{len(QUESTIONS)} answered correctly")
    for q, _, (text, _) in answers:
        print(f"  {'ok' if q in right else '--'} {q} -> {text[:100]}")
    assert len(right) >= len(QUESTIONS) - 2, [q for q, *_ in answers if q not in right]
    assert all(simulated for *_, (_, simulated) in answers), "every demo answer is labelled simulated"
    assert again == answers[0][2], "the simulation is deterministic"


async def test_a_question_the_corpus_cannot_answer_gets_found_nothing(wiki_corpus: Path) -> None:
    with SimServer(SimConfig(min_rounds=3)) as sim:
        async with harness(wiki_corpus, sim.base_url) as h:
            for question in UNKNOWN:
                text, _ = await answer(h, question)
                assert text.lower().startswith("no answer"), (question, text)


def test_synthesis_prefers_the_best_supported_answer_over_the_majority() -> None:
    from workers.sim.synthesis import AgentReport, synthesize

    question = "Who wrote War and Peace?"
    unrelated = "The Thirty Years' War ended with a peace treaty in 1648. [S1]"
    agents = [
        AgentReport(0, unrelated, "Findings:\n- " + unrelated),
        AgentReport(1, unrelated, "Findings:\n- " + unrelated),
        AgentReport(
            2,
            "War and Peace is an epic novel by the Russian author Leo Tolstoy. [S2]",
            "Findings:\n- War and Peace is a novel by Leo Tolstoy. [S2]\n- Tolstoy wrote it in 1869. [S3]",
        ),
        AgentReport(3, "No sourced answer: nothing the research read is about this question.", ""),
    ]
    reply = synthesize(question, agents)
    tolstoy = "War and Peace is an epic novel by the Russian author Leo Tolstoy. [S2]"
    assert f"<answer>{tolstoy}</answer>" in reply.content

    nothing = "No sourced answer: nothing the research read is about this question."
    found_nothing = [AgentReport(i, nothing, "") for i in range(3)]
    one = AgentReport(3, "War and Peace is a novel by Leo Tolstoy. [S2]", "")
    assert "Leo Tolstoy" in synthesize(question, [*found_nothing, one]).content


async def test_a_finding_is_judged_as_it_is_kept_with_its_pronoun_resolved(mini_corpus: Path) -> None:
    # "Its capital … is Merrowgate" on the Valdoria page answers the question once "Its" is
    # read as "Valdoria's"; the page's opening sentence only names the country.
    with SimServer(SimConfig(min_rounds=3)) as sim:
        async with harness(mini_corpus, sim.base_url) as h:
            text, _ = await answer(h, "What is the capital of Valdoria?")
    assert "Merrowgate" in text
