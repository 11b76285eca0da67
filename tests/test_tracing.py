"""Traces, end to end: a real `serve` and a real `worker` process on a real redis-server, each
exporting its spans with the file exporter (`tracing.exporter = "file"`, one JSON span per
line), a job submitted over HTTP with the client's own `traceparent`. The spans of both
processes must form one trace: client → request → job → agent → round → model / tool call.

Also: with tracing off a job runs without the `otel` extra (its SDK and exporter are never
imported), and a process with tracing on but without the extra refuses to start, saying what to
install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.procs import ROOT, Cluster, clean_environ
from tests.redis_server import RedisServer, free_port, redis_servers  # noqa: F401  (fixture)
from tests.server import TERMINAL, SSEStream, api_settings, live_server, parse_sse
from workers import tracing
from workers.settings import TracingSettings
from workers.sim.app import SimConfig
from workers.sim.server import SimServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SPANS_TIMEOUT = 30.0

Span = dict[str, Any]


def read_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_spans(path: Path, done: Callable[[list[Span]], bool]) -> list[Span]:
    """The spans exported to `path` once `done` holds for them (the exporter batches)."""
    deadline = time.monotonic() + SPANS_TIMEOUT
    while True:
        spans = read_spans(path)
        if done(spans):
            return spans
        if time.monotonic() > deadline:
            names = [s["name"] for s in spans]
            raise TimeoutError(f"spans in {path} never got there: {names}")
        time.sleep(0.05)


def hex_id(value: str | None) -> str | None:
    return value.removeprefix("0x") if value else None


def span_id(span: Span) -> str:
    value = hex_id(span["context"]["span_id"])
    assert value is not None
    return value


def children(spans: list[Span], parent: Span, name: str | None = None) -> list[Span]:
    return [
        s for s in spans if hex_id(s["parent_id"]) == span_id(parent) and (name is None or s["name"] == name)
    ]


@pytest.fixture
def traced_cluster(
    tmp_path: Path,
    redis_servers: Callable[..., RedisServer],  # noqa: F811
    mini_corpus: Path,
) -> Iterator[Cluster]:
    """One API and one worker process, tracing to api.spans.jsonl and worker.spans.jsonl."""
    redis = redis_servers(appendonly=False)
    sim = SimServer(SimConfig(min_rounds=3))
    sim.start()
    tracing_env = {
        "HR_TRACING__ENABLED": "true",
        "HR_TRACING__EXPORTER": "file",
        # Exported within moments of ending, so the test waits little.
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    cluster = Cluster(tmp_path / "cluster", redis.url, mini_corpus, sim.openai_base_url, env=tracing_env)
    try:
        cluster.env["HR_TRACING__FILE"] = str(tmp_path / "api.spans.jsonl")
        cluster.start_apis(1)
        cluster.env["HR_TRACING__FILE"] = str(tmp_path / "worker.spans.jsonl")
        cluster.start_workers(1)
        yield cluster
    finally:
        cluster.stop()
        sim.stop()
        print(cluster.report())


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.timeout(180)
async def test_one_trace_runs_from_the_client_s_request_to_the_worker_s_model_and_tool_calls(
    traced_cluster: Cluster, tmp_path: Path
) -> None:
    api = traced_cluster.apis[0]
    headers = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    body = {"query": "What is the capital of Valdoria?", "agents": 2, "max_rounds": 6}
    async with api.client() as client:
        response = await client.post("/v1/research", json=body, headers=headers)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        with anyio.fail_after(120):
            async with client.stream("GET", f"/v1/research/{job_id}/events") as stream:
                async for message in parse_sse(stream, SSEStream()):
                    if message.event in TERMINAL:
                        break
        job = (await client.get(f"/v1/research/{job_id}")).json()
    assert job["status"] == "succeeded", job

    api_spans = wait_spans(
        tmp_path / "api.spans.jsonl", lambda spans: any(s["name"] == "POST /v1/research" for s in spans)
    )
    worker_spans = wait_spans(
        tmp_path / "worker.spans.jsonl",
        lambda spans: any(
            s["name"] == "job" and s["attributes"].get("heavyresearch.job.status") for s in spans
        ),
    )

    # The request: a server span continuing the client's trace, in the API process.
    (request,) = [s for s in api_spans if s["name"] == "POST /v1/research"]
    assert hex_id(request["context"]["trace_id"]) == TRACE_ID
    assert hex_id(request["parent_id"]) == CLIENT_SPAN
    assert request["kind"] == "SpanKind.SERVER"
    assert request["attributes"]["http.route"] == "/v1/research"
    assert request["attributes"]["http.response.status_code"] == 202
    assert request["resource"]["attributes"]["service.name"] == "heavyresearch-api"

    # The job: in the worker process, a child of that request (carried through the queue).
    ours = [s for s in worker_spans if s["attributes"].get("heavyresearch.job.id") == job_id]
    assert ours, [s["name"] for s in worker_spans]
    assert {hex_id(s["context"]["trace_id"]) for s in ours} == {TRACE_ID}
    (job_span,) = [s for s in ours if s["name"] == "job"]
    assert hex_id(job_span["parent_id"]) == span_id(request)
    assert job_span["resource"]["attributes"]["service.name"] == "heavyresearch-worker"
    assert job_span["attributes"]["heavyresearch.job.status"] == "succeeded"
    assert job_span["status"]["status_code"] == "UNSET"

    # Its agents, their rounds, and in each round the model call and the tool it called.
    agents = children(ours, job_span, "agent")
    assert sorted(a["attributes"]["heavyresearch.agent"] for a in agents) == [0, 1]
    tools_called: set[str] = set()
    for agent in agents:
        index = agent["attributes"]["heavyresearch.agent"]
        assert agent["attributes"]["heavyresearch.agent.status"] == "finished"
        rounds = children(ours, agent, "round")
        numbers = sorted(r["attributes"]["heavyresearch.round"] for r in rounds)
        assert numbers == list(range(1, agent["attributes"]["heavyresearch.agent.rounds"] + 1))
        assert len(numbers) >= 2
        for round_span in rounds:
            (chat,) = children(ours, round_span, "chat research")
            assert chat["attributes"]["heavyresearch.llm.role"] == "research"
            assert chat["attributes"]["heavyresearch.llm.endpoint"].startswith("http://127.0.0.1:")
            assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0
            for tool in children(ours, round_span):
                if tool["name"].startswith("execute_tool "):
                    tools_called.add(tool["attributes"]["gen_ai.tool.name"])
                    assert tool["attributes"]["heavyresearch.agent"] == index
                    assert (
                        tool["attributes"]["heavyresearch.round"]
                        == round_span["attributes"]["heavyresearch.round"]
                    )
                    assert tool["attributes"]["heavyresearch.tool.provider"] == "local"
    assert {"search", "visit"} <= tools_called

    # The synthesis and its own model call.
    (synthesis,) = children(ours, job_span, "synthesis")
    (chat,) = children(ours, synthesis, "chat synthesis")
    assert chat["attributes"]["heavyresearch.llm.role"] == "synthesis"


@pytest.mark.anyio
async def test_a_react_job_s_spans_in_one_process_reach_an_in_memory_exporter(mini_corpus: Path) -> None:
    exporter = InMemorySpanExporter()
    body = {"query": "What is the capital of Valdoria?", "agents": 1, "max_rounds": 6, "mode": "react"}
    with (
        tracing.installed(TracingSettings(enabled=True), service="test", exporter=exporter),
        live_server(api_settings(mini_corpus)) as server,
    ):
        async with server.client() as client:
            response = await client.post("/v1/research", json=body)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            with anyio.fail_after(60):
                async with client.stream("GET", f"/v1/research/{job_id}/events") as stream:
                    async for message in parse_sse(stream, SSEStream()):
                        if message.event in TERMINAL:
                            assert message.event == "job.succeeded", message.data
                            break
    # The server has stopped: every span of the job has ended.
    spans = exporter.get_finished_spans()

    def only(name: str, parent: ReadableSpan | None = None) -> ReadableSpan:
        found = [
            s
            for s in spans
            if s.name == name
            and (parent is None or (s.parent is not None and s.parent.span_id == parent.context.span_id))
        ]
        assert len(found) == 1, (name, [s.name for s in spans])
        return found[0]

    request = only("POST /v1/research")
    assert request.kind is SpanKind.SERVER
    assert request.parent is None
    events = only("GET /v1/research/{job_id}/events")
    assert events.attributes is not None and events.attributes["http.response.status_code"] == 200
    job = only("job", request)
    assert job.attributes is not None and job.attributes[tracing.JOB_ID] == job_id
    agent = only("agent", job)
    rounds = [
        s for s in spans if s.name == "round" and s.parent and s.parent.span_id == agent.context.span_id
    ]
    assert len(rounds) >= 2
    calls = [s for s in spans if s.parent and s.parent.span_id in {r.context.span_id for r in rounds}]
    assert {s.name for s in calls} >= {"chat research", "execute_tool search"}
    for call in calls:
        assert call.attributes is not None
        assert call.attributes[tracing.JOB_ID] == job_id and call.attributes[tracing.AGENT] == 0
        assert call.status.status_code is StatusCode.UNSET
    # One agent: its answer is the result, no synthesis call.
    assert not [s for s in spans if s.name == "chat synthesis"]
    assert {s.context.trace_id for s in spans if s.name != "GET /v1/research/{job_id}/events"} == {
        request.context.trace_id
    }


@pytest.mark.anyio
async def test_a_model_call_that_fails_ends_its_span_with_the_error(mini_corpus: Path) -> None:
    exporter = InMemorySpanExporter()
    # Nothing listens there: every call fails, and the agent may not wait the outage out.
    down = {
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "model": "m",
        "max_retries": 0,
        "retry_budget": 0,
    }
    settings = api_settings(mini_corpus, llm=down, agent={"outage_budget": 0})
    with (
        tracing.installed(TracingSettings(enabled=True), service="test", exporter=exporter),
        live_server(settings) as server,
    ):
        async with server.client() as client:
            response = await client.post("/v1/research", json={"query": "Capital of Valdoria?", "agents": 1})
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            with anyio.fail_after(60):
                async with client.stream("GET", f"/v1/research/{job_id}/events") as stream:
                    async for message in parse_sse(stream, SSEStream()):
                        if message.event in TERMINAL:
                            break
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat research"]
    assert chats, [s.name for s in spans]
    for chat in chats:
        assert chat.status.status_code is StatusCode.ERROR
        assert chat.attributes is not None and chat.attributes["error.type"] == "RetryableError"
        assert chat.attributes[tracing.JOB_ID] == job_id
    (job,) = [s for s in spans if s.name == "job"]
    assert job.attributes is not None
    assert message.event == "job.failed"
    assert job.attributes["heavyresearch.job.status"] == "failed"


OFF_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import httpx

    from tests.server import api_settings, live_server

    with live_server(api_settings(Path(sys.argv[1]))) as server:
        with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30) as client:
            job = client.post("/v1/research", json={"query": "Capital of Valdoria?", "agents": 2,
                                                     "max_rounds": 4}).json()
            deadline = time.monotonic() + 60
            while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                time.sleep(0.1)  # polling a job in another thread's server
                job = client.get(f"/v1/research/{job['id']}").json()
    loaded = sorted(
        name for name in sys.modules if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))
    )
    print("STATUS", job["status"])
    print("LOADED", ",".join(loaded) or "-")
    """
)


