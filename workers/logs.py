"""Logging: every line carries the job id and agent when there is one.

The runner and each agent set them in context variables, which every task they start inherits,
so a line logged deep inside (the LLM client, a tool, the cache) names its job too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_job_id: ContextVar[str] = ContextVar("job_id", default="-")
_agent: ContextVar[str] = ContextVar("agent", default="-")


@contextmanager
def job_context(job_id: str, agent: int | None = None) -> Iterator[None]:
    """Log lines in this block, and in tasks started from it, carry `job_id` (and `agent`)."""
    job_token = _job_id.set(job_id)
    agent_token = _agent.set(str(agent)) if agent is not None else None
    try:
        yield
    finally:
        if agent_token is not None:
            _agent.reset(agent_token)
        _job_id.reset(job_token)


class ContextDefaults(logging.Filter):
    """Gives every record `job_id` and `agent`: from `extra`, else from the job context, else "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        if not hasattr(record, "agent"):
            record.agent = _agent.get()
        return True


FORMAT = "%(asctime)s %(levelname)s %(name)s job=%(job_id)s agent=%(agent)s %(message)s"


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextDefaults())
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
