"""Which tool the simulated model reaches for beyond search and visit (SIMULATION, not a real LLM).

Deterministic rules, in order, each taken once per agent (the report remembers it):

- the question lists uploaded files (`(Uploaded N file: [...])`) → `parse_file` them;
- the question holds arithmetic (`17 * 23`, `2^10 + 5`) → compute it with `PythonInterpreter`;
- the question asks about papers, studies or publications → a first `google_scholar` search;

and only when the system prompt's tool list offers that tool, so a job that lacks it is never
sent a call it cannot serve.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence

BASIC_TOOLS = frozenset({"search", "visit"})

_TOOL_LINE = re.compile(r"^- ([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
_UPLOADS = re.compile(r"^\(Uploaded \d+ files?: (\[.*?\])\)", re.MULTILINE)
# Numbers joined by operators, with optional parentheses: "17 * 23", "(2 + 3) ^ 4". A minus
# needs spaces round it, so ranges and dates ("1990-2000") are not arithmetic.
_ARITHMETIC = re.compile(r"[(\d][\d.()]*(?:(?:\s*[+*/^%]|\s+-\s)[\s(]*\d[\d.()]*)+")
_SCHOLARLY = re.compile(
    r"\b(papers?|publications?|published|journals?|citations?|cited|scholarly|academic|peer-reviewed|"
    r"preprints?|arxiv)\b",
    re.IGNORECASE,
)
_STDOUT = re.compile(r"^stdout:\n(.*?)(?:\nstderr:|\n\[PythonInterpreter Error\]|\Z)", re.DOTALL)


def offered_tools(messages: Sequence[Mapping[str, str]]) -> frozenset[str]:
    """Tool names listed under `Tools:` in the system prompt; search and visit if none is."""
    for message in messages:
        if message.get("role") != "system":
            continue
        text = message.get("content", "")
        _, found, tail = text.partition("\nTools:\n")
        if found:
            names = frozenset(_TOOL_LINE.findall(tail))
            return names or BASIC_TOOLS
    return BASIC_TOOLS


def uploaded_files(question: str) -> list[str]:
    match = _UPLOADS.search(question)
    if not match:
        return []
    try:
        names = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def arithmetic(question: str) -> str | None:
    """The first arithmetic expression in the question, as Python (`^` read as a power)."""
    for match in _ARITHMETIC.finditer(question):
        expr = " ".join(match.group().replace("^", "**").split()).strip()
        if expr.count("(") != expr.count(")"):
            expr = expr.strip("()").strip()
        try:
            tree = ast.parse(expr, mode="eval")
        except SyntaxError:
            continue
        if any(isinstance(node, ast.Name | ast.Call | ast.Attribute) for node in ast.walk(tree)):
            continue
        return expr
    return None


def scholarly(question: str) -> bool:
    return bool(_SCHOLARLY.search(question))


def python_call(expr: str) -> str:
    code = f"result = {expr}\nprint(result)"
    return (
        "<tool_call>\n"
        + json.dumps({"name": "PythonInterpreter", "arguments": {}})
        + f"\n<code>\n{code}\n</code>\n</tool_call>"
    )


def python_result(observation: str) -> str | None:
    """The printed value of a PythonInterpreter observation, or None when it printed nothing."""
    match = _STDOUT.match(observation)
    if not match:
        return None
    lines = [line for line in match.group(1).strip().splitlines() if line.strip()]
    return lines[-1].strip()[:100] if lines else None
