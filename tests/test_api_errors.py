"""Bad input gets a clear 4xx naming what is wrong, always as `{"error": {...}}` JSON; API keys;
a stopping instance refuses new jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server import LiveServer, api_settings, live_server, run_to_end

pytestmark = pytest.mark.anyio

Q = "What is the capital of Valdoria?"


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, server={"max_query_chars": 200})) as server:
        yield server


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "body.query"),
    ({"query": ""}, "body.query"),
    ({"query": "   \n "}, "body.query"),
    ({"query": "x" * 201}, "body.query"),
    ({"query": 42}, "body.query"),
    ({"query": Q, "agents": 0}, "body.agents"),
    ({"query": Q, "agents": 17}, "body.agents"),
    ({"query": Q, "agents": "many"}, "body.agents"),
    ({"query": Q, "max_rounds": 0}, "body.max_rounds"),
    ({"query": Q, "max_rounds": 257}, "body.max_rounds"),
    ({"query": Q, "model": ""}, "body.model"),
    ({"query": Q, "tools": ["search", "browse"]}, "body.tools.1"),
    ({"query": Q, "tools": []}, "body.tools"),
    ({"query": Q, "tools": "search"}, "body.tools"),
    ({"query": Q, "max_tokens": 999}, "body.max_tokens"),
    ({"query": Q, "max_seconds": 0}, "body.max_seconds"),
    ({"query": Q, "max_seconds": 86_401}, "body.max_seconds"),
    ({"query": Q, "angles": ["a"] * 17}, "body.angles"),
    # The schema shows these item limits, so the error names the item.
    ({"query": Q, "angles": ["fine", "  "]}, "body.angles.1"),
    ({"query": Q, "angles": ["x" * 501]}, "body.angles.0"),
    ({"query": Q, "webhook_url": "ftp://example.com/hook"}, "body.webhook_url"),
    ({"query": Q, "webhook_url": "not a url"}, "body.webhook_url"),
    ({"query": Q, "metadata": {"blob": "x" * 9000}}, "body.metadata"),
    ({"query": Q, "metadata": ["not", "an", "object"]}, "body.metadata"),
    ({"query": Q, "stream": "perhaps"}, "body.stream"),
    ({"query": Q, "agnets": 4}, "body.agnets"),
    (["not", "an", "object"], "body"),
]


@pytest.mark.parametrize(("body", "path"), BAD_BODIES, ids=[p + ":" + repr(b)[:30] for b, p in BAD_BODIES])
async def test_invalid_bodies_are_422_naming_the_field(api: LiveServer, body: Any, path: str) -> None:
    async with api.client() as client:
        error = error_of(await client.post("/v1/research", json=body), 422)
        assert error["type"] == "validation_error"
        assert path in [e["path"] for e in error["errors"]], error
        assert path in error["message"]


async def test_malformed_json_is_422(api: LiveServer) -> None:
    async with api.client() as client:
        response = await client.post(
            "/v1/research", content=b'{"query": "unterminated', headers={"Content-Type": "application/json"}
        )
        error = error_of(response, 422)
        assert error["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("method", "url", "headers", "path"),
    [
        ("GET", "/v1/research?limit=0", {}, "query.limit"),
        ("GET", "/v1/research?limit=101", {}, "query.limit"),
        ("GET", "/v1/research?status=finished", {}, "query.status"),
        ("GET", "/v1/research/job_x/events?after=-1", {}, "query.after"),
        ("GET", "/v1/research/job_x/events", {"Last-Event-ID": "abc"}, "header.last-event-id"),
        ("POST", "/v1/research", {"Idempotency-Key": "k" * 256}, "header.idempotency-key"),
    ],
)
async def test_invalid_parameters_are_422(
    api: LiveServer, method: str, url: str, headers: dict[str, str], path: str
) -> None:
    async with api.client() as client:
        response = await client.request(method, url, headers=headers, json={"query": Q})
        error = error_of(response, 422)
        assert path in [e["path"] for e in error["errors"]], error


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/research/job_unknown"),
        ("POST", "/v1/research/job_unknown/cancel"),
        ("DELETE", "/v1/research/job_unknown"),
        ("GET", "/v1/research/job_unknown/events"),
        ("GET", "/v1/nothing-here"),
    ],
)
async def test_unknown_things_are_404(api: LiveServer, method: str, url: str) -> None:
    async with api.client() as client:
        error = error_of(await client.request(method, url), 404)
        assert error["type"] == "not_found"


async def test_wrong_method_is_405_json(api: LiveServer) -> None:
    async with api.client() as client:
        error = error_of(await client.put("/v1/research"), 405)
        assert error["type"] == "method_not_allowed"


async def test_oversized_body_is_413(api: LiveServer) -> None:
    async with api.client() as client:
        error = error_of(await client.post("/v1/research", json={"query": "x" * 300_000}), 413)
        assert error["type"] == "payload_too_large"

        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 10_000

        chunked = await client.post(
            "/v1/research", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert error_of(chunked, 413)["type"] == "payload_too_large"


async def test_a_stopping_instance_takes_no_new_jobs(mini_corpus: Path) -> None:
    with live_server(api_settings(mini_corpus)) as server:
        async with server.client() as client:
            job = (await client.post("/v1/research", json={"query": Q, "agents": 1})).json()
            server.app.state.lifecycle.begin_shutdown()
            refused = await client.post("/v1/research", json={"query": Q})
            error = error_of(refused, 503)
            assert error["type"] == "shutting_down"
            assert int(refused.headers["retry-after"]) > 0
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["accepting_jobs"]["ok"] is False
            # What is already accepted still runs and can still be read.
            assert (await run_to_end(client, job["id"]))[-1]["type"] == "job.succeeded"


async def test_api_keys(mini_corpus: Path) -> None:
    settings = api_settings(mini_corpus, server={"api_keys": ["key-one", "key-two"]})
    with live_server(settings) as server:
        async with server.client() as client:
            missing = await client.post("/v1/research", json={"query": Q})
            assert error_of(missing, 401)["type"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await client.get("/v1/research", headers={"Authorization": "Bearer nope"})
            assert error_of(wrong, 401)["type"] == "unauthorized"
            # Authentication comes before validation: no hints to anonymous callers.
            assert (await client.post("/v1/research", json={})).status_code == 401

            one = {"Authorization": "Bearer key-one", "Idempotency-Key": "same"}
            two = {"Authorization": "Bearer key-two", "Idempotency-Key": "same"}
            first = await client.post("/v1/research", json={"query": Q, "agents": 1}, headers=one)
            assert first.status_code == 202
            # Idempotency keys are per API key: another caller's "same" is another job.
            second = await client.post("/v1/research", json={"query": Q, "agents": 1}, headers=two)
            assert second.status_code == 202 and second.json()["id"] != first.json()["id"]
            assert (await client.get(f"/v1/research/{first.json()['id']}", headers=one)).status_code == 200

            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/")).status_code == 200
