"""Tolerant parser of one IterResearch round's model output (DESIGN.md §1).

Real models are messy. Whatever can be recovered is, with a warning; whatever cannot becomes a
precise `error` string that the agent feeds back to the model as its next observation. The parser
never raises and does no I/O: it runs on every round of every agent.

Every fix that turned an output the format does not allow into a usable one is listed in
`recoveries` (the agent counts them as the job's `format_recoveries`); `warnings` holds those and
the merely notable (no `<report>`, which ReAct-style outputs never have).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from workers.agent.arguments import SIGNATURES, fix_arguments, infer_tool
from workers.models import ToolCall

_I = re.IGNORECASE
_THINK_PAIR = re.compile(r"<\s*think\s*>(.*?)<\s*/\s*think\s*>", _I | re.DOTALL)
_THINK_OPEN = re.compile(r"<\s*think\s*>", _I)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", _I)
_THINK_ANY = re.compile(r"<\s*/?\s*think\s*>", _I)
_TAG = re.compile(r"<\s*(/?)\s*(report|tool_call|answer)\s*>", _I)
_OPEN_TAG = re.compile(r"<\s*(?:report|tool_call|answer)\s*>", _I)
_CALL_OPEN = re.compile(r"<\s*tool_call\s*>", _I)
_CALL_CLOSE = re.compile(r"<\s*/\s*tool_call\s*>", _I)
# Chat-template tokens mean the model went on to write the next turn itself.
_INVENTED = re.compile(r"<\s*/?\s*tool_response\s*>|<\|im_(?:start|end)\|>", _I)
_OBSERVATION = re.compile(r"^[ \t]*observation[ \t]*:", _I | re.MULTILINE)
_CODE = re.compile(r"<\s*code\s*>(.*?)(?:<\s*/\s*code\s*>|\Z)", _I | re.DOTALL)
_WORD = re.compile(r"\w+")
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
# strict=False: models put raw newlines and tabs inside JSON strings (code, goals).
_DECODER = json.JSONDecoder(strict=False)
_CALL_SHAPE = '<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>'
_NO_REPORT = "no <report>: the previous report is kept"


@dataclass(frozen=True)
class ParsedOutput:
    """One round's output. When `error` is set the caller must not act on `tool_call`/`answer`."""

    think: str
    report: str | None
    tool_call: ToolCall | None
    tool_call_text: str
    answer: str | None
    error: str | None
    warnings: tuple[str, ...]
    # The fixes that made this output usable; empty when `error` is set.
    recoveries: tuple[str, ...] = ()


def parse_output(content: str, reasoning: str = "", tools: Collection[str] | None = None) -> ParsedOutput:
    """Parse one output. `tools` names the tools the caller offers (default: the released ones),
    so a call that gives only arguments can be matched to the one tool they fit."""
    warnings: list[str] = []
    thinks, body = _split_think(content, warnings)
    think = _join_think([reasoning, *thinks])
    blocks = _blocks(_cut_invented(body, warnings), warnings)
    if not blocks and (plain := _plain_answer(content)):
        blocks = [("answer", plain)]
        warnings.append("no <answer> tag: took the plain text after the last </think> as the answer")
    reports = [text.strip() for name, text in blocks if name == "report"]
    answers = [text.strip() for name, text in blocks if name == "answer"]
    calls = [text.strip() for name, text in blocks if name == "tool_call"]

    non_empty = [r for r in reports if r]
    report = non_empty[-1] if non_empty else None
    if len(reports) > 1:
        warnings.append(f"{len(reports)} <report> blocks given: kept the last non-empty one")
    if reports and report is None:
        warnings.append("empty <report> ignored: the previous report is kept")
    elif not reports:
        warnings.append(_NO_REPORT)

    answer = answers[-1] if answers else None
    if len(answers) > 1:
        warnings.append(f"{len(answers)} <answer> blocks given: kept the last one")

    tool_call: ToolCall | None = None
    call_error: str | None = None
    tool_call_text = calls[0] if calls else ""
    if len(calls) == 1:
        tool_call, call_error = _parse_tool_call(
            tool_call_text, warnings, SIGNATURES.keys() if tools is None else tools
        )

    error: str | None = None
    if calls and answers:
        error = "both <answer> and <tool_call> given; give exactly one"
    elif len(calls) > 1:
        error = f"one tool call per round: {len(calls)} <tool_call> blocks given; give exactly one"
    elif calls:
        error = call_error
    elif not answers:
        error = (
            "no <tool_call> or <answer> found; after <report>…</report> give exactly one of "
            f"{_CALL_SHAPE} or <answer>…</answer>"
        )
    elif not answer:
        error = "the <answer> is empty; write the final answer inside <answer>…</answer>"
    recoveries = () if error else tuple(w for w in warnings if w != _NO_REPORT)
    return ParsedOutput(think, report, tool_call, tool_call_text, answer, error, tuple(warnings), recoveries)


