"""The last line `heavyresearch ask --json` prints: the whole result as one JSON object, so a
script reading the stream needs nothing else (no second request for the job)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from workers.commands.progress import Shown


class Finished(Shown, Protocol):
    """A local `JobRecord` or the service's public job view, as `ask` ends with."""

    @property
    def id(self) -> str: ...


def result_object(record: Finished) -> dict[str, Any]:
    """`type` "result" sets it apart from the event lines before it (which carry `seq`)."""
    result = record.result
    usage = record.usage
    return {
        "type": "result",
        "job_id": record.id,
        "status": record.status.value,
        "answer": result.answer if result else None,
        "report": result.report if result else None,
        "sources": [
            {"id": source.id, "title": source.title, "url": source.url}
            for source in (result.sources if result else [])
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "calls": usage.calls,
        },
        "cut_short": result.cut_short if result else [],
        "citations_removed": result.citations_removed if result else 0,
        "synthesis": result.synthesis if result else None,
        "agents_failed": result.agents_failed if result else [],
        "budget": result.budget.model_dump() if result and result.budget else None,
        "simulated": bool(getattr(record, "simulated", False)) or bool(result and result.simulated),
        "error": record.error,
    }


def result_line(record: Finished) -> str:
    return json.dumps(result_object(record), ensure_ascii=False)
