"""Builds the engine from settings: backend, model client, tools, runner, optional worker.

Everything is created here at start-up, never at import time, and torn down in reverse.
With no LLM configured, the simulated model is started in-process and announced loudly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from workers import tracing
from workers.agent.prompts import PromptSet
from workers.agent.tokens import make_counter
from workers.backend import Backend, make_backend
from workers.backend.retrying import RetryingBackend
from workers.corpus import Corpus, build_corpus
from workers.errors import BackendUnavailable
from workers.llm import OpenAIChatModel
from workers.llm.limiter import Limiter
from workers.llm.traced import TracedModel
from workers.llm.types import ChatModel
from workers.net.ssrf import Resolver, system_resolver
from workers.runner import EngineParts, JobRunner
from workers.settings import SIMULATED_MODEL_ID, LLMSettings, Settings
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.tools.factory import aclose_tools, build_tools
from workers.tools.traced import traced_tools
from workers.webhooks import WebhookSender
from workers.worker import Worker

log = logging.getLogger(__name__)

SIMULATED_BANNER = (
    "NO LLM CONFIGURED: heavyresearch is running on its SIMULATED model (a deterministic stand-in "
    "for tests and demos, not a real LLM). Set HR_LLM__BASE_URL and HR_LLM__MODEL to use a real one."
)

ProgressCallback = Callable[[int, int], None]


@dataclass
class Engine:
    settings: Settings
    backend: Backend
    runner: JobRunner | None  # None in a front-end-only process
    worker: Worker | None
    simulated: bool
    llm_base_url: str  # "" when the simulated model runs inside the worker processes
    corpus_docs: int | None
    # Per optional tool (PythonInterpreter, …): what it runs on, or why it is not offered.
    # Empty in a front-end-only process: the worker processes decide.
    tool_status: dict[str, str] = field(default_factory=dict)


def corpus_path(settings: Settings) -> Path:
    return Path(settings.corpus.path).expanduser()


class _LogProgress:
    """Corpus build progress for the log, each time another tenth is done."""

    def __init__(self) -> None:
        self.tenths = -1

    def __call__(self, done: int, total: int) -> None:
        tenths = 10 * done // max(total, 1)
        if tenths > self.tenths:
            self.tenths = tenths
            log.info("building the local corpus: %d/%d documents", done, total)


def ensure_corpus(settings: Settings, on_progress: ProgressCallback | None = None) -> Path:
    """The corpus file, built from the offline Wikipedia data on first start when missing."""
    path = corpus_path(settings)
    if not path.exists():
        if not settings.corpus.auto_build:
            raise FileNotFoundError(
                f"no corpus at {path}: run `heavyresearch corpus build` or set HR_CORPUS__AUTO_BUILD=true"
            )
        log.info("building the local corpus at %s (first start)", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        build_corpus(path, None, wiki=True, on_progress=on_progress or _LogProgress())
    return path


def simulated_llm(base_url: str, settings: Settings) -> LLMSettings:
    return settings.llm.model_copy(update={"base_url": base_url, "model": SIMULATED_MODEL_ID, "api_key": ""})


@dataclass
class _Built:
    runner: JobRunner
    backend: Backend
    llm_base_url: str
    corpus_docs: int
    tool_status: dict[str, str]


async def _build_runner(
    settings: Settings,
    backend: Backend,
    stack: AsyncExitStack,
    on_corpus_progress: ProgressCallback | None,
    webhook_resolver: Resolver = system_resolver,
) -> _Built:
    """Model client, corpus, tools, webhook sender and runner: what a process that runs jobs needs."""
    llm = settings.llm
    if not settings.llm.base_url:
        sim_config = SimConfig(
            latency=settings.sim.latency,
            tokens_per_second=settings.sim.tokens_per_second,
            fault_rate=settings.sim.fault_rate,
            min_rounds=settings.sim.min_rounds,
            seed=settings.sim.seed,
        )
        sim = stack.enter_context(SimServer(sim_config))
        llm = simulated_llm(f"{sim.base_url}/v1", settings)
        log.warning(SIMULATED_BANNER)
    # One rate and concurrency budget per LLM endpoint across every process on a shared store.
    # Like the RetryingBackend below, admission waits out a store outage instead of failing
    # the agent that is about to call the model.
    shared = backend.shared_limiter(patience=120.0)
    limiter: Limiter | None = None if shared is None else await stack.enter_async_context(shared)
    model = OpenAIChatModel.from_settings(llm, limiter=limiter)
    await stack.enter_async_context(model)
    # Workers ride out a Redis restart or a locked/full sqlite file; the API (engine.backend)
    # answers 503 instead.
    engine_backend: Backend = RetryingBackend(backend) if backend.name != "memory" else backend
    path = await anyio.to_thread.run_sync(ensure_corpus, settings, on_corpus_progress)
    corpus = Corpus.open(path, inline_below=settings.corpus.inline_search_ms / 1000)
    stack.callback(corpus.close)
    tool_status: dict[str, str] = {}
    traced_model: ChatModel = TracedModel(model) if tracing.active() else model
    tools = build_tools(
        settings, corpus=corpus, backend=engine_backend, model=traced_model, status=tool_status
    )
    stack.push_async_callback(aclose_tools, tools)
    webhooks = await stack.enter_async_context(WebhookSender(settings.webhooks, resolver=webhook_resolver))
    parts = EngineParts(
        backend=engine_backend,
        model=traced_model,
        tools=traced_tools(tools) if tracing.active() else tools,
        prompts=PromptSet.load(),
        simulated=settings.simulated,
        agent_concurrency=settings.agent.agent_concurrency,
        observation_max_chars=settings.agent.observation_max_chars,
        grace_seconds=settings.agent.forced_answer_grace,
        webhooks=webhooks,
        outage_budget=settings.agent.outage_budget,
        outage_pause=settings.agent.outage_pause,
        budget=settings.budget,
        react_context_tokens=settings.agent.react_context_tokens,
        token_counter=make_counter(settings.agent.react_tokenizer),
        max_attempts=settings.worker.max_attempts,
    )
    return _Built(JobRunner(parts), engine_backend, llm.base_url, corpus.count(), tool_status)


@asynccontextmanager
async def open_engine(
    settings: Settings,
    *,
    run_worker: bool,
    build_engine: bool = True,
    on_corpus_progress: ProgressCallback | None = None,
    backend: Backend | None = None,
    webhook_resolver: Resolver = system_resolver,
    service: str = "heavyresearch-cli",
) -> AsyncIterator[Engine]:
    """The engine for this process. `build_engine=False` gives a front end only (an API process
    on Redis): the backend, and no model client, corpus or simulated model of its own.
    `service`: this process's name in traces (when `tracing.enabled`)."""
    async with AsyncExitStack() as stack:
        stack.enter_context(tracing.installed(settings.tracing, service=service))
        backend = backend or make_backend(settings)
        stack.push_async_callback(backend.close)
        # A broken store (a corrupt or read-only file) stops the start here, with what to do.
        # One that is only unavailable (a database locked by another process) does not:
        # requests answer 503 until it is free.
        try:
            await backend.open()
        except BackendUnavailable as exc:
            log.warning("starting without the job store for now: %s", exc)
        built = (
            await _build_runner(settings, backend, stack, on_corpus_progress, webhook_resolver)
            if build_engine
            else None
        )
        worker = None
        if run_worker:
            if built is None:
                raise ValueError("a worker needs the engine: build_engine=True")
            worker = Worker(
                built.backend,
                built.runner,
                max_jobs=settings.worker.max_jobs,
                heartbeat_seconds=settings.worker.heartbeat_seconds,
            )
        engine = Engine(
            settings=settings,
            backend=backend,
            runner=built.runner if built else None,
            worker=worker,
            simulated=settings.simulated,
            llm_base_url=built.llm_base_url if built else settings.llm.base_url,
            corpus_docs=built.corpus_docs if built else None,
            tool_status=built.tool_status if built else {},
        )
        async with anyio.create_task_group() as tg:
            if worker is not None:
                tg.start_soon(worker.run)
            try:
                yield engine
            finally:
                if worker is not None:
                    worker.drain()
