"""The simulated model's tool choice (SIMULATION): which tool it reaches for, only when offered,
and what it makes of the observations."""

from __future__ import annotations

import pytest

from workers.agent.parser import parse_output
from workers.sim.policy import Workspace, research_turn
from workers.sim.tools import BASIC_TOOLS, arithmetic, offered_tools, python_result, uploaded_files

ALL = frozenset({"search", "visit", "google_scholar", "PythonInterpreter", "parse_file"})


def call_of(ws: Workspace, tools: frozenset[str] = ALL) -> tuple[str, dict[str, object], str]:
    reply = research_turn(ws, seed=0, min_rounds=3, tools=tools)
    parsed = parse_output(reply.content, reply.reasoning)
    assert parsed.error is None and parsed.tool_call is not None, reply.content
    report = parsed.report or ""
    return parsed.tool_call.name, parsed.tool_call.arguments, report


def test_the_offered_tools_are_read_from_the_system_prompt() -> None:
    system = "You are…\n\nTools:\n- search(query: string[]) — web\n- PythonInterpreter — run code: <code>"
    assert offered_tools([{"role": "system", "content": system}, {"role": "user", "content": "x"}]) == {
        "search",
        "PythonInterpreter",
    }
    assert offered_tools([{"role": "user", "content": "x"}]) == BASIC_TOOLS


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is 17 * 23?", "17 * 23"),
        ("Compute (2 + 3) ^ 4, please", "(2 + 3) ** 4"),
        ("What happened in 1990-2000?", None),
        ("Python 3.11 or 3.12?", None),
        ("Who won in 1802?", None),
    ],
)
def test_arithmetic_in_the_question(question: str, expected: str | None) -> None:
    assert arithmetic(question) == expected


def test_uploads_python_and_scholar_in_that_order_then_search() -> None:
    question = (
        "(Uploaded 1 file: ['ledger.csv'])\n\nWhich published papers cite the ledger, and what is 6 * 7?"
    )
    assert uploaded_files(question) == ["ledger.csv"]
    name, args, report = call_of(Workspace(question=question))
    assert (name, args) == ("parse_file", {"files": ["ledger.csv"]})

    observation = "[S1] ledger.csv (CSV table, 40 bytes)\nURL: upload://file_1/ledger.csv\n"
    observation += "The ledger lists 4217 entries."
    ws = Workspace(
        question=question,
        report=report,
        last_action='{"name": "parse_file"}',
        observation=observation,
        round=2,
    )
    name, args, report = call_of(ws)
    assert name == "PythonInterpreter" and args["code"] == "result = 6 * 7\nprint(result)"
    assert "Files read: ledger.csv" in report

    ws = Workspace(
        question=question,
        report=report,
        last_action='{"name": "PythonInterpreter"}',
        observation="stdout:\n42\n",
        round=3,
    )
    reply = research_turn(ws, seed=0, min_rounds=5, tools=ALL)
    parsed = parse_output(reply.content, reply.reasoning)
    assert parsed.tool_call is not None and parsed.tool_call.name == "google_scholar"
    assert "Computed: 6 * 7 = 42" in (parsed.report or "")


def test_tools_the_job_lacks_are_never_called() -> None:
    question = "(Uploaded 1 file: ['a.pdf'])\n\nWhich papers give 6 * 7?"
    name, _, _ = call_of(Workspace(question=question), BASIC_TOOLS)
    assert name == "search"


def test_the_answer_carries_the_computed_value() -> None:
    report = (
        "Simulated research notes (heavyresearch-sim).\nFindings:\n- Comet Brandvik was found in 1791. [S2]\n"
        "Visited: none\nLeads: none\nSearched: x\nComputed: 6 * 7 = 42\nNext: answer"
    )
    reply = research_turn(
        Workspace(question="When was Comet Brandvik found, and what is 6 * 7?", report=report, round=4),
        seed=0,
        min_rounds=3,
        tools=ALL,
    )
    parsed = parse_output(reply.content, reply.reasoning)
    assert parsed.answer is not None and parsed.answer.startswith("6 * 7 = 42. ")


def test_python_results_are_read_from_the_observation() -> None:
    assert python_result("stdout:\n1\n2\n391\n") == "391"
    assert python_result("stdout:\n391\n\nstderr:\nwarning\n") == "391"
    assert python_result("stderr:\nTraceback…") is None
    assert python_result("Finished execution.") is None
