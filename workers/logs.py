"""Logging: every line carries the job id and agent when there is one."""

from __future__ import annotations

import logging
import sys


class ContextDefaults(logging.Filter):
    """Gives every record `job_id` and `agent`, so the format never fails on a bare log call."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = "-"
        if not hasattr(record, "agent"):
            record.agent = "-"
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