def _plain_answer(content: str) -> str:
    """The text after the last `</think>` when it holds no tags at all: the released ReAct
    model and Qwen-style thinking models often answer so, without `<answer>`. JSON there is a
    tool call gone wrong, not an answer."""
    closes = list(_THINK_CLOSE.finditer(content))
    if not closes:
        return ""
    tail = _THINK_ANY.sub("", content[closes[-1].end() :]).strip()
    if not tail or _TAG.search(tail) or _INVENTED.search(tail) or tail[0] in "{[":
        return ""
    return tail


def _split_think(content: str, warnings: list[str]) -> tuple[list[str], str]:
    """Take every piece of reasoning out of `content`; return (pieces, the rest)."""
    thinks: list[str] = []
    first_close = _THINK_CLOSE.search(content)
    first_open = _THINK_OPEN.search(content)
    if first_close and (first_open is None or first_close.start() < first_open.start()):
        head = content[: first_close.start()]
        # Reasoning parsers in vLLM/SGLang often strip only the opening tag. A head holding
        # structural tags is real output, though, so then the `</think>` is just stray.
        if not _OPEN_TAG.search(head):
            thinks.append(head)
            content = content[first_close.end() :]

    def take(match: re.Match[str]) -> str:
        thinks.append(match.group(1))
        return ""

    content = _THINK_PAIR.sub(take, content)
    while opened := _THINK_OPEN.search(content):
        following = _OPEN_TAG.search(content, opened.end())
        end = following.start() if following else len(content)
        thinks.append(content[opened.end() : end])
        content = content[: opened.start()] + content[end:]
        warnings.append("unclosed <think>: took it up to the next tag")
    # Whatever think tags remain are duplicated closers: harmless, so no warning.
    return thinks, _THINK_ANY.sub("", content)


def _join_think(pieces: list[str]) -> str:
    seen: list[str] = []
    for piece in pieces:
        text = _THINK_ANY.sub("", piece).strip()
        # Some providers send the reasoning both in its own field and inline.
        if text and text not in seen:
            seen.append(text)
    return "\n\n".join(seen)


def _cut_invented(body: str, warnings: list[str]) -> str:
    """Cut what the model wrote past its own turn: a tool response or next turn it made up, and
    anything after its first complete tool call (an invented observation, a second call, an
    answer written as if the call had already run); the call itself is kept and run."""
    invented = _INVENTED.search(body)
    end = invented.start() if invented else len(body)
    opened = _CALL_OPEN.search(body, 0, end)
    closed = _CALL_CLOSE.search(body, opened.end()) if opened else None
    if closed and closed.end() < end:
        end = closed.end()
        if body[end:].strip():
            warnings.append(
                f"cut the text after the first complete </tool_call> ({_snippet(body[end:].strip(), 0, 50)})"
                " and everything after it"
            )
            return body[:end]
        return body
    if invented is None:
        # "Observation:" is ordinary prose in a report; only after an open call is it invented.
        observation = _OBSERVATION.search(body, opened.end()) if opened else None
        if observation is None:
            return body
        invented_at, what = observation.start(), observation.group()
    else:
        invented_at, what = invented.start(), invented.group()
    warnings.append(f"cut invented {what.strip()!r} and everything after it")
    return body[:invented_at]


def _blocks(body: str, warnings: list[str]) -> list[tuple[str, str]]:
    """Split `body` into (tag, inner text) blocks, in order; text between blocks is ignored."""
    blocks: list[tuple[str, str]] = []
    open_name: str | None = None
    start = 0
    for match in _TAG.finditer(body):
        closing, name = bool(match.group(1)), match.group(2).lower()
        if open_name is None:
            if not closing:  # a closer with nothing open is a duplicate: ignore it
                open_name, start = name, match.end()
        elif closing:
            if name == open_name:
                blocks.append((name, body[start : match.start()]))
                open_name = None
        elif name == open_name:
            start = match.end()  # the model restarted the same block: keep the restart
        else:
            warnings.append(f"unclosed <{open_name}>: ended it at <{name}>")
            blocks.append((open_name, body[start : match.start()]))
            open_name, start = name, match.end()
    if open_name is not None:
        warnings.append(f"unclosed <{open_name}>: took it to the end of the output")
        blocks.append((open_name, body[start:]))
    return blocks


