"""The model's whole tool set through whole jobs over HTTP, on the SIMULATED model: uploads with
`POST /v1/files`, then jobs whose agents call search, visit, google_scholar, PythonInterpreter
(in the embedded sandbox) and parse_file; on the memory backend in-process, and on Redis with
the upload stored by one API process and parsed by a worker process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.procs import Cluster
from tests.redis_server import RedisServer, redis_servers  # noqa: F401  (fixture)
from tests.sample_files import MARKER, SAMPLES
from tests.server import LiveServer, api_settings, live_server, run_to_end
from workers.settings import SandboxSettings
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.tools.python.embedded import EmbeddedSandbox

pytestmark = pytest.mark.anyio

HAS_SANDBOX = EmbeddedSandbox.create(SandboxSettings())[0] is not None
QUESTION = "Which published papers describe Comet Brandvik, and what is 17 * 23?"


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    # min_rounds: the simulated agents keep researching after the files gave them findings.
    settings = api_settings(
        mini_corpus, sim={"min_rounds": 6}, files={"max_bytes": 200_000, "max_files_per_job": 3}
    )
    with live_server(settings) as server:
        yield server


async def upload(client: httpx.AsyncClient, name: str, data: bytes, content_type: str) -> httpx.Response:
    return await client.post("/v1/files", files={"file": (name, data, content_type)})


def called(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["name"] for e in events if e["type"] == "tool.called"]


def results_of(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "tool.result" and e["data"]["name"] == name]


async def test_upload_inspect_delete_and_the_errors(api: LiveServer) -> None:
    name, ctype, data = SAMPLES["pdf"]
    async with api.client() as client:
        created = await upload(client, name, data, ctype)
        assert created.status_code == 201, created.text
        view = created.json()
        assert (view["name"], view["kind"], view["bytes"]) == (name, "pdf", len(data))
        assert view["id"].startswith("file_") and view["expires_at"] > view["created_at"]
        assert (await client.get(f"/v1/files/{view['id']}")).json() == view

        too_big = await upload(client, "big.txt", b"x" * 200_001, "text/plain")
        assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "payload_too_large"
        huge = await upload(client, "huge.txt", b"x" * 400_000, "text/plain")  # refused before reading
        assert huge.status_code == 413
        wrong = await upload(client, "photo.png", b"\x89PNG\r\n", "image/png")
        assert wrong.status_code == 415 and "unsupported file type" in wrong.json()["error"]["message"]
        liar = await upload(client, "fake.pdf", b"hello", "application/pdf")
        assert liar.status_code == 415 and "is not a PDF" in liar.json()["error"]["message"]
        assert (await client.post("/v1/files", data={"other": "x"})).status_code == 422

        unknown = await client.post("/v1/research", json={"query": "q", "files": ["file_nope"]})
        assert (
            unknown.status_code == 404 and unknown.json()["error"]["message"] == "no file with id file_nope"
        )
        many = await client.post("/v1/research", json={"query": "q", "files": ["a", "b", "c", "d"]})
        assert many.status_code == 422 and many.json()["error"]["errors"][0]["path"] == "body.files"

        assert (await client.delete(f"/v1/files/{view['id']}")).status_code == 204
        assert (await client.get(f"/v1/files/{view['id']}")).status_code == 404
        assert (await client.delete(f"/v1/files/{view['id']}")).status_code == 404


@pytest.mark.skipif(not HAS_SANDBOX, reason="no embedded sandbox (bubblewrap) here")
async def test_a_job_uses_all_five_tools(api: LiveServer) -> None:
    async with api.client() as client:
        ids = []
        for kind in ("docx", "csv"):
            name, ctype, data = SAMPLES[kind]
            ids.append((await upload(client, name, data, ctype)).json()["id"])
        created = await client.post(
            "/v1/research", json={"query": QUESTION, "agents": 2, "max_rounds": 10, "files": ids}
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.json()["request"]["files"] == ids
        events = await run_to_end(client, job_id)
        job = (await client.get(f"/v1/research/{job_id}")).json()

    assert events[-1]["type"] == "job.succeeded", events[-1]
    names = called(events)
    assert {"parse_file", "PythonInterpreter", "google_scholar", "search", "visit"} <= set(names), names
    [parsed, *_] = results_of(events, "parse_file")
    assert MARKER in parsed["preview"] and parsed["provider"] == "upload"
    assert [s["title"] for s in parsed["sources"]] == ["ledger.docx", "ledger.csv"]
    assert all(s["url"].startswith("upload://file_") for s in parsed["sources"])
    [python, *_] = results_of(events, "PythonInterpreter")
    assert python["preview"] == "stdout:\n391\n" and python["provider"] == "embedded"
    scholar = results_of(events, "google_scholar")[0]
    assert scholar["provider"] == "local" and scholar["sources"]
    assert "17 * 23 = 391" in job["result"]["answer"]
    assert job["result"]["simulated"] is True


async def test_a_job_gets_only_the_tools_it_names(api: LiveServer) -> None:
    async with api.client() as client:
        created = await client.post(
            "/v1/research",
            json={"query": QUESTION, "agents": 1, "max_rounds": 6, "tools": ["search", "visit"]},
        )
        assert created.status_code == 202, created.text
        events = await run_to_end(client, created.json()["id"])
    assert events[-1]["type"] == "job.succeeded"
    assert set(called(events)) <= {"search", "visit"} and called(events)


async def test_without_files_parse_file_is_not_offered(api: LiveServer) -> None:
    async with api.client() as client:
        body = {
            "query": "Tell me about Comet Brandvik.",
            "agents": 1,
            "max_rounds": 6,
            "tools": ["parse_file", "search", "visit"],
        }
        created = await client.post("/v1/research", json=body)
        events = await run_to_end(client, created.json()["id"])
    assert "parse_file" not in called(events) and events[-1]["type"] == "job.succeeded"


def test_another_tenants_file_is_404_everywhere(mini_corpus: Path) -> None:
    """A file belongs to the tenant that uploaded it; to another it answers exactly like an
    unknown id, on every route and when a job names it. An admin sees it."""
    from tests.test_tenants import ALICE, BOB, ROOT, TENANTS, auth

    name, ctype, data = SAMPLES["txt"]
    with live_server(api_settings(mini_corpus, server={"tenants": TENANTS})) as server:

        async def check() -> None:
            async with server.client() as client:
                uploaded = await client.post(
                    "/v1/files", files={"file": (name, data, ctype)}, headers=auth(BOB)
                )
                assert uploaded.status_code == 201, uploaded.text
                file_id = uploaded.json()["id"]
                assert (await client.get(f"/v1/files/{file_id}", headers=auth(BOB))).status_code == 200
                assert (await client.get(f"/v1/files/{file_id}", headers=auth(ROOT))).status_code == 200
                for response in (
                    await client.get(f"/v1/files/{file_id}", headers=auth(ALICE)),
                    await client.delete(f"/v1/files/{file_id}", headers=auth(ALICE)),
                    await client.post(
                        "/v1/research", json={"query": "q", "files": [file_id]}, headers=auth(ALICE)
                    ),
                ):
                    assert response.status_code == 404
                    assert response.json()["error"]["message"] == f"no file with id {file_id}"
                # The refused DELETE removed nothing.
                assert (await client.get(f"/v1/files/{file_id}", headers=auth(BOB))).status_code == 200

        anyio.run(check)


# -- Redis: the upload through one process, parsed by a worker in another ---------------------------


@pytest.mark.redis
@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAS_SANDBOX, reason="no embedded sandbox (bubblewrap) here")
async def test_on_redis_a_worker_process_uses_all_five_tools_and_parses_a_file_uploaded_elsewhere(
    tmp_path: Path,
    redis_servers: Any,  # noqa: F811
    mini_corpus: Path,
) -> None:
    redis: RedisServer = redis_servers()
    with SimServer(SimConfig(min_rounds=6)) as sim:
        cluster = Cluster(tmp_path / "cluster", redis.url, mini_corpus, sim.openai_base_url)
        try:
            [api_a, api_b] = cluster.start_apis(2)
            cluster.start_workers(1)
            name, ctype, data = SAMPLES["xlsx"]
            async with api_a.client() as client:
                file_id = (await upload(client, name, data, ctype)).json()["id"]
            async with api_b.client() as client:
                assert (await client.get(f"/v1/files/{file_id}")).json()["name"] == name
                body = {"query": QUESTION, "agents": 1, "max_rounds": 10, "files": [file_id]}
                created = await client.post("/v1/research", json=body)
                assert created.status_code == 202, created.text
                events = await run_to_end(client, created.json()["id"])
                job = (await client.get(f"/v1/research/{created.json()['id']}")).json()
        finally:
            cluster.stop()
            print(cluster.report())
    assert events[-1]["type"] == "job.succeeded", events[-1]
    assert {"parse_file", "PythonInterpreter", "google_scholar", "search", "visit"} <= set(called(events))
    [parsed, *_] = results_of(events, "parse_file")
    assert "## Sheet: Ledger" in parsed["preview"] and MARKER in parsed["preview"]
    assert results_of(events, "PythonInterpreter")[0]["preview"] == "stdout:\n391\n"
    assert "17 * 23 = 391" in job["result"]["answer"]
