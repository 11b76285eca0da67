"""The simulated model's behaviour: a deterministic research policy (SIMULATION, not a real LLM).

Pure functions from chat messages to a reply. The policy reads the rendered prompt templates of
`config/prompts/` by their `## …` section headers and plays each role the engine calls:

- research (IterResearch): search → visit → record sourced findings → answer, with the report as
  its only memory. The report is rebuilt every round and bounded (a fixed number of findings,
  visited urls, leads and queries), so a workspace stays the same size however many rounds run;
- synthesis: the majority answer among the agents, with the findings of the agents that agree;
- summariser: goal-directed extraction from a page, as JSON;
- anything else: a polite plain answer saying what this is.

The request seed changes which queries, hits and findings an agent picks, and where the
reasoning goes: the `reasoning_content` field for even seeds, `<think>` tags for odd ones, so
that callers meet both forms real models use.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from workers.agent.observation import unwrap
from workers.sim import relevance
from workers.sim.judge import JUDGE_SECTIONS, judge
from workers.sim.summarise import summarise
from workers.sim.synthesis import parse_agent_reports, synthesize
from workers.sim.text import (
    CITATION,
    MAX_FINDING_CHARS,
    Reply,
    SimRole,
    count_tokens,
    keywords,
    norm,
    shorten,
    stem,
    stems,
)
from workers.sim.tools import (
    BASIC_TOOLS,
    arithmetic,
    offered_tools,
    python_call,
    python_result,
    scholarly,
    uploaded_files,
)

# Bounds of the research report: they are what keeps its size flat over hundreds of rounds.
MAX_FINDINGS = 5
MAX_VISITED = 6
MAX_LEADS = 3
MAX_SEARCHED = 4
MAX_ANSWER_CHARS = 240
# Rounds past the usual answering round that an agent keeps looking when nothing it has read is
# about the question.
NOTHING_FOUND_EXTRA_ROUNDS = 3

REPORT_TITLE = "Simulated research notes (heavyresearch-sim)."

_SECTION = re.compile(
    r"^##[ \t]+(Question|Current report|Last action|Last observation|Round|Instruction|Agent reports"
    r"|Goal|Page|Response|How to judge|Correct answer)[ \t]*$",
    re.MULTILINE,
)


def respond(messages: Sequence[Mapping[str, str]], *, seed: int, min_rounds: int) -> Reply:
    """The simulated model's whole output for one chat request."""
    user = _last_user_text(messages)
    role = detect_role(messages)
    if role == "research":
        workspace = parse_workspace(user)
        if workspace is not None:
            return research_turn(workspace, seed=seed, min_rounds=min_rounds, tools=offered_tools(messages))
    elif role == "synthesis":
        sections = _sections(user, _SYNTHESIS)
        return synthesize(sections.get("Question", ""), parse_agent_reports(sections["Agent reports"]))
    elif role == "summariser":
        sections = _sections(user, _SUMMARISER)
        return summarise(sections.get("Goal", ""), sections.get("Page", ""))
    elif role == "judge":
        sections = _sections(user, JUDGE_SECTIONS)
        return judge(sections["Question"], sections.get("Response", ""), sections.get("Correct answer", ""))
    return Reply(
        role="other",
        content=(
            "Hello! This is heavyresearch-sim, a simulated model used for tests, demos and "
            "benchmarks; it is not a real language model. It only plays the research, synthesis "
            "and summariser prompts of heavyresearch, so it cannot answer this message."
        ),
    )


_RESEARCH = ("Question", "Current report", "Last action", "Last observation", "Round", "Instruction")
_SYNTHESIS = ("Question", "Agent reports")
_SUMMARISER = ("Question", "Goal", "Page")


def detect_role(messages: Sequence[Mapping[str, str]]) -> SimRole:
    """Which prompt this is, from the order of its first `## ` headers.

    Only the leading headers count: later ones may belong to foreign text (an observation, a
    page) quoted inside the prompt.
    """
    heads = [m.group(1) for m in _SECTION.finditer(_last_user_text(messages))]
    lead = heads[:2]
    if lead == ["Question", "Agent reports"]:
        return "synthesis"
    if lead == ["Question", "Current report"]:
        return "research"
    if lead == ["Question", "Response"] and "Correct answer" in heads:
        return "judge"
    if "Goal" in lead and "Page" in heads[heads.index("Goal") :]:
        return "summariser"
    return "other"