def _parse_tool_call(
    text: str, warnings: list[str], tools: Collection[str]
) -> tuple[ToolCall | None, str | None]:
    code: str | None = None
    code_match = _CODE.search(text)
    if code_match:
        # Tongyi's PythonInterpreter format: empty JSON arguments, then the code in <code> tags.
        code = textwrap.dedent(code_match.group(1)).strip("\r\n")
        text = text[: code_match.start()] + text[code_match.end() :]
    brace = text.find("{")
    if brace < 0:
        return None, f"no JSON object inside <tool_call> ({_snippet(text)}); expected {_CALL_SHAPE}"
    value, problem = _loads(text[brace:], warnings)
    if problem:
        return None, f"the <tool_call> is not valid JSON: {problem}; expected {_CALL_SHAPE}"
    if not isinstance(value, dict):
        return None, f"the <tool_call> must hold a JSON object, got {type(value).__name__}"
    arguments = value.get("arguments")
    if arguments is None and (rest := {k: v for k, v in value.items() if k != "name"}):
        # {"name": "search", "query": [...]}: the arguments written beside the name.
        arguments = rest
        warnings.append('read the keys beside "name" as the arguments')
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        arguments = {}
    elif isinstance(arguments, str):
        decoded, problem = _loads(arguments.strip(), warnings)
        if problem or not isinstance(decoded, dict):
            why = problem or f"it decodes to {type(decoded).__name__}"
            return None, f'"arguments" is a string that is not a JSON object ({why})'
        arguments = decoded
        warnings.append('decoded "arguments" given as a JSON string')
    if not isinstance(arguments, dict):
        return None, f'"arguments" must be a JSON object, got {type(arguments).__name__}'
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        inferred, fits = infer_tool(arguments, tools)
        if inferred is None:
            which = f"they fit {', '.join(fits)}" if fits else "no tool takes those arguments"
            return None, (
                f'the tool call has no "name" ({_snippet(text[brace:])}) and {which}; expected {_CALL_SHAPE}'
            )
        name = inferred
        warnings.append(f'no "name": the arguments fit only {name}, so called it')
    name = name.strip()
    arguments = fix_arguments(name, arguments, warnings)
    if code is not None:
        arguments = {**arguments, "code": code}
    return ToolCall(name=name, arguments=arguments), None


def _loads(text: str, warnings: list[str]) -> tuple[Any, str | None]:
    """Decode the JSON value at the start of `text`, repairing common slips; (value, problem)."""
    try:
        return _DECODER.raw_decode(text)[0], None
    except json.JSONDecodeError as exc:
        first = exc
    except RecursionError:
        return None, "it is nested too deeply"
    last = max(text.rfind("}"), text.rfind("]"))
    try:
        value = _DECODER.raw_decode(_repair(text[: last + 1] if last >= 0 else text))[0]
    except (json.JSONDecodeError, RecursionError):
        return None, f"{first.msg} at {_snippet(text, first.pos)}"
    warnings.append("repaired tool-call JSON (single quotes, trailing commas or Python literals)")
    return value, None


def _repair(text: str) -> str:
    """Rewrite Python-flavoured JSON (single quotes, True/False/None, trailing commas) as JSON."""
    out: list[str] = []
    quote = ""  # quote char of the string being copied; "" outside strings
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                escaped = text[i + 1]
                out.append("'" if escaped == "'" else char + escaped)  # \' is not JSON
                i += 2
                continue
            if char == quote:
                out.append('"')
                quote = ""
            else:
                out.append('\\"' if char == '"' else char)  # '"' only reaches here inside '…'
        elif char in "'\"":
            quote = char
            out.append('"')
        elif char in "}]":
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                del out[j]
            out.append(char)
        elif word := _WORD.match(text, i):  # whole words, so `Nonesuch` stays intact
            out.append(_PY_LITERALS.get(word.group(), word.group()))
            i = word.end()
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _snippet(text: str, pos: int = 0, width: int = 60) -> str:
    lo = max(0, min(pos, len(text)) - width // 2)
    piece = text[lo : lo + width]
    return repr(("…" if lo else "") + piece + ("…" if lo + width < len(text) else ""))
