"""Where `heavyresearch ask` sends log lines, so they never cut through the live table.

On a terminal they go through rich's logging handler on the very console the live table (and
the "preparing the corpus" status) draws on, so rich prints them above it; otherwise to standard
error as plain lines, without colours. Only warnings show by default (`--verbose`: the INFO
lines too, `--quiet`: errors only). The engine's "no LLM configured" warning is left out: the
CLI says that once itself.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler

from workers.engine import SIMULATED_BANNER
from workers.logs import FORMAT as LOG_FORMAT
from workers.logs import ContextDefaults

FORMAT = "%(name)s job=%(job_id)s agent=%(agent)s %(message)s"


class _WithoutSimulatedBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != SIMULATED_BANNER


def ask_log_level(args: argparse.Namespace, configured: str) -> str:
    if getattr(args, "quiet", False):
        return "ERROR"
    if getattr(args, "verbose", False):
        return "DEBUG" if configured.upper() == "DEBUG" else "INFO"
    return "WARNING"


def route_logs(console: Console, level: str) -> None:
    """Log through `console` when it is a terminal (the live view's own), else plain lines to
    stderr in the service's format (`workers.logs`), unwrapped and without colours."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(
            console=console, show_path=False, markup=False, highlighter=NullHighlighter(), keywords=[]
        )
        handler.setFormatter(logging.Formatter(FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ContextDefaults())
    handler.addFilter(_WithoutSimulatedBanner())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
