"""The non-answer classifier and workspace trimming: pure functions every agent loop shares."""

from __future__ import annotations

import pytest

from workers.agent.fit import trim_reports, trim_workspace
from workers.agent.iter_research import answer_from_report
from workers.agent.outcome import non_answer_reason, prompt_texts
from workers.agent.prompts import PromptSet

TEXTS = prompt_texts(PromptSet.load())


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (None, "no answer given"),
        ("  ", "no answer given"),
        ("...", "no answer given"),
        ("N/A", "a placeholder, not an answer"),
        ("The final answer", "a placeholder, not an answer"),
        ("What is the capital of France?", "the question repeated"),
        ("your final answer to the question", "a copy of the prompt's own text"),
        (
            "Weigh where they agree, how strong and well-sourced their evidence is",
            "a copy of the prompt's own text",
        ),
        ("Paris", None),
        ("Paris [S1], the capital since 508 AD", None),
        # A short answer that happens to be a prompt word is still an answer.
        ("search", None),
    ],
)
def test_non_answers_are_recognised(answer: str | None, verdict: str | None) -> None:
    assert non_answer_reason(answer, question="What is the capital of France?", prompt_text=TEXTS) == verdict


def test_a_report_with_nothing_in_it_gives_no_answer_not_a_placeholder() -> None:
    assert answer_from_report("") is None
    assert answer_from_report("Findings:\n-\n") is None
    assert answer_from_report("Findings:\n- Paris is the capital [S1]") == "Paris is the capital [S1]"


def test_trimming_cuts_the_observation_first_then_the_oldest_report() -> None:
    report = "\n".join(f"line {i}: finding {i}" for i in range(50))
    observation = "x" * 3000
    light = trim_workspace(report, observation, 1000)
    assert light.cut_report == 0 and light.cut_observation > 1000
    assert light.report == report and "characters of this observation were cut" in light.observation

    heavy = trim_workspace(report, observation, 3500)
    assert heavy.cut_observation == 2800 and heavy.cut_report > 0
    assert "line 0:" not in heavy.report and "line 49: finding 49" in heavy.report  # newest kept
    assert heavy.report.startswith("[Trimmed to fit the model's context")
    assert len(heavy.report) + len(heavy.observation) < len(report) + len(observation) - 3500


def test_synthesis_reports_share_the_cut() -> None:
    reports = ["a" * 2000, "b" * 1000]
    out = trim_reports(reports, 900)
    assert all(o.startswith("[Trimmed") for o in out)
    assert len(out[0]) < 2000 and len(out[1]) < 1000
    assert trim_reports(reports, 0) == reports