def without_otel_extra(tmp_path: Path) -> dict[str, str]:
    """An environment where the `otel` extra's packages (the SDK, the OTLP exporter) fail to
    import, as when it is not installed. (The OpenTelemetry API itself is always there: FastAPI
    depends on it.) `opentelemetry` is a namespace package, so a regular `opentelemetry.sdk`
    earlier on the path is the one Python finds."""
    root = tmp_path / "without-otel"
    for name in ("sdk", "exporter"):
        package = root / "opentelemetry" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f'raise ImportError("No module named opentelemetry.{name}")\n')
    env = clean_environ()
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(ROOT)])
    return env


def test_with_tracing_off_a_job_runs_without_the_otel_extra(mini_corpus: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, str(mini_corpus)],
        cwd=ROOT,
        env=without_otel_extra(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATUS succeeded" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "LOADED -" in done.stdout, done.stdout


def test_tracing_on_without_the_otel_extra_stops_the_start_and_says_what_to_install(tmp_path: Path) -> None:
    env = without_otel_extra(tmp_path)
    env.update(
        HR_TRACING__ENABLED="true",
        HR_BACKEND="sqlite",
        HR_SQLITE__PATH=str(tmp_path / "jobs.sqlite"),
    )
    for command in (["serve", "--port", "0"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "heavyresearch[otel]" in done.stderr and "HR_TRACING__ENABLED=false" in done.stderr, (
            done.stderr
        )
    assert not (tmp_path / "jobs.sqlite").exists()


def test_the_file_exporter_needs_a_file() -> None:
    env = clean_environ()
    env.update(HR_TRACING__ENABLED="true", HR_TRACING__EXPORTER="file")
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "tracing.file is empty" in done.stderr, done.stderr
