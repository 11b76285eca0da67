"""The simulated model's ReAct policy (SIMULATION, not a real LLM).

A ReAct request is one growing transcript: the system prompt (recognised by its `<tools>`
block), the question, then assistant turns and `<tool_response>` user messages. The policy
plays the same research strategy as the IterResearch one (`workers.sim.policy.research_turn`),
with one difference in where its memory lives: a ReAct model has no report, so the sim writes
its notes (the same bounded notes the IterResearch report holds) inside its `<think>` and reads
them back from its own last assistant turn. The transcript still grows by every turn and every
tool response, as a real ReAct run's does; the notes only spare the sim re-reading all of it.

A last user message that is not a tool response (after the first) is the engine's final-turn
instruction: the policy then answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from workers.agent.observation import OPEN, unwrap
from workers.sim.policy import REPORT_TITLE, Workspace, research_turn
from workers.sim.text import Reply

_TOOLS_BLOCK = re.compile(r"<tools>.*</tools>", re.DOTALL)
_REPORT = re.compile(r"<report>\s*(.*?)\s*</report>\s*", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)
_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.DOTALL)


def is_react(messages: Sequence[Mapping[str, str]]) -> bool:
    """A ReAct transcript: a system prompt with a `<tools>` block, then the conversation."""
    return (
        len(messages) >= 2
        and messages[0].get("role") == "system"
        and bool(_TOOLS_BLOCK.search(messages[0].get("content", "")))
    )


def _notes(assistant: str) -> str:
    """The research notes the sim left in its last turn's reasoning (empty in round 1)."""
    start = assistant.find(REPORT_TITLE)
    if start < 0:
        return ""
    end = assistant.find("</think>", start)
    return assistant[start : end if end >= 0 else len(assistant)].strip()


def workspace(messages: Sequence[Mapping[str, str]]) -> Workspace:
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    assistants = [m.get("content", "") for m in messages if m.get("role") == "assistant"]
    question = users[0].strip() if users else ""
    last = messages[-1]
    observation, instruction = "", None
    if last.get("role") == "user" and len(users) > 1:
        text = last.get("content", "")
        if text.lstrip().startswith(OPEN):
            observation = unwrap(text)
        else:
            instruction = text
            previous = users[-2] if len(users) > 2 else ""
            observation = unwrap(previous) if previous.lstrip().startswith(OPEN) else ""
    last_turn = assistants[-1] if assistants else ""
    call = _CALL.search(last_turn)
    return Workspace(
        question=question,
        report=_notes(last_turn),
        last_action=call.group() if call else "",
        observation=observation,
        round=len(assistants) + 1,
        instruction=instruction,
    )


def react_turn(messages: Sequence[Mapping[str, str]], *, seed: int, min_rounds: int) -> Reply:
    """One ReAct turn: reasoning (with the notes) then one tool call or the answer; no report."""
    turn = research_turn(workspace(messages), seed=seed, min_rounds=min_rounds)
    content, reasoning = turn.content, turn.reasoning
    think = _THINK.search(content)
    if think:
        reasoning, content = think.group(1), content[: think.start()] + content[think.end() :]
    report = _REPORT.search(content)
    notes = report.group(1) if report else ""
    action = (content[: report.start()] + content[report.end() :]).strip() if report else content.strip()
    thought = f"{reasoning.strip()}\n\n{notes}".strip()
    # Where the reasoning goes follows the IterResearch policy: its own field for even seeds,
    # inline `<think>` for odd ones.
    if turn.reasoning:
        return Reply(role="research", content=action, reasoning=thought)
    return Reply(role="research", content=f"<think>{thought}</think>\n{action}")


def apply_stop(reply: Reply, stop: object) -> Reply:
    """Cut the content at the first stop sequence, as a model server does."""
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list):
        return reply
    cuts = [reply.content.find(s) for s in stop if isinstance(s, str) and s]
    cuts = [c for c in cuts if c >= 0]
    if not cuts:
        return reply
    return Reply(role=reply.role, content=reply.content[: min(cuts)], reasoning=reply.reasoning)
