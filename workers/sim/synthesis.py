"""The simulated model's synthesis role (SIMULATION): the best-supported answer among the
agents, with the findings of the agents that agree."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from workers.sim import relevance
from workers.sim.text import CITATION, MAX_FINDING_CHARS, Reply, norm, shorten

# Findings the synthesis report keeps.
MAX_SYNTHESIS_FINDINGS = 10


@dataclass(frozen=True)
class AgentReport:
    agent: int
    answer: str
    report: str


_NO_ANSWER = {"", "none", "no answer", "n a", "null"}
# How the research policy says it found nothing (workers/sim/policy.py).
_NON_ANSWER_PREFIXES = ("no sourced answer", "no answer")


def parse_agent_reports(text: str) -> list[AgentReport]:
    blocks = re.split(r"^###[ \t]+Agent[ \t]+(\d+)[ \t]*$", text, flags=re.MULTILINE)
    out: list[AgentReport] = []
    for number, block in zip(blocks[1::2], blocks[2::2], strict=True):
        match = re.match(r"\s*Answer:(.*?)(?:^Report:[ \t]*$|\Z)(.*)", block, re.DOTALL | re.MULTILINE)
        answer, report = (match.group(1).strip(), match.group(2).strip()) if match else ("", block.strip())
        out.append(AgentReport(int(number), answer, report))
    return out


def _cited_lines(report: str) -> list[str]:
    skip = ("Leads:", "Visited:", "Searched:", "Next:", "Open gaps:")
    lines = (line.strip().removeprefix("- ").strip() for line in report.splitlines())
    return [line for line in lines if CITATION.search(line) and not line.startswith(skip)]


def _synthesis_reply(think: str, report: str, answer: str) -> Reply:
    content = f"<think>{think}</think>\n<report>\n{report}\n</report>\n<answer>{answer}</answer>"
    return Reply("synthesis", content)


def _is_answer(text: str) -> bool:
    key = norm(text)
    return key not in _NO_ANSWER and not key.startswith(_NON_ANSWER_PREFIXES)


def synthesize(question: str, agents: Sequence[AgentReport]) -> Reply:
    """The best-supported answer: one about what the question asks first, then the one whose
    agents cite the most distinct sources for it, then the one most agents gave. An agent that
    found nothing does not vote."""
    groups: dict[str, list[AgentReport]] = {}
    for agent in agents:
        if _is_answer(agent.answer):
            groups.setdefault(norm(agent.answer), []).append(agent)

    def cited(group: list[AgentReport]) -> int:
        return len({c for a in group for c in CITATION.findall(a.report + a.answer)})

    def support(group: list[AgentReport]) -> tuple[bool, int, int, float, int]:
        answer = group[0].answer
        return (
            relevance.matches(answer, question),
            cited(group),
            len(group),
            relevance.score(answer, question),
            -group[0].agent,
        )

    if not groups:
        report = f"Simulated synthesis (heavyresearch-sim): none of the {len(agents)} agents found an answer."
        think = "No agent produced an answer; nothing to weigh."
        answer = "No answer: none of the research agents found one."
        return _synthesis_reply(think, report, answer)
    winner = max(groups.values(), key=support)
    answer = winner[0].answer
    findings: dict[str, str] = {}
    for agent in winner:
        for line in _cited_lines(agent.report):
            findings.setdefault(norm(line), shorten(line, MAX_FINDING_CHARS))
    numbers = ", ".join(str(a.agent) for a in winner)
    lines = [
        f"Simulated synthesis (heavyresearch-sim): {len(winner)} of {len(agents)} agents "
        f"(agents {numbers}) agree on the answer.",
        "Findings:",
        *[f"- {f}" for f in list(findings.values())[:MAX_SYNTHESIS_FINDINGS]],
    ]
    dissent = [a for group in groups.values() if group is not winner for a in group]
    lines += [
        f"Dissent: agent {a.agent} answered: {shorten(CITATION.sub('', a.answer).strip(), 160)}"
        for a in dissent[:4]
    ]
    think = (
        f"{len(groups)} distinct answer(s) among {len(agents)} agents; the best supported, given by "
        f"{len(winner)}, cites {cited(winner)} source(s). Question: {shorten(question, 120)}"
    )
    report = "\n".join(lines)
    return _synthesis_reply(think, report, answer)
