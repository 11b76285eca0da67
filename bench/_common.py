"""Shared pieces of the benchmarks: a simulated model in its own process, a corpus, an engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from workers.corpus import build_corpus
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MINI_CORPUS = ROOT / "tests" / "data" / "mini_corpus.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def sim_process(*args: str) -> Iterator[str]:
    """`heavyresearch sim-llm` in a separate process, so its CPU is not counted as ours."""
    with sim_server(*args) as (url, _pid):
        yield url


@contextmanager
def sim_server(*args: str) -> Iterator[tuple[str, int]]:
    """`sim_process`, also giving the process id (for benchmarks that read its CPU time)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "sim-llm", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HR_LOG_LEVEL": "WARNING"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def corpus_file(wiki: bool = False) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.sqlite"
        build_corpus(path, None if wiki else [MINI_CORPUS], wiki=wiki)
        yield path


def settings_for(corpus: Path, sim_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "memory",
        "log_level": "WARNING",
        "corpus": {"path": str(corpus), "auto_build": False},
        "llm": {"base_url": f"{sim_url}/v1", "model": "heavyresearch-sim", "retry_base_delay": 0.01},
    }
    values.update(overrides)
    return Settings(**values)
