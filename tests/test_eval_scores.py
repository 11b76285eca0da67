"""The evaluation's pure parts: Pass@k arithmetic on hand-made rollouts, the scorers, the judge's
tolerant parser and cache, and dataset reading (bad lines named, the run goes on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.errors import DatasetError, JudgeError
from workers.eval.dataset import load_dataset
from workers.eval.judge import (
    ExactMatch,
    JudgeCache,
    NormalizedMatch,
    Verdict,
    load_judge_prompt,
    normalize,
    parse_verdict,
)
from workers.eval.records import RolloutRecord
from workers.eval.scores import score_config


def _record(item: str, rollout: int, *, error: str | None = None, tokens: int = 100) -> RolloutRecord:
    return RolloutRecord(
        question=f"q {item}",
        answer="a",
        prediction="p",
        termination="error" if error else "answer",
        id=item,
        rollout=rollout,
        config="heavy-n4-r8",
        mode="heavy",
        agents=4,
        max_rounds=8,
        usage={"total_tokens": tokens},
        rounds=10,
        tool_calls=6,
        forced_answers=1 if item == "q1" else 0,
        error=error,
    )


def _scored(
    table: dict[int, dict[str, bool | None]],
) -> dict[int, dict[str, tuple[RolloutRecord, Verdict | None]]]:
    """rollout -> item -> True/False (judged), None (job failed)."""
    out: dict[int, dict[str, tuple[RolloutRecord, Verdict | None]]] = {}
    for rollout, items in table.items():
        out[rollout] = {}
        for item, right in items.items():
            record = _record(item, rollout, error="boom" if right is None else None)
            verdict = None if right is None else Verdict(correct=right, judge="t")
            out[rollout][item] = (record, verdict)
    return out


def test_pass_at_k_on_hand_made_rollouts() -> None:
    # 4 questions x 3 rollouts. Rollout accuracies: 2/4, 1/4, 3/4.
    # Questions right in some rollout: q1, q2, q3 (q4 never) -> Pass@3 = 3/4.
    table: dict[int, dict[str, bool | None]] = {
        1: {"q1": True, "q2": True, "q3": False, "q4": False},
        2: {"q1": False, "q2": None, "q3": True, "q4": False},
        3: {"q1": True, "q2": True, "q3": True, "q4": False},
    }
    scores = score_config("heavy-n4-r8", _scored(table))
    assert scores.questions == 4
    assert scores.rollouts == 3
    assert scores.per_rollout == {1: 0.5, 2: 0.25, 3: 0.75}
    assert scores.avg_pass_at_k == pytest.approx(0.5)
    assert scores.best_pass_at_1 == 0.75
    assert scores.pass_at_k == 0.75
    assert scores.errors == 1
    assert scores.records == 12
    assert scores.forced_share == pytest.approx(3 / 12)
    assert scores.tokens_per_question == 100
    assert (scores.mode, scores.agents, scores.max_rounds) == ("heavy", 4, 8)


def test_a_missing_rollout_or_record_counts_as_wrong() -> None:
    # Rollout 3 never ran and q2 is missing from rollout 2: both count as wrong, not as absent.
    table: dict[int, dict[str, bool | None]] = {1: {"q1": True, "q2": True}, 2: {"q1": True}}
    scores = score_config("c", _scored(table), rollouts=3)
    assert scores.per_rollout == {1: 1.0, 2: 0.5, 3: 0.0}
    assert scores.avg_pass_at_k == pytest.approx(0.5)
    assert scores.best_pass_at_1 == 1.0
    assert scores.pass_at_k == 1.0


def test_an_unjudged_prediction_is_counted_and_wrong() -> None:
    scored = _scored({1: {"q1": True, "q2": True}})
    record, _ = scored[1]["q2"]
    scored[1]["q2"] = (record, None)
    scores = score_config("c", scored)
    assert scores.unjudged == 1
    assert scores.avg_pass_at_k == 0.5


@pytest.mark.anyio
async def test_exact_and_normalized_match() -> None:
    exact, loose = ExactMatch(), NormalizedMatch()
    assert (await exact.score("q", "Paris", " Paris ")).correct
    assert not (await exact.score("q", "Paris", "paris")).correct
    assert (await loose.score("q", "The Great Wall", "great wall.")).correct
    assert (await loose.score("q", "7,088", "7088")).correct
    assert (await loose.score("q", "Théâtre", "theatre")).correct
    assert (await loose.score("q", "3.14", "3.14")).correct
    assert not (await loose.score("q", "3.14", "314")).correct
    assert normalize("An apple, a day!") == "apple day"


@pytest.mark.parametrize(
    ("text", "correct", "confidence"),
    [
        ("extracted_final_answer: Paris\nreasoning: same city\ncorrect: yes\nconfidence: 90", True, 90.0),
        (
            "**extracted_final_answer**: Rome\n**reasoning**: differs\n**correct**: No\n**confidence**: 80%",
            False,
            80.0,
        ),
        (
            '```json\n{"extracted_final_answer": "x", "reasoning": "r", "correct": "yes",'
            ' "confidence": 100,}\n```',
            True,
            100.0,
        ),
        ("Sure! Here is my verdict.\n\ncorrect: YES.\n", True, None),
        ('{"correct": true}', True, None),
    ],
)
def test_judge_output_is_parsed_tolerantly(text: str, correct: bool, confidence: float | None) -> None:
    verdict = parse_verdict(text, "j")
    assert verdict is not None
    assert verdict.correct is correct
    assert verdict.confidence == confidence


def test_judge_output_without_a_verdict_is_none() -> None:
    assert parse_verdict("I cannot decide.", "j") is None
    assert parse_verdict("correct: maybe", "j") is None


def test_judge_cache_keeps_verdicts_across_instances_but_not_errors(tmp_path: Path) -> None:
    path = tmp_path / "judgements.jsonl"
    cache = JudgeCache(path)
    cache.put("k1", Verdict(correct=True, judge="j"))
    cache.put("k2", Verdict(correct=False, judge="j", error="no verdict"))
    with path.open("a") as fh:
        fh.write('{"key": "torn')  # an interrupted write
    again = JudgeCache(path)
    assert again.get("k1") == Verdict(correct=True, judge="j")
    assert again.get("k2") is None


def test_judge_prompts_are_templates_and_a_custom_one_needs_the_placeholders(tmp_path: Path) -> None:
    for name in ("browsecomp", "hle"):
        key, template = load_judge_prompt(name)
        text = template.substitute(question="Q?", response="R.", correct_answer="A")
        assert "Q?" in text and "R." in text and "A" in text
        assert key.startswith(f"judge_{name}@")
    mine = tmp_path / "mine.md"
    mine.write_text("[question]: ${question}\n[response]: ${response}\n")
    with pytest.raises(JudgeError, match="correct_answer"):
        load_judge_prompt(str(mine))
    with pytest.raises(JudgeError, match="not found"):
        load_judge_prompt(str(tmp_path / "nope.md"))
    # A prompt in the `str.format` style of the released judges is taken as it is.
    released = tmp_path / "released.txt"
    released.write_text(
        "[question]: {question}\n[response]: {response}\n[correct_answer]: {correct_answer} 5$"
    )
    _, template = load_judge_prompt(str(released))
    assert template.substitute(question="Q", response="R", correct_answer="A") == (
        "[question]: Q\n[response]: R\n[correct_answer]: A 5$"
    )


def test_dataset_jsonl_with_messages_fallback_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"question": "Q1?", "answer": "A1"}),
        json.dumps(
            {
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "User: Q2?"}],
                "answer": "A2",
            }
        ),
        "{not json",
        json.dumps({"question": "Q4?"}),
        "",
        json.dumps({"question": "Q1?", "answer": "again"}),
        json.dumps({"question": "Q7?", "answer": 42, "id": "seven"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    dataset = load_dataset(path)
    assert [(i.question, i.answer) for i in dataset.items] == [("Q1?", "A1"), ("Q2?", "A2"), ("Q7?", "42")]
    assert dataset.items[2].id == "seven"
    assert [(b.line, b.reason.split(" (")[0]) for b in dataset.bad] == [
        (3, "not JSON"),
        (4, "no 'answer'"),
        (6, "the same question as line 1"),
    ]
    assert str(dataset.bad[0]).startswith("line 3: not JSON")


def test_dataset_json_list_and_csv_with_a_file_column(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("hello")
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps([{"question": "Q?", "answer": "A", "file": "doc.txt"}, "oops"]))
    dataset = load_dataset(json_path)
    assert dataset.items[0].files == (str(tmp_path / "doc.txt"),)
    assert [b.line for b in dataset.bad] == [2]

    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        'question,answer,files\n"A question, with a comma?",yes,doc.txt\nQ2?,no,missing.pdf\nQ3?,,\n'
    )
    dataset = load_dataset(csv_path)
    assert [(i.question, i.answer, i.files) for i in dataset.items] == [
        ("A question, with a comma?", "yes", (str(tmp_path / "doc.txt"),))
    ]
    assert [(b.line, b.reason.split(" (")[0]) for b in dataset.bad] == [
        (3, "attached file 'missing.pdf' not found"),
        (4, "no 'answer'"),
    ]


def test_dataset_errors_that_stop_before_running(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "none.jsonl")
    bad = tmp_path / "d.txt"
    bad.write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(bad)
    header = tmp_path / "d.csv"
    header.write_text("q,a\n1,2\n")
    with pytest.raises(DatasetError, match="lacks answer, question"):
        load_dataset(header)
