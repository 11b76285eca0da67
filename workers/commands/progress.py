"""Live terminal view of a job's events (rich), and the final answer with numbered sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.status import Status
from rich.table import Table
from rich.text import Text

from workers.events import Event, EventType
from workers.models import JobResult, JobStatus, Usage


@dataclass
class AgentRow:
    status: str = "waiting"
    round: int = 0
    action: str = ""
    report_chars: int = 0
    tokens: int = 0


@dataclass
class ProgressView:
    console: Console
    simulated: bool
    agents: dict[int, AgentRow] = field(default_factory=dict)
    phase: str = "queued"
    synthesis_chars: int = 0
    live: Live | None = None

    def __enter__(self) -> ProgressView:
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)
            self.console.print()

    def handle(self, event: Event) -> None:
        row = self.agents.setdefault(event.agent, AgentRow()) if event.agent is not None else None
        match event.type:
            case EventType.job_started:
                self.phase = "researching"
            case EventType.agent_started if row:
                row.status = "running"
            case EventType.round_started if row:
                row.round = event.round or row.round
                # The action stays the last tool call (with its arguments) until the next one.
                if event.data.get("forced"):
                    row.action = "forced answer"
                elif not row.action:
                    row.action = f"round {row.round}: reading the question"
            case EventType.tool_called if row:
                args = json.dumps(event.data.get("arguments", {}), ensure_ascii=False)
                row.action = f"{event.data.get('name')} {args}"[:70]
            case EventType.report_updated if row:
                row.report_chars = int(event.data.get("chars", 0))
            case EventType.usage if row:
                row.tokens = int(event.data.get("agent_total_tokens", row.tokens))
            case EventType.agent_finished if row:
                row.status = str(event.data.get("status", "finished"))
                answer = event.data.get("answer")
                row.action = (
                    f"answer: {answer}" if answer else f"no answer: {event.data.get('no_answer', '')}"
                )[:70]
            case EventType.agent_paused if row:
                row.status = "paused"
                row.action = f"model endpoint down {event.data.get('outage_seconds')}s"[:70]
            case EventType.agent_resumed if row:
                row.status, row.action = "running", "model endpoint back"
            case EventType.agent_failed if row:
                row.status, row.action = "failed", str(event.data.get("error", ""))[:70]
            case EventType.synthesis_started:
                self.phase = "synthesizing"
            case EventType.synthesis_delta:
                text = str(event.data.get("text", ""))
                self.synthesis_chars = (
                    len(text) if event.data.get("reset") else self.synthesis_chars + len(text)
                )
            case _ if event.type.terminal:
                self.phase = event.type.value.removeprefix("job.")
        if self.live is not None:
            self.live.update(self._render())

    def _render(self) -> Group:
        table = Table(title=f"Heavy job: {self.phase}", expand=False)
        for column in ("agent", "status", "round", "current action", "report", "tokens"):
            table.add_column(column)
        for index in sorted(self.agents):
            row = self.agents[index]
            table.add_row(
                str(index), row.status, str(row.round), row.action, f"{row.report_chars} ch", str(row.tokens)
            )
        parts: list[Table | Text] = [table]
        if self.synthesis_chars:
            parts.append(Text(f"synthesis: {self.synthesis_chars} characters streamed"))
        if self.simulated:
            parts.append(
                Text(
                    "SIMULATED MODEL: answers come from a deterministic stand-in, not an LLM.",
                    style="bold yellow",
                )
            )
        return Group(*parts)


class _NoStatus:
    def update(self, status: str) -> None:
        pass

    def stop(self) -> None:
        pass


@contextmanager
def status_line(console: Console, text: str, *, quiet: bool) -> Iterator[Status | _NoStatus]:
    """A spinner with `text` on `console`, or nothing at all with `--quiet`."""
    if quiet:
        yield _NoStatus()
        return
    with console.status(text) as status:
        yield status


class Shown(Protocol):
    """What the result print needs: a local `JobRecord` or the service's public job view."""

    @property
    def status(self) -> JobStatus: ...
    @property
    def error(self) -> str | None: ...
    @property
    def result(self) -> JobResult | None: ...
    @property
    def usage(self) -> Usage: ...


def print_result(console: Console, record: Shown, *, simulated_note: bool = True) -> None:
    if record.result is None:
        console.print(
            Panel(record.error or record.status.value, title=f"job {record.status.value}", style="red")
        )
        return
    result = record.result
    console.print(Panel(result.answer, title="Answer", style="green"))
    if result.sources:
        console.print("Sources:")
        for source in result.sources:
            console.print(f"  [{source.id}] {source.title} — {source.url}", markup=False)
    notes = []
    if result.agents_failed:
        notes.append(f"agents left out after failing: {result.agents_failed}")
    if result.cut_short:
        notes.append("cut short: " + "; ".join(result.cut_short))
    if result.citations_removed:
        where = ", ".join(dict.fromkeys(r.where for r in result.removed_citations))
        notes.append(
            f"{result.citations_removed} citation(s) to never-retrieved sources removed"
            + (f" (from {where})" if where else "")
        )
    if record.usage.format_recoveries:
        notes.append(f"{record.usage.format_recoveries} model output(s) needed a format repair")
    if result.synthesis != "model":
        notes.append(f"synthesis: {result.synthesis}")
    if result.simulated and simulated_note:
        notes.append("SIMULATED MODEL: this answer was produced by the simulated model, not an LLM")
    for note in notes:
        console.print(f"note: {note}", markup=False)
