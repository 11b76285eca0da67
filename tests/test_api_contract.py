"""The exact contract integrators rely on, point by point (schemathesis finds these too; these
tests name each one): content types, body errors, `Allow`, cursors, echoed input, redaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, api_settings, live_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus, webhooks={"allow_hosts": ["127.0.0.1"]})) as server:
        yield server


async def test_bodies_must_be_json_and_unparseable_ones_get_the_invalid_json_answer(api: LiveServer) -> None:
    async with api.client() as client:
        form = await client.post("/v1/research", data={"query": "q"})
        assert form.status_code == 415 and form.json()["error"]["type"] == "unsupported_media_type"
        plain = await client.post(
            "/v1/research", content=b'{"query": "q"}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        invalid = await client.post(
            "/v1/research", content=b"{", headers={"Content-Type": "application/json"}
        )
        binary = await client.post(
            "/v1/research", content=b"\xff\xfe\x00garbage", headers={"Content-Type": "application/json"}
        )
        for response in (invalid, binary):
            assert response.status_code == 422, response.text
            assert response.json()["error"]["type"] == "validation_error"
            assert response.json()["error"]["errors"][0]["type"] == "json_invalid"
        # Bodiless POSTs need no content type.
        assert (await client.post("/v1/research/job_000000000000aaaaaaaaaa/cancel")).status_code == 404


async def test_what_the_schema_allows_the_server_accepts_and_the_reverse(api: LiveServer) -> None:
    async with api.client() as client:
        for body in ({"query": "q", "angles": [""]}, {"query": "   "}, {"query": "q", "agents": "2"}):
            assert (await client.post("/v1/research", json=body)).status_code == 422, body
        document = (await client.get("/openapi.json")).json()
        body_schema = document["components"]["schemas"]["ResearchCreate"]["properties"]
        angle = body_schema["angles"]["anyOf"][0]["items"]
        assert angle["minLength"] == 1 and angle["pattern"] == r"\S"
        assert body_schema["query"]["pattern"] == r"\S"
        events = document["paths"]["/v1/research/{job_id}/events"]["get"]["responses"]["200"]["content"]
        assert list(events) == ["text/event-stream"]
        assert events["text/event-stream"]["schema"]["required"] == ["event", "id", "data"]
        accepted = await client.post("/v1/research", json={"query": "q", "agents": 1, "max_rounds": 2.0})
        assert accepted.status_code == 202, accepted.text


async def test_allow_names_every_method_of_the_path(api: LiveServer) -> None:
    async with api.client() as client:
        item = await client.request("PATCH", "/v1/research/job_000000000000aaaaaaaaaa")
        assert item.status_code == 405 and item.headers["allow"] == "DELETE, GET"
        collection = await client.request("PUT", "/v1/research")
        assert collection.status_code == 405 and collection.headers["allow"] == "GET, POST"


async def test_garbage_cursors_are_422_and_long_ids_are_not_echoed(api: LiveServer) -> None:
    async with api.client() as client:
        bad = await client.get("/v1/research", params={"cursor": "'; DROP TABLE"})
        assert bad.status_code == 422 and bad.json()["error"]["errors"][0]["path"] == "query.cursor"
        long_id = "x" * 10_000
        missing = await client.get(f"/v1/research/{long_id}")
        assert missing.status_code == 404 and len(missing.text) < 300


async def test_the_job_view_never_shows_webhook_secrets(api: LiveServer) -> None:
    url = "http://user:hunter2@127.0.0.1:9/hook?token=s3cret&kind=done&api_key=k&sig=abc"
    async with api.client() as client:
        created = await client.post("/v1/research", json={"query": "q", "agents": 1, "webhook_url": url})
        assert created.status_code == 202, created.text
        fetched = await client.get(created.headers["location"])
        for text in (created.text, fetched.text):
            assert "hunter2" not in text and "s3cret" not in text and "user:" not in text
        shown = fetched.json()["request"]["webhook_url"]
        assert (
            shown == "http://REDACTED@127.0.0.1:9/hook?token=REDACTED&kind=done&api_key=REDACTED&sig=REDACTED"
        )
