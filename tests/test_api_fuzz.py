"""Schemathesis fuzzes every operation of the OpenAPI document against the live server, with
inputs that fit the schema and inputs that break it: no input may produce a 5xx, and every
error must come back in the `{"error": {...}}` shape.

The event stream is left out: it is endless until its job ends, which a fuzzer cannot wait on
(its own tests cover it). Jobs the fuzzer submits run for real, on the fast simulated model.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server import LiveServer, api_settings
from tests.test_webhooks import StubResolver
from workers.net.ssrf import IPAddress

# A dev dependency; skipped (and named in the summary) where an environment lacks it.
schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_OPERATION = 12
SKIPPED = {("GET", "/v1/research/{job_id}/events")}


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    # Room for every job the fuzzer starts, so a streaming POST never waits behind a queue.
    # The budget check (a job's max_tokens against its agent count, max_seconds against the
    # time kept for finishing) is a cross-field rule the schema does not show; these settings
    # keep every budget the schema allows usable, so the run tests the rest of the contract.
    budget = {
        "min_research_seconds": 0,
        "forced_round_tokens": 64,
        "forced_completion_tokens": 32,
        "synthesis_tokens": 64,
        "synthesis_completion_tokens": 32,
        "min_round_tokens": 64,
    }
    settings_ = api_settings(
        mini_corpus,
        worker={"max_jobs": 64},
        agent={"max_rounds_limit": 8, "default_max_rounds": 8, "max_agents": 4},
        budget=budget,
    )
    server = LiveServer(settings_)
    # No DNS query leaves the machine: at submit every generated name resolves to a public
    # address (so a schema-valid webhook_url is accepted), at delivery to none (so nothing is
    # called).
    server.app.state.resolver = PublicResolver()
    server.app.state.webhook_resolver = StubResolver({})
    server.start()
    try:
        yield server
    finally:
        server.stop()


class PublicResolver:
    """Every name is a documentation-free public address; nothing is ever looked up."""

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.215.14")]


def operations(server: LiveServer) -> list[Any]:
    document = httpx.get(f"{server.base_url}/openapi.json", trust_env=False).json()
    schema = schemathesis.openapi.from_dict(document)
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in SKIPPED:
            found.append(operation)
    return found


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_makes_a_server_error(api: LiveServer, mode: str) -> None:
    ops = operations(api)
    assert len(ops) >= 8
    generation = schemathesis.GenerationMode(mode)
    strategy = st.one_of(*(op.as_strategy(generation_mode=generation) for op in ops))

    @settings(
        max_examples=EXAMPLES_PER_OPERATION * len(ops),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=api.base_url, timeout=60)
        assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["type"], (case.as_curl_command(), body)

    fuzz()


def test_the_api_passes_every_schemathesis_check(api: LiveServer, tmp_path: Path) -> None:
    """The whole contract, as an integrator's tooling sees it: every built-in check (status
    codes, content types, headers, response schemas, `Allow`, negative data rejected,
    positive data accepted, …) over every phase, the stateful one included."""
    cli = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    # One documented exception: an upload's type is checked against its bytes (a PDF must
    # start like one), which no schema can say, so a schema-valid upload may get a 415.
    config.write_text(
        "[[operations]]\n"
        'include-path = "/v1/files"\n'
        'include-method = "POST"\n'
        "checks.positive_data_acceptance.expected-statuses = "
        '["2xx", "3xx", "401", "403", "404", "409", "415", "429", "5xx"]\n'
    )
    proc = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(config),
            "run",
            f"{api.base_url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            "8",
            "--no-color",
            "--request-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