def _last_user_text(messages: Sequence[Mapping[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def _sections(text: str, names: Sequence[str]) -> dict[str, str]:
    """Split a prompt by its `## ` headers among `names`.

    Observations and pages are foreign text that may hold `## ` lines of their own: a header seen
    twice keeps its first occurrence, except `Round`, which closes a workspace and so is taken
    last, and `Page`, after which everything is the page.
    """
    anchors: dict[str, re.Match[str]] = {}
    for match in _SECTION.finditer(text):
        name = match.group(1)
        if name in names and (name == "Round" or name not in anchors):
            anchors[name] = match
        if name == "Page" and name in names:
            break
    ordered = sorted(anchors.items(), key=lambda item: item[1].start())
    out: dict[str, str] = {}
    for i, (name, match) in enumerate(ordered):
        end = ordered[i + 1][1].start() if i + 1 < len(ordered) else len(text)
        out[name] = text[match.end() : end].strip()
    return out


# ---------------------------------------------------------------------------------------------
# Research role


@dataclass(frozen=True)
class Workspace:
    question: str
    report: str = ""
    last_action: str = ""
    observation: str = ""
    round: int = 1
    max_rounds: int | None = None
    # Present only in the forced final round (research_final.md).
    instruction: str | None = None


def parse_workspace(text: str) -> Workspace | None:
    sections = _sections(text, _RESEARCH)
    if "Question" not in sections:
        return None
    round_no, max_rounds = 1, None
    if match := re.search(r"(\d+)\s+of\s+at\s+most\s+(\d+)", sections.get("Round", "")):
        round_no, max_rounds = int(match.group(1)), int(match.group(2))
    elif match := re.search(r"\d+", sections.get("Round", "")):
        round_no = int(match.group(0))
    return Workspace(
        question=sections["Question"],
        report=sections.get("Current report", ""),
        last_action=sections.get("Last action", ""),
        observation=unwrap(sections.get("Last observation", "")),
        round=round_no,
        max_rounds=max_rounds,
        instruction=sections.get("Instruction"),
    )


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    url: str
    snippet: str = ""


@dataclass(frozen=True)
class Page:
    id: str
    title: str
    url: str
    text: str


def parse_search(observation: str) -> list[Hit] | None:
    """Hits of a search observation (all its queries), or None if it is not one."""
    if not re.search(r"^A search for '", observation, re.MULTILINE):
        return None
    hits: dict[str, Hit] = {}
    current: dict[str, str] | None = None

    def close() -> None:
        if current and current.get("url") and current["id"] not in hits:
            hits[current["id"]] = Hit(current["id"], current["title"], current["url"], current["snippet"])

    for line in observation.splitlines():
        if match := re.match(r"^\s*\d+\.\s+\[(S\d+)\]\s*(.*)$", line):
            close()
            current = {"id": match.group(1), "title": match.group(2).strip(), "url": "", "snippet": ""}
        elif current is not None and (match := re.match(r"^\s*URL:\s*(\S+)", line)):
            current["url"] = match.group(1)
        elif current is not None and line.startswith(" ") and line.strip():
            current["snippet"] = (current["snippet"] + " " + line.strip()).strip()
        elif current is not None and not line.strip():
            continue
        else:
            close()
            current = None
    close()
    return list(hits.values())


def parse_visit(observation: str) -> tuple[list[Page], list[str]]:
    """Pages of a visit observation, and the urls it reported as not found."""
    lines = observation.splitlines()
    pages: list[Page] = []
    missing: list[str] = []
    head: tuple[str, str, str] | None = None
    body: list[str] = []

    def close() -> None:
        if head is not None:
            pages.append(Page(head[0], head[1], head[2], "\n".join(body).strip()))

    i = 0
    while i < len(lines):
        line = lines[i]
        start = re.match(r"^\[(S\d+)\]\s*(.*)$", line)
        url = re.match(r"^URL:\s*(\S+)", lines[i + 1]) if i + 1 < len(lines) else None
        if start and url:
            close()
            head, body = (start.group(1), start.group(2).strip(), url.group(1)), []
            i += 2
            if i < len(lines) and lines[i].startswith("Goal:"):
                i += 1
            continue
        # "[not found] URL: reason" (see workers/tools/render.py); the url holds colons itself.
        if match := re.match(r"^\[not found\]\s*(?:URL:\s*)?(\S+?)(?::(?:\s|$)|\s|$)", line):
            close()
            head, body = None, []
            missing.append(match.group(1))
        elif head is not None:
            body.append(line)
        i += 1
    close()
    return pages, missing


@dataclass
class Memory:
    """What the research report carries from round to round."""

    findings: list[str] = field(default_factory=list)  # "sentence [S3]"
    visited: list[str] = field(default_factory=list)
    leads: list[tuple[str, str]] = field(default_factory=list)  # (source id, url), best first
    searched: list[str] = field(default_factory=list)  # google_scholar's as "scholar: …"
    files_read: list[str] = field(default_factory=list)
    computed: str = ""  # "17 * 23 = 391", from PythonInterpreter


SCHOLAR_MARK = "scholar: "


def parse_memory(report: str) -> Memory:
    memory = Memory()
    in_findings = False
    for raw in report.splitlines():
        line = raw.strip()
        if line == "Findings:":
            in_findings = True
            continue
        if in_findings and line.startswith("- "):
            if CITATION.search(line):
                memory.findings.append(line[2:].strip())
            continue
        in_findings = False
        if line.startswith("Visited:"):
            memory.visited = [u for u in line.removeprefix("Visited:").split() if u != "none"]
        elif line.startswith("Leads:"):
            memory.leads = re.findall(r"\[(S\d+)\]\s+([^\s;]+)", line)
        elif line.startswith("Searched:"):
            queries = (q.strip() for q in line.removeprefix("Searched:").split(";"))
            memory.searched = [q for q in queries if q and q != "none"]
        elif line.startswith("Files read:"):
            memory.files_read = [f.strip() for f in line.removeprefix("Files read:").split(";") if f.strip()]
        elif line.startswith("Computed:"):
            memory.computed = line.removeprefix("Computed:").strip()
    return memory


def render_report(memory: Memory, question: str, next_step: str) -> str:
    terms = stems(question)
    covered: set[str] = set()
    for finding in memory.findings:
        covered |= stems(finding) & terms
    gaps = [w for w in keywords(question) if stem(w) not in covered][:8]
    lines = [REPORT_TITLE, "Findings:"]
    lines += [f"- {f}" for f in memory.findings] or ["- none yet"]
    lines.append("Visited: " + (" ".join(memory.visited) or "none"))
    lines.append("Leads: " + ("; ".join(f"[{i}] {u}" for i, u in memory.leads) or "none"))
    lines.append("Searched: " + ("; ".join(memory.searched) or "none"))
    if memory.files_read:
        lines.append("Files read: " + "; ".join(memory.files_read))
    if memory.computed:
        lines.append("Computed: " + memory.computed)
    if not memory.findings:
        lines.append("Open gaps: no sourced finding yet")
    elif gaps:
        lines.append("Open gaps: nothing found yet about " + ", ".join(gaps))
    else:
        lines.append("Open gaps: none; every part of the question has a sourced finding")
    lines.append("Next: " + next_step)
    return "\n".join(lines)


def _finding(sentence: str, source: str) -> str:
    cite = f" [{source}]"
    return shorten(sentence, MAX_FINDING_CHARS - len(cite)) + cite


def _merge_findings(old: list[str], new: list[str], question: str) -> list[str]:
    """Keep at most MAX_FINDINGS, the most relevant, in the order they were found."""
    unique: dict[str, str] = {}
    for finding in old + new:
        unique.setdefault(norm(finding), finding)
    items = list(unique.values())
    keep = relevance.rank(items, question)[:MAX_FINDINGS]
    return [items[i] for i in sorted(keep)]


def _rank_hits(hits: list[Hit], question: str) -> list[Hit]:
    # Stable: the provider's order breaks ties.
    order = relevance.rank([f"{h.title}. {h.snippet}" for h in hits], question)
    return [hits[i] for i in order]


def query_variants(question: str, seed: int, extra_terms: Sequence[str] = ()) -> list[str]:
    """Search queries for `question`, in the order this seed would try them."""
    words = keywords(question)[:6]
    if not words:
        return [shorten(question.strip(), 200) or "overview"]
    shift = seed % len(words)
    rotated = words[shift:] + words[:shift]
    variants = [" ".join(rotated)]
    if len(rotated) < 3:
        # Dropping a word from a one- or two-word question leaves too little to search for.
        return list(dict.fromkeys(variants + [" ".join([*rotated, t]) for t in extra_terms]))
    drop_order = list(range(len(rotated)))
    random.Random(f"drop:{seed}:{question}").shuffle(drop_order)
    for i in drop_order:
        subset = [w for j, w in enumerate(rotated) if j != i]
        if subset:
            variants.append(" ".join(subset))
    variants += [" ".join([*rotated[:3], term]) for term in extra_terms]
    return list(dict.fromkeys(variants))


def _extra_terms(findings: list[str], question: str) -> list[str]:
    """Frequent words of the findings that the question does not use: new angles to search."""
    terms = stems(question)
    counts = Counter(w for f in findings for w in keywords(CITATION.sub("", f)) if w.isalpha() and len(w) > 3)
    return [w for w, _ in counts.most_common() if stem(w) not in terms][:3]


def _tool_call(name: str, arguments: dict[str, object]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def _reply(seed: int, think: str, report: str, action: str) -> Reply:
    body = f"<report>\n{report}\n</report>\n{action}"
    if seed % 2 == 0:
        return Reply(role="research", content=body, reasoning=think)
    return Reply(role="research", content=f"<think>{think}</think>\n{body}")


def best_finding(findings: Sequence[str], question: str) -> str | None:
    """The finding that answers the question best, among those about what it asks; None when
    no finding is (the policy then says it found nothing rather than state something else)."""
    matching = [f for f in findings if relevance.matches(f, question)]
    ranked = relevance.rank(matching, question)
    return matching[ranked[0]] if ranked else None


def _answer_text(finding: str) -> str:
    cites = " ".join(f"[{c}]" for c in dict.fromkeys(CITATION.findall(finding)))
    sentence = CITATION.sub("", finding).strip()
    return shorten(sentence, MAX_ANSWER_CHARS - len(cites) - 1) + " " + cites


def research_turn(ws: Workspace, *, seed: int, min_rounds: int, tools: frozenset[str] = BASIC_TOOLS) -> Reply:
    """One IterResearch round: rebuild the report from the workspace, then act or answer."""
    memory = parse_memory(ws.report)
    uploads = uploaded_files(ws.question)
    expr = arithmetic(ws.question)
    if '"parse_file"' in ws.last_action:
        memory.files_read = uploads or ["(none)"]
    if '"PythonInterpreter"' in ws.last_action and expr:
        value = python_result(ws.observation)
        memory.computed = f"{expr} = {value}" if value is not None else f"{expr}: the code printed nothing"
    rng = random.Random(f"research:{seed}:{ws.round}:{ws.question}")
    notes = [f"Round {ws.round}" + (f" of at most {ws.max_rounds}." if ws.max_rounds else ".")]

    hits = parse_search(ws.observation)
    pages, missing = parse_visit(ws.observation) if hits is None else ([], [])
    fresh: list[Hit] = []
    if hits is not None:
        fresh = [h for h in _rank_hits(hits, ws.question) if h.url not in memory.visited]
        notes.append(f"The search returned {len(hits)} hits, {len(fresh)} not visited yet.")
        known = {u for _, u in memory.leads}
        memory.leads = [(h.id, h.url) for h in fresh if h.url not in known] + memory.leads
    if pages or missing:
        new = []
        per_page = 1 + rng.randrange(2)
        for page in pages:
            new += [
                _finding(s, page.id)
                for s in relevance.best_sentences(page.text, ws.question, per_page, page.title)
            ]
        notes.append(f"Read {len(pages)} page(s), {len(missing)} not found; {len(new)} relevant sentence(s).")
        memory.findings = _merge_findings(memory.findings, new, ws.question)
        done = {p.url for p in pages} | set(missing)
        memory.leads = [lead for lead in memory.leads if lead[1] not in done]
    elif memory.computed and '"PythonInterpreter"' in ws.last_action:
        notes.append(f"Python computed {memory.computed}.")
    elif hits is None and ws.observation.strip() and ws.round > 1:
        notes.append("The last observation brought nothing usable; trying another way.")
    memory.leads = memory.leads[:MAX_LEADS]

    ready_at = min(min_rounds, ws.max_rounds or min_rounds)
    best = best_finding(memory.findings, ws.question)
    # Nothing read is about the question: look a few rounds more, then say so.
    given_up = best is None and ws.round >= ready_at + NOTHING_FOUND_EXTRA_ROUNDS
    if ws.instruction is not None or (best is not None and ws.round >= ready_at) or given_up:
        computed = f"{memory.computed}. " if memory.computed else ""
        if best is None:
            answer = computed + "No sourced answer: nothing the research read is about this question."
            notes.append("No finding is about what the question asks; saying so.")
        else:
            answer = computed + _answer_text(best)
            notes.append(f"{len(memory.findings)} finding(s); answering with the best supported one.")
        report = render_report(memory, ws.question, "none; answered")
        return _reply(seed, " ".join(notes), report, f"<answer>{answer}</answer>")

    if uploads and "parse_file" in tools and not memory.files_read:
        notes.append(f"The question comes with {len(uploads)} uploaded file(s); reading them first.")
        report = render_report(memory, ws.question, "read the uploaded files")
        return _reply(seed, " ".join(notes), report, _tool_call("parse_file", {"files": uploads}))
    if expr and "PythonInterpreter" in tools and not memory.computed:
        notes.append(f"The question holds arithmetic ({expr}); computing it exactly with Python.")
        report = render_report(memory, ws.question, f"compute {expr}")
        return _reply(seed, " ".join(notes), report, python_call(expr))

    visit_from: list[tuple[str, str]] = []
    if fresh:
        top = [(h.id, h.url) for h in fresh[:3]]
        visit_from = top[seed % len(top) :] + top[: seed % len(top)]
    elif memory.leads and (not memory.findings or rng.random() < 0.6):
        visit_from = memory.leads[:3]
    if visit_from:
        chosen = visit_from[: 1 + rng.randrange(2)]
        urls = [u for _, u in chosen]
        memory.visited = [u for u in memory.visited if u not in urls][-(MAX_VISITED - len(urls)) :] + urls
        memory.leads = [lead for lead in memory.leads if lead[1] not in urls]
        ids = " ".join(f"[{i}]" for i, _ in chosen)
        notes.append(f"Visiting {ids}: they look most relevant.")
        report = render_report(memory, ws.question, f"read {ids} for evidence")
        goal = shorten(f"Find evidence that answers: {ws.question.strip()}", 300)
        return _reply(seed, " ".join(notes), report, _tool_call("visit", {"url": urls, "goal": goal}))

    variants = query_variants(ws.question, seed, _extra_terms(memory.findings, ws.question))
    if (
        "google_scholar" in tools
        and scholarly(ws.question)
        and not any(q.startswith(SCHOLAR_MARK) for q in memory.searched)
    ):
        query = variants[0]
        memory.searched = [*memory.searched[-(MAX_SEARCHED - 1) :], SCHOLAR_MARK + query]
        notes.append(f"An academic question: searching the literature for '{query}'.")
        report = render_report(memory, ws.question, f"google_scholar {query}")
        return _reply(seed, " ".join(notes), report, _tool_call("google_scholar", {"query": [query]}))
    unused = [v for v in variants if v not in memory.searched] or [variants[ws.round % len(variants)]]
    queries = unused[: 1 + rng.randrange(2)]
    memory.searched = [q for q in memory.searched if q not in queries][-(MAX_SEARCHED - len(queries)) :]
    memory.searched += queries
    notes.append("Searching for " + "; ".join(f"'{q}'" for q in queries) + ".")
    report = render_report(memory, ws.question, "search " + "; ".join(queries))
    return _reply(seed, " ".join(notes), report, _tool_call("search", {"query": queries}))


__all__ = [
    "MAX_FINDINGS",
    "MAX_FINDING_CHARS",
    "MAX_VISITED",
    "Reply",
    "SimRole",
    "count_tokens",
    "detect_role",
    "respond",
]
