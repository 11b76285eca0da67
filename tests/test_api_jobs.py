"""The job API end to end over real HTTP: submit, stream, fetch, list, idempotency, cancel,
delete, queue limits. The engine runs in the server process on the SIMULATED model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import (
    LiveServer,
    api_settings,
    live_server,
    read_stream,
    run_to_end,
    wait_for_event,
)

pytestmark = pytest.mark.anyio

QUESTION = "What is the tallest mountain in Valdoria?"


@pytest.fixture(scope="module")
def api(mini_corpus: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(mini_corpus)) as server:
        yield server


@pytest.fixture(scope="module")
def slow_api(mini_corpus: Path) -> Iterator[LiveServer]:
    """Model calls take 0.2 s, so a job runs long enough to be caught mid-flight."""
    with live_server(api_settings(mini_corpus, sim={"latency": 0.2})) as server:
        yield server


@pytest.fixture(scope="module")
def one_slot_api(mini_corpus: Path) -> Iterator[LiveServer]:
    """One job runs, one may wait, the next is refused."""
    settings = api_settings(
        mini_corpus,
        sim={"latency": 0.3},
        server={"max_queued_jobs": 1},
        worker={"max_jobs": 1},
    )
    with live_server(settings) as server:
        yield server


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/research", json={"query": QUESTION, **body})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_whole_lifecycle(api: LiveServer) -> None:
    async with api.client() as client:
        response = await client.post("/v1/research", json={"query": QUESTION, "agents": 3})
        assert response.status_code == 202, response.text
        job = response.json()
        job_id = job["id"]
        assert response.headers["location"] == f"/v1/research/{job_id}"
        assert job["links"] == {
            "self": f"/v1/research/{job_id}",
            "events": f"/v1/research/{job_id}/events",
            "cancel": f"/v1/research/{job_id}/cancel",
        }
        assert job["status"] == "queued"
        assert job["simulated"] is True
        assert job["request"]["agents"] == 3 and job["request"]["max_rounds"] == 32
        assert [a["agent"] for a in job["agents"]] == [0, 1, 2]

        events = await run_to_end(client, job_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "job.queued"
        assert events[-1]["type"] == "job.succeeded"
        assert all(e["job_id"] == job_id and e["ts"] > 0 for e in events)
        types = {e["type"] for e in events}
        assert {"job.started", "agent.started", "round.started", "tool.called", "agent.finished"} <= types

        done = (await client.get(f"/v1/research/{job_id}")).json()
        assert done["status"] == "succeeded"
        result = done["result"]
        assert result["answer"].strip()
        assert result["report"].strip()
        assert result["sources"], result
        assert all(s["url"].startswith("http") and isinstance(s["id"], int) for s in result["sources"])
        assert result["simulated"] is True
        assert result["synthesis"] in {"model", "majority", "single"}
        assert [a["status"] for a in done["agents"]] == ["finished"] * 3
        assert all(a["rounds"] >= 1 for a in done["agents"])
        assert done["usage"]["total_tokens"] > 0 and done["usage"]["calls"] > 0
        timings = done["timings"]
        assert timings["created_at"] <= timings["started_at"] <= timings["finished_at"]
        assert timings["duration_seconds"] >= 0
        assert done["error"] is None


async def test_stream_true_on_post_streams_the_job(api: LiveServer) -> None:
    async with api.client() as client:
        stream = await read_stream(
            client, "/v1/research", method="POST", json_body={"query": QUESTION, "agents": 2, "stream": True}
        )
        assert stream.ended
        types = [m.event for m in stream.messages]
        assert types[0] == "job.queued" and types[-1] == "job.succeeded"
        assert [int(m.id or 0) for m in stream.messages] == list(range(1, len(types) + 1))
        job_id = stream.events[0]["job_id"]
        assert (await client.get(f"/v1/research/{job_id}")).json()["status"] == "succeeded"


async def test_accept_event_stream_on_post_streams_the_job(api: LiveServer) -> None:
    async with api.client() as client:
        async with client.stream(
            "POST",
            "/v1/research",
            json={"query": QUESTION, "agents": 1},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            job_id = response.headers["x-job-id"]
            assert response.headers["location"] == f"/v1/research/{job_id}"
            body = (await response.aread()).decode()
        assert "event: job.queued" in body and "event: job.succeeded" in body


async def test_idempotency_key_replays_the_same_job(api: LiveServer) -> None:
    async with api.client() as client:
        headers = {"Idempotency-Key": "order-7781"}
        first = await client.post("/v1/research", json={"query": QUESTION, "agents": 2}, headers=headers)
        assert first.status_code == 202
        again = await client.post("/v1/research", json={"query": QUESTION, "agents": 2}, headers=headers)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]

        # Spelling out a server default is the same request.
        spelled = await client.post(
            "/v1/research", json={"query": QUESTION, "agents": 2, "max_rounds": 32}, headers=headers
        )
        assert spelled.status_code == 200 and spelled.json()["id"] == first.json()["id"]

        other = await client.post("/v1/research", json={"query": QUESTION, "agents": 3}, headers=headers)
        assert other.status_code == 409
        error = other.json()["error"]
        assert error["type"] == "conflict" and "Idempotency-Key" in error["message"]

        without = await client.post("/v1/research", json={"query": QUESTION, "agents": 2})
        assert without.status_code == 202 and without.json()["id"] != first.json()["id"]


async def test_list_newest_first_with_cursor_and_status(api: LiveServer) -> None:
    async with api.client() as client:
        ids = [(await submit(client, agents=1, metadata={"n": n}))["id"] for n in range(3)]
        for job_id in ids:
            await run_to_end(client, job_id)
        page = (await client.get("/v1/research", params={"limit": 2})).json()
        assert [item["id"] for item in page["items"]] == ids[::-1][:2]
        assert page["next_cursor"] == ids[1]
        rest = (await client.get("/v1/research", params={"limit": 2, "cursor": page["next_cursor"]})).json()
        assert rest["items"][0]["id"] == ids[0]
        assert all(item["links"]["self"] == f"/v1/research/{item['id']}" for item in rest["items"])

        everything = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "status": "succeeded"}
            if cursor:
                params["cursor"] = cursor
            listing = (await client.get("/v1/research", params=params)).json()
            everything += listing["items"]
            cursor = listing["next_cursor"]
            if cursor is None:
                break
        assert set(ids) <= {item["id"] for item in everything}
        assert all(item["status"] == "succeeded" for item in everything)
        assert (await client.get("/v1/research", params={"status": "cancelled"})).json()["items"] == []


async def test_cancel_during_a_run_stops_every_agent(slow_api: LiveServer) -> None:
    async with slow_api.client() as client:
        job = await submit(client, agents=3)
        job_id = job["id"]
        await wait_for_event(client, job_id, "round.started")

        cancel = await client.post(f"/v1/research/{job_id}/cancel")
        assert cancel.status_code in (200, 202), cancel.text
        assert cancel.json()["cancel_requested"] is True

        events = await run_to_end(client, job_id)
        assert events[-1]["type"] == "job.cancelled"
        assert not any(e["type"] == "job.succeeded" for e in events)

        cancelled = (await client.get(f"/v1/research/{job_id}")).json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["result"] is None
        assert cancelled["timings"]["finished_at"] is not None
        rounds = {a["agent"]: a["rounds"] for a in cancelled["agents"]}

        # Let time pass the observable way: a whole other job runs on the same server.
        other = await submit(client, agents=1)
        assert (await run_to_end(client, other["id"]))[-1]["type"] == "job.succeeded"

        later = (await client.get(f"/v1/research/{job_id}")).json()
        assert {a["agent"]: a["rounds"] for a in later["agents"]} == rounds
        replay = await run_to_end(client, job_id)
        assert replay == events, "events were appended after job.cancelled"

        again = await client.post(f"/v1/research/{job_id}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_a_cancelled_job_reports_its_agents_cancelled_and_counts_their_tokens(
    slow_api: LiveServer,
) -> None:
    async with slow_api.client() as client:
        job = await submit(client, agents=2)
        await wait_for_event(client, job["id"], "usage")  # a round's tokens are spent
        assert (await client.post(f"/v1/research/{job['id']}/cancel")).status_code in (200, 202)
        assert (await run_to_end(client, job["id"]))[-1]["type"] == "job.cancelled"

        view = (await client.get(f"/v1/research/{job['id']}")).json()
    statuses = [agent["status"] for agent in view["agents"]]
    assert statuses and "running" not in statuses and "pending" not in statuses
    assert "cancelled" in statuses
    spent = sum(agent["usage"]["total_tokens"] for agent in view["agents"])
    assert spent > 0
    assert view["usage"]["total_tokens"] == spent


async def test_queue_full_is_429_and_queued_jobs_cancel_at_once(one_slot_api: LiveServer) -> None:
    async with one_slot_api.client() as client:
        running = await submit(client, agents=2)
        await wait_for_event(client, running["id"], "job.started")
        waiting = await submit(client, agents=1)

        refused = await client.post("/v1/research", json={"query": QUESTION})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) > 0
        error = refused.json()["error"]
        assert error["type"] == "queue_full" and error["retry_after"] > 0

        # A queued job is cancelled on the spot: no worker has to pick it up first.
        cancel = await client.post(f"/v1/research/{waiting['id']}/cancel")
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "cancelled"
        assert (await run_to_end(client, waiting["id"]))[-1]["data"]["reason"] == "cancelled while queued"

        deleting = await client.delete(f"/v1/research/{running['id']}")
        assert deleting.status_code == 409
        assert "cancel it before deleting it" in deleting.json()["error"]["message"]

        assert (await run_to_end(client, running["id"]))[-1]["type"] == "job.succeeded"
        deleted = await client.delete(f"/v1/research/{running['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert (await client.get(f"/v1/research/{running['id']}")).status_code == 404
        assert (await client.delete(f"/v1/research/{running['id']}")).status_code == 404

        # Room again once the queue drained.
        accepted = await submit(client, agents=1)
        await run_to_end(client, accepted["id"])


async def test_running_job_shows_live_agent_progress(slow_api: LiveServer) -> None:
    async with slow_api.client() as client:
        job = await submit(client, agents=2)
        # An agent's round 1 checkpoint is saved before its round 2 starts.
        await wait_for_event(client, job["id"], "round.started", round_=2)
        live = (await client.get(f"/v1/research/{job['id']}")).json()
        assert live["status"] in ("running", "synthesizing", "succeeded")
        assert len(live["agents"]) == 2
        assert any(a["rounds"] >= 1 for a in live["agents"])
        await client.post(f"/v1/research/{job['id']}/cancel")
        await run_to_end(client, job["id"])
