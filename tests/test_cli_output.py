"""`heavyresearch ask`'s human output: log lines never cut through the live table, "simulated"
is said once, nothing follows the answer and its sources, `--quiet`/`--verbose`, and no colours
when the output is not a terminal. The live view runs under a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from tests.test_cli import run_cli

QUESTION = "What is the capital of Valdoria?"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TABLE = "│┃┏┗┡└"


def run_in_pty(*args: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on one pseudo-terminal, as in a user's shell; returns
    the exit code and everything the terminal received."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "140", "LINES": "50", **env},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """The output as lines, escape sequences dropped; a carriage return starts a new line, since
    the live view redraws from the line's start."""
    return [line for line in re.split(r"[\r\n]+", ANSI.sub("", raw)) if line.strip()]


def after_sources(lines: list[str]) -> list[str]:
    start = max(i for i, line in enumerate(lines) if line.startswith("Sources:"))
    rest = lines[start + 1 :]
    return [line for line in rest if not re.match(r"\s+\[\d+\] ", line)]


def test_live_view_on_a_terminal_draws_log_lines_above_the_table(mini_corpus: Path) -> None:
    code, raw = run_in_pty(
        "ask",
        QUESTION,
        "--agents",
        "2",
        "--max-rounds",
        "6",
        "--verbose",
        env={"HR_CORPUS__PATH": str(mini_corpus)},
    )
    assert code == 0, raw
    lines = screen_lines(raw)
    logs = [line for line in lines if " job=" in line]
    assert any("job queued" in line for line in logs), lines  # --verbose shows INFO lines
    # Each log line stands on its own line: none is glued to a row of the table or a status.
    for line in logs:
        assert not any(ch in line for ch in TABLE), line
        assert "SIMULATED" not in line and "preparing" not in line, line
    # Said once on screen: the live view's last frame; the engine's own warning is left out.
    final_frame = lines[max(i for i, line in enumerate(lines) if "Heavy job: succeeded" in line) :]
    assert sum("SIMULATED" in line for line in final_frame) == 1
    assert "NO LLM CONFIGURED" not in raw
    assert any(line.startswith("  [1] ") for line in lines), lines
    assert after_sources(lines) == []  # nothing after the answer but its sources
    assert "\x1b[" in raw  # a terminal gets colours


def test_output_that_is_not_a_terminal_has_no_colours_and_nothing_after_the_sources(
    mini_corpus: Path,
) -> None:
    proc = run_cli(
        "ask",
        QUESTION,
        "--agents",
        "2",
        "--max-rounds",
        "6",
        "--verbose",
        env={"HR_CORPUS__PATH": str(mini_corpus), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout and "\x1b[" not in proc.stderr
    assert proc.stdout.count("SIMULATED") == 1
    assert "SIMULATED" not in proc.stderr
    assert "job queued" in proc.stderr  # logs go to stderr, one plain line each
    assert after_sources(proc.stdout.splitlines()) == []


def test_quiet_prints_only_the_answer_and_sources(mini_corpus: Path) -> None:
    proc = run_cli(
        "ask",
        QUESTION,
        "--agents",
        "2",
        "--max-rounds",
        "6",
        "--quiet",
        env={"HR_CORPUS__PATH": str(mini_corpus), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "Heavy job" not in proc.stdout  # no live table
    assert "Answer" in proc.stdout and "[1] " in proc.stdout
    # Without the live view, the result itself says it came from the simulated model.
    assert proc.stdout.count("SIMULATED") == 1


def test_quiet_and_verbose_do_not_go_together() -> None:
    proc = run_cli("ask", QUESTION, "--quiet", "--verbose", timeout=60)
    assert proc.returncode == 2
    assert "not allowed with" in proc.stderr
