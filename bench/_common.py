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

import anyio
import httpx

from workers.corpus import build_corpus
from workers.engine import open_engine
from workers.events import Event, EventType
from workers.jobs import submit_job
from workers.llm.types import ChatMessage, ChatModel, ChatResult, DeltaCallback, ResetCallback, Role
from workers.models import ResearchRequest
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


class Recorder:
    """Wraps the model client to keep each call's seed (= agent; None = synthesis), prompt,
    output and duration."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.calls: list[tuple[int | None, list[ChatMessage], ChatResult, float]] = []

    async def chat(
        self,
        role: Role,
        messages: list[ChatMessage],
        *,
        seed: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: DeltaCallback | None = None,
        on_reset: ResetCallback | None = None,
        stop: list[str] | None = None,
    ) -> ChatResult:
        started = time.perf_counter()
        result = await self.inner.chat(
            role,
            messages,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            on_delta=on_delta,
            on_reset=on_reset,
            stop=stop,
        )
        self.calls.append((seed, messages, result, time.perf_counter() - started))
        return result

    def seconds(self, seed: int | None) -> float:
        return sum(took for s, _, _, took in self.calls if s == seed)


async def run_job(engine: Any, request: ResearchRequest) -> list[Event]:
    record, _ = await submit_job(engine.backend, request, simulated=True)
    events: list[Event] = []
    while not (events and events[-1].type.terminal):
        events += await engine.backend.wait_events(record.id, events[-1].seq if events else 0, 5.0)
    assert events[-1].type == EventType.job_succeeded, events[-1]
    return events


async def run_unwatched(engine: Any, request: ResearchRequest) -> str:
    """Runs a job without following its log: its status is polled 20 times a second. Returns
    its id once it ended; `read_log` then reads its events. For CPU figures of the engine
    alone: a follower in the same process (`run_job`) costs a backend read per batch of events,
    and reading a whole log back costs a parse per event, which on Redis are a real share of the
    process's CPU and no part of the engine's."""
    record, _ = await submit_job(engine.backend, request, simulated=True)
    while True:
        job = await engine.backend.get_job(record.id)
        if job is not None and job.status.terminal:
            return str(record.id)
        await anyio.sleep(0.05)


async def read_log(engine: Any, job_id: str) -> list[Event]:
    """A job's whole log, once the job's status is terminal."""
    events: list[Event] = []
    # The status is saved just before the terminal event is appended.
    while not (events and events[-1].type.terminal):
        events += await engine.backend.wait_events(job_id, events[-1].seq if events else 0, 5.0)
    assert events[-1].type == EventType.job_succeeded, events[-1]
    return events


async def round_messages(settings: Settings) -> list[ChatMessage]:
    """The messages of one research round as the engine sends them (a later round of a small
    job, so the workspace holds a report and an observation)."""
    async with open_engine(settings, run_worker=True) as engine:
        assert engine.runner is not None
        recorder = Recorder(engine.runner.parts.model)
        engine.runner.parts.model = recorder
        await run_job(
            engine, ResearchRequest(query="Which river flows through Valdoria?", agents=1, max_rounds=4)
        )
    rounds = [m for _, m, _, _ in recorder.calls if "## Round" in m[-1]["content"]]
    return rounds[min(2, len(rounds) - 1)]


def request_body(messages: list[ChatMessage], *, stream: bool) -> dict[str, Any]:
    """The body `OpenAIChatModel` sends for a research round (default sampling settings)."""
    body: dict[str, Any] = {
        "model": "heavyresearch-sim",
        "messages": messages,
        "temperature": 0.85,
        "top_p": 0.95,
        "presence_penalty": 1.1,
        "max_tokens": 8192,
        "stream": stream,
        "seed": 3,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body
