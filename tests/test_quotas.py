"""Tenant quotas over real HTTP: enforced across two API servers on one Redis (separate apps
and pools, as two processes), changed at run time by an admin with no restart, shown in
`GET /v1/usage` and `/metrics`. The tokens-per-day quota runs jobs for real on the SIMULATED
model (memory backend, engine in-process)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import httpx
import pytest

from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.server import api_settings, live_server, run_to_end, wait_for_event
from tests.test_tenants import ALICE, BOB, ROOT, TENANTS, auth

pytestmark = pytest.mark.anyio

Q = "Who founded Aldmere?"
BODY = {"query": Q, "agents": 1, "max_rounds": 4}


def quota_error(response: httpx.Response, quota: str) -> str:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "quota_exceeded" and error["quota"] == quota
    assert quota in error["message"]
    assert int(response.headers["Retry-After"]) > 0
    message: str = error["message"]
    return message


@pytest.mark.redis
async def test_queued_quota_holds_across_two_api_processes_and_changes_without_restart(
    mini_corpus: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    tenants = [dict(t) for t in TENANTS]
    tenants[0]["quotas"] = {"max_queued_jobs": 3, "max_agent_rounds": 8}
    # API only, no worker: every admitted job stays queued.
    settings = api_settings(
        mini_corpus,
        backend="redis",
        redis_url=redis_server.url,
        redis_prefix=f"t{os.urandom(4).hex()}",
        server={"tenants": tenants},
    )
    with live_server(settings) as one, live_server(settings) as two:
        async with one.client() as a, two.client() as b:
            outcomes: list[int] = []

            async def submit(client: httpx.AsyncClient) -> None:
                response = await client.post("/v1/research", json=BODY, headers=auth(ALICE))
                outcomes.append(response.status_code)

            # Ten submits at once, half through each process: exactly the quota gets in.
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(submit, a if i % 2 else b)
            assert sorted(outcomes) == [202] * 3 + [429] * 7

            refused = await b.post("/v1/research", json=BODY, headers=auth(ALICE))
            assert "3 jobs waiting" in quota_error(refused, "max_queued_jobs")
            # Other tenants are not held to alice's quota.
            assert (await a.post("/v1/research", json=BODY, headers=auth(BOB))).status_code == 202
            too_big = await a.post("/v1/research", json={**BODY, "agents": 3}, headers=auth(ALICE))
            quota_error(too_big, "max_agent_rounds")

            usage = (await a.get("/v1/usage", headers=auth(ALICE))).json()
            assert (usage["tenant"], usage["queued_jobs"], usage["jobs_today"]) == ("alice", 3, 3)
            assert usage["quotas"]["max_queued_jobs"] == 3

            # Only an admin changes quotas, and the change holds on the other process at once.
            raised = {"max_queued_jobs": 4, "max_agent_rounds": 0}
            assert (
                await b.put("/v1/tenants/alice/quotas", json=raised, headers=auth(BOB))
            ).status_code == 403
            changed = await b.put("/v1/tenants/alice/quotas", json=raised, headers=auth(ROOT))
            assert changed.status_code == 200, changed.text
            assert (await a.post("/v1/research", json=BODY, headers=auth(ALICE))).status_code == 202
            quota_error(await a.post("/v1/research", json=BODY, headers=auth(ALICE)), "max_queued_jobs")
            assert (
                await a.get("/v1/usage", params={"tenant": "bob"}, headers=auth(ALICE))
            ).status_code == 403
            bobs = (await a.get("/v1/usage", params={"tenant": "alice"}, headers=auth(ROOT))).json()
            assert bobs["queued_jobs"] == 4

            metrics = (await a.get("/metrics")).text
            assert 'hr_quota_refusals_total{quota="max_queued_jobs",tenant="alice"}' in metrics


async def test_tokens_per_day_and_running_jobs(mini_corpus: Path) -> None:
    tenants = [dict(t) for t in TENANTS]
    tenants[0]["quotas"] = {"max_tokens_per_day": 1}
    tenants[1]["quotas"] = {"max_running_jobs": 1}
    settings = api_settings(mini_corpus, sim={"latency": 0.3}, server={"tenants": tenants})
    with live_server(settings) as server:
        async with server.client(headers=auth(ALICE)) as alice, server.client(headers=auth(BOB)) as bob:
            first = await alice.post("/v1/research", json=BODY)
            assert first.status_code == 202
            # Still under the quota while the first job runs: its tokens count when it ends.
            await run_to_end(alice, first.json()["id"])
            usage = (await alice.get("/v1/usage")).json()
            assert usage["tokens_today"] > 0
            assert "tokens today" in quota_error(
                await alice.post("/v1/research", json=BODY), "max_tokens_per_day"
            )
            metrics = (await alice.get("/metrics")).text
            assert 'hr_tenant_tokens_today{tenant="alice"}' in metrics

            running = await bob.post("/v1/research", json=BODY)
            job_id = running.json()["id"]
            await wait_for_event(bob, job_id, "job.started")
            quota_error(await bob.post("/v1/research", json=BODY), "max_running_jobs")
            await bob.post(f"/v1/research/{job_id}/cancel")
            await run_to_end(bob, job_id)
            assert (await bob.post("/v1/research", json=BODY)).status_code == 202
