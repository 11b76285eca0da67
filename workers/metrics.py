"""The engine's Prometheus metrics: what this process's jobs did (model calls, tools, rounds,
attempts, webhooks), in one registry per process.

Each metric is fed from one choke point, so nothing is counted twice:
    LLM attempts, latency, tokens, retries, limiter waits   `workers/llm/client.py` `EndpointModel.chat`
    LLM calls (ok / failed, over the fallback chain)        `workers/llm/fallback.py` `FallbackModel.chat`
    rounds, forced answers, tool calls, format recoveries,
    agents ended                                            `AgentContext.emit` (appended events)
    sandbox runs                                            `PythonInterpreterTool.__call__`
    job attempts, poisoned jobs, jobs ended, webhooks       `workers/runner.py`
A resumed job re-emits events the backend already holds; only events actually appended count,
so a reclaim does not count a round twice.

A worker process serves this registry on `--metrics-port`; `serve` adds it to its `/metrics`.
The registry is made on first use, not at import (`engine_metrics()`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from workers.events import Event, EventType
from workers.models import Usage

# Model calls take from ~10 ms (the simulated model) to minutes (long reasoning).
_LLM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.llm_attempts = Counter(
            "hr_llm_attempts",
            "HTTP attempts at a model endpoint (ok, retryable_error, overflow, config_error).",
            ["endpoint", "role", "outcome"],
            registry=r,
        )
        self.llm_calls = Counter(
            "hr_llm_calls",
            "Model calls (one or more attempts, over the fallback chain): ok or failed.",
            ["role", "outcome"],
            registry=r,
        )
        self.llm_seconds = Histogram(
            "hr_llm_attempt_seconds",
            "Time of one model attempt, from the request to the whole reply.",
            ["endpoint", "role"],
            buckets=_LLM_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "hr_llm_tokens", "Tokens the model endpoints reported.", ["endpoint", "role", "kind"], registry=r
        )
        self.llm_retries = Counter(
            "hr_llm_retries",
            "Attempts repeated on the same endpoint after a retryable error.",
            ["endpoint", "role"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "hr_llm_limiter_wait_seconds",
            "Time a model attempt waited for the endpoint's concurrency and pace limiter.",
            ["endpoint", "role"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.rounds = Counter(
            "hr_rounds", "Agent rounds started (forced=true: a forced final answer).", ["forced"], registry=r
        )
        self.tool_calls = Counter(
            "hr_tool_calls",
            "Tool calls by tool, provider, cached and outcome (ok or error).",
            ["tool", "provider", "cached", "outcome"],
            registry=r,
        )
        # No label: the repairs are free text (counts, quoted tags) and would explode the set.
        self.format_recoveries = Counter(
            "hr_format_recoveries", "Repairs the parser made to model outputs to use them.", registry=r
        )
        self.sandbox_runs = Counter(
            "hr_sandbox_runs",
            "PythonInterpreter runs by sandbox and outcome (ok, exit_error, a limit, unavailable).",
            ["sandbox", "outcome"],
            registry=r,
        )
        self.sandbox_seconds = Histogram(
            "hr_sandbox_run_seconds",
            "Time of one sandbox run, as the sandbox measured it.",
            ["sandbox"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.agents_ended = Counter("hr_agents_ended", "Agents that ended, by event.", ["event"], registry=r)
        self.job_attempts = Counter(
            "hr_job_attempts", "Runs of a job begun by this process (every claim is an attempt).", registry=r
        )
        self.jobs_poisoned = Counter(
            "hr_jobs_poisoned",
            "Jobs failed for using up max_attempts (they crashed their workers).",
            registry=r,
        )
        self.jobs_ended = Counter(
            "hr_jobs_ended", "Jobs this process ended, by status.", ["status"], registry=r
        )
        self.webhooks = Counter(
            "hr_webhook_deliveries", "Webhook calls brought to an outcome, by state.", ["state"], registry=r
        )
        self.webhook_attempts = Counter(
            "hr_webhook_attempts",
            "HTTP attempts made to deliver webhooks, by outcome (2xx, 4xx, 5xx, no_response).",
            ["outcome"],
            registry=r,
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: `labels()` validates and locks on every call,
        and the engine counts several things per round."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- feeds ----------------------------------------------------------------------------------
    def llm_attempt(
        self, endpoint: str, role: str, outcome: str, seconds: float, usage: Usage | None = None
    ) -> None:
        self._child(self.llm_attempts, endpoint, role, outcome).inc()
        self._child(self.llm_seconds, endpoint, role).observe(seconds)
        if usage is not None:
            self._child(self.llm_tokens, endpoint, role, "prompt").inc(usage.prompt_tokens)
            self._child(self.llm_tokens, endpoint, role, "completion").inc(usage.completion_tokens)

    def sandbox_run(self, sandbox: str, exit_code: int | None, limit: str | None, seconds: float) -> None:
        outcome = f"limit_{limit}" if limit else ("ok" if exit_code == 0 else "exit_error")
        self.sandbox_runs.labels(sandbox, outcome).inc()
        self.sandbox_seconds.labels(sandbox).observe(seconds)

    def event(self, event: Event) -> None:
        """Count what an appended agent event says happened."""
        data = event.data
        if event.type == EventType.round_started:
            self._child(self.rounds, "true" if data.get("forced") else "false").inc()
        elif event.type == EventType.tool_result:
            self._child(
                self.tool_calls,
                str(data.get("name", "")),
                str(data.get("provider") or ""),
                "true" if data.get("cached") else "false",
                "error" if "error" in data else "ok",
            ).inc()
        elif event.type == EventType.usage:
            recoveries = data.get("format_recoveries")
            if isinstance(recoveries, list) and recoveries:
                self.format_recoveries.inc(len(recoveries))
        elif event.type in (EventType.agent_finished, EventType.agent_failed):
            self._child(self.agents_ended, event.type.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


@lru_cache(maxsize=1)
def engine_metrics() -> EngineMetrics:
    """This process's engine metrics (several engines in one process, as in tests, share them)."""
    return EngineMetrics()
