"""The SSE event stream: exact replay, resumption with Last-Event-ID or ?after=, many clients,
keep-alive, and disconnects that leave the job alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.server import (
    LiveServer,
    SSEStream,
    api_settings,
    live_server,
    read_stream,
    run_to_end,
)

pytestmark = pytest.mark.anyio

QUESTION = "Who founded the city of Aldmere?"


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    # Calls take 0.1 s: streams are read while the job is still producing events.
    settings = api_settings(mini_corpus, sim={"latency": 0.1}, server={"sse_keepalive": 0.2})
    with live_server(settings) as server:
        yield server


async def submit(client: httpx.AsyncClient, agents: int = 3) -> str:
    response = await client.post("/v1/research", json={"query": QUESTION, "agents": agents})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


async def test_resume_mid_run_with_last_event_id_and_after(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client)
        path = f"/v1/research/{job_id}/events"
        first = await read_stream(client, path, limit=3)
        assert not first.ended and seqs(first.events) == [1, 2, 3]
        second = await read_stream(client, path, headers={"Last-Event-ID": "3"}, limit=4)
        assert seqs(second.events) == [4, 5, 6, 7]
        rest = await read_stream(client, f"{path}?after=7")
        assert rest.ended

        stitched = first.events + second.events + rest.events
        whole = await run_to_end(client, job_id)
        assert stitched == whole
        assert whole[-1]["type"] == "job.succeeded"


async def test_reconnect_after_k_events_gets_exactly_the_rest(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client, agents=2)
        path = f"/v1/research/{job_id}/events"
        whole = await run_to_end(client, job_id)
        total = len(whole)
        for k in sorted({0, 1, 2, total // 2, total - 1, total}):
            cut = await read_stream(client, path, limit=k)
            assert seqs(cut.events) == list(range(1, k + 1))
            by_header = await read_stream(client, path, headers={"Last-Event-ID": str(k)})
            by_query = await read_stream(client, f"{path}?after={k}")
            for resumed in (by_header, by_query):
                assert resumed.ended
                assert resumed.events == whole[k:], k
        # A reconnecting browser sends Last-Event-ID and repeats its original URL: the header wins.
        both = await read_stream(client, f"{path}?after=1", headers={"Last-Event-ID": str(total - 2)})
        assert both.events == whole[total - 2 :]


async def test_sse_framing(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client, agents=1)
        stream = await read_stream(client, f"/v1/research/{job_id}/events")
        for message in stream.messages:
            event = message.json
            assert message.id == str(event["seq"])
            assert message.event == event["type"]
            assert event["job_id"] == job_id
        agent_events = [e for e in stream.events if e["type"] == "round.started"]
        assert agent_events and all(e["agent"] == 0 and e["round"] >= 1 for e in agent_events)


async def test_ten_clients_get_the_identical_sequence(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client, agents=4)
        results: list[SSEStream] = []

        async def one() -> None:
            results.append(await read_stream(client, f"/v1/research/{job_id}/events"))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert len(results) == 10
        reference = results[0].events
        assert reference[-1]["type"] == "job.succeeded"
        assert seqs(reference) == list(range(1, len(reference) + 1))
        assert all(r.ended and r.events == reference for r in results)


async def test_disconnecting_clients_never_stop_the_job(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client, agents=2)
        for _ in range(5):
            await read_stream(client, f"/v1/research/{job_id}/events", limit=2)
        events = await run_to_end(client, job_id)
        assert events[-1]["type"] == "job.succeeded"


async def test_keepalive_comments_while_idle(api: LiveServer) -> None:
    async with api.client() as client:
        # One agent makes at least three model calls of 0.1 s each, so its stream stays open
        # past the 0.2 s keep-alive interval at least once.
        job_id = await submit(client, agents=1)
        stream = await read_stream(client, f"/v1/research/{job_id}/events")
        assert stream.ended
        assert stream.comments >= 1


async def test_unknown_job_is_404_before_streaming(api: LiveServer) -> None:
    async with api.client() as client:
        response = await client.get("/v1/research/job_nope/events", headers={"Accept": "text/event-stream"})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["type"] == "not_found"


async def test_a_deleted_job_has_no_events(api: LiveServer) -> None:
    async with api.client() as client:
        job_id = await submit(client, agents=1)
        await run_to_end(client, job_id)
        assert (await client.delete(f"/v1/research/{job_id}")).status_code == 204
        assert (await client.get(f"/v1/research/{job_id}/events")).status_code == 404
