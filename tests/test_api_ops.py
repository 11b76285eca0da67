"""Operations endpoints: health, readiness, metrics, the web page and the OpenAPI document."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, api_settings, live_server, run_to_end

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, server={"max_query_chars": 1234})) as server:
        yield server


async def test_healthz_says_simulated_loudly(api: LiveServer) -> None:
    async with api.client() as client:
        health = (await client.get("/healthz")).json()
        assert health["status"] == "ok"
        assert health["backend"] == "memory"
        assert health["simulated"] is True
        assert "SIMULATED" in health["message"]
        assert health["version"]
        assert health["corpus_documents"] > 0


async def test_readyz_checks_backend_and_model(api: LiveServer) -> None:
    async with api.client() as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert all(check["ok"] for check in body["checks"].values())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_readyz_is_503_when_the_llm_is_unreachable(mini_corpus: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with live_server(api_settings(mini_corpus, llm={"base_url": url, "model": "m"})) as server:
        async with server.client() as client:
            health = (await client.get("/healthz")).json()
            assert health["simulated"] is False and health.get("message") is None
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["backend"]["ok"] is True
            assert checks["llm"]["ok"] is False
            assert "unreachable" in checks["llm"]["detail"]


async def test_metrics(api: LiveServer) -> None:
    async with api.client() as client:
        job = (await client.post("/v1/research", json={"query": "Where is Aldmere?", "agents": 1})).json()
        await run_to_end(client, job["id"])
        text = (await client.get("/metrics")).text
        assert 'hr_jobs_submitted_total{outcome="created"}' in text
        assert 'hr_jobs{status="succeeded"}' in text
        assert 'hr_sse_events_sent_total{type="job.succeeded"}' in text
        assert "hr_sse_clients 0.0" in text
        assert "hr_queue_depth" in text
        assert 'route="/v1/research/{job_id}/events"' in text


async def test_web_page(api: LiveServer) -> None:
    async with api.client() as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        for needle in (
            "/v1/research",
            "/healthz",
            "SIMULATED MODEL",
            "Wikipedia",
            "CC BY-SA",
            "EventSource",  # events stream through EventSource on a stream token
        ):
            assert needle in html, needle


async def test_openapi_documents_the_contract(api: LiveServer) -> None:
    async with api.client() as client:
        doc = (await client.get("/openapi.json")).json()
        paths = doc["paths"]
        for path in ("/v1/research", "/v1/research/{job_id}", "/v1/research/{job_id}/events", "/healthz"):
            assert path in paths
        create = doc["components"]["schemas"]["ResearchCreate"]
        assert create["additionalProperties"] is False
        assert create["properties"]["query"]["maxLength"] == 1234
        assert create["examples"]
        assert all(prop.get("description") for name, prop in create["properties"].items())
        post = paths["/v1/research"]["post"]
        assert {"202", "409", "422", "429"} <= set(post["responses"])
        assert (
            "text/event-stream" in paths["/v1/research/{job_id}/events"]["get"]["responses"]["200"]["content"]
        )
