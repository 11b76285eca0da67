"""Tenant isolation over real HTTP, on both backends: another tenant's job does not exist for
you (404 on every route, absent from the list, its idempotency keys not yours), admins see
all, stream tokens open one job's events to a browser. On Redis the two tenants talk to two
API servers sharing one Redis (separate apps and connection pools, as two processes would);
no worker runs there, so jobs stay queued until cancelled."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.stream_tokens import StreamTokens
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.server import LiveServer, api_settings, live_server, read_stream

pytestmark = pytest.mark.anyio

Q = "What is the tallest mountain in Valdoria?"
SECRET = "stream-token-secret-for-tests"
ALICE, BOB, ROOT = "alice-key-0001", "bob-key-0002", "root-key-0003"
TENANTS = [
    {"tenant": "alice", "key_sha256": hashlib.sha256(ALICE.encode()).hexdigest()},
    {"tenant": "bob", "key": BOB},
    {"tenant": "ops", "key_sha256": hashlib.sha256(ROOT.encode()).hexdigest(), "role": "admin"},
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Pair:
    """Where alice and bob (and the admin) send their requests."""

    alice: LiveServer
    bob: LiveServer
    kind: str


def tenant_settings(corpus: Path, **extra: Any) -> Any:
    server = {"tenants": TENANTS, "stream_token_secret": SECRET, **extra.pop("server", {})}
    return api_settings(corpus, server=server, **extra)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def pair(request: pytest.FixtureRequest, mini_corpus: Path) -> Iterator[Pair]:
    if request.param == "memory":
        with live_server(tenant_settings(mini_corpus, sim={"latency": 0.2})) as server:
            yield Pair(server, server, "memory")
        return
    redis: RedisServer = request.getfixturevalue("redis_server")
    settings = tenant_settings(
        mini_corpus, backend="redis", redis_url=redis.url, redis_prefix=f"t{os.urandom(4).hex()}"
    )
    with live_server(settings) as one, live_server(settings) as two:
        yield Pair(one, two, "redis")


async def _submit(client: httpx.AsyncClient, key: str, **headers: str) -> dict[str, Any]:
    created = await client.post(
        "/v1/research", json={"query": Q, "agents": 1, "max_rounds": 4}, headers={**auth(key), **headers}
    )
    assert created.status_code == 202, created.text
    job: dict[str, Any] = created.json()
    return job


async def test_another_tenant_gets_404_on_every_route(pair: Pair) -> None:
    async with pair.alice.client() as a, pair.bob.client() as b:
        job = await _submit(a, ALICE, **{"Idempotency-Key": "k1"})
        job_id = job["id"]
        unknown = await b.get("/v1/research/job_000000000000ffffffffff", headers=auth(BOB))
        assert unknown.status_code == 404

        for method, path in [
            ("GET", f"/v1/research/{job_id}"),
            ("GET", f"/v1/research/{job_id}/events"),
            ("POST", f"/v1/research/{job_id}/cancel"),
            ("DELETE", f"/v1/research/{job_id}"),
            ("POST", f"/v1/research/{job_id}/stream-token"),
        ]:
            response = await b.request(method, path, headers=auth(BOB))
            assert response.status_code == 404, (method, path, response.text)
            # The same answer as for an id that never existed: nothing to tell them apart.
            assert response.json()["error"]["type"] == unknown.json()["error"]["type"] == "not_found"

        assert job_id not in [
            j["id"] for j in (await b.get("/v1/research", headers=auth(BOB))).json()["items"]
        ]
        assert job_id in [j["id"] for j in (await a.get("/v1/research", headers=auth(ALICE))).json()["items"]]
        # Bob's "same" idempotency key and body make bob's own job, not a replay of alice's.
        own = await _submit(b, BOB, **{"Idempotency-Key": "k1"})
        assert own["id"] != job_id
        bobs = (await b.get("/v1/research", headers=auth(BOB))).json()["items"]
        assert [j["id"] for j in bobs] == [own["id"]]

        # The job is untouched by bob's attempts; alice still has it, and the admin sees both.
        assert (await a.get(f"/v1/research/{job_id}", headers=auth(ALICE))).json()[
            "cancel_requested"
        ] is False
        listed = (await b.get("/v1/research", headers=auth(ROOT))).json()["items"]
        assert {job_id, own["id"]} <= {j["id"] for j in listed}
        assert (await b.get(f"/v1/research/{job_id}", headers=auth(ROOT))).status_code == 200

        for who, client, key, jid in [("alice", a, ALICE, job_id), ("bob", b, BOB, own["id"])]:
            cancelled = await client.post(f"/v1/research/{jid}/cancel", headers=auth(key))
            assert cancelled.status_code in (200, 202), who
        if pair.kind == "redis":  # queued jobs are cancelled at once: delete works now
            assert (await a.delete(f"/v1/research/{job_id}", headers=auth(ALICE))).status_code == 204
            assert (await b.delete(f"/v1/research/{own['id']}", headers=auth(ROOT))).status_code == 204


async def test_stream_tokens_open_one_job_for_a_while(pair: Pair) -> None:
    async with pair.alice.client() as a, pair.bob.client() as b:
        first = await _submit(a, ALICE)
        second = await _submit(a, ALICE)
        minted = await a.post(f"/v1/research/{first['id']}/stream-token", headers=auth(ALICE))
        assert minted.status_code == 200, minted.text
        grant = minted.json()
        assert grant["expires_at"] > time.time()
        await a.post(f"/v1/research/{first['id']}/cancel", headers=auth(ALICE))

        # No Authorization header at all, as from EventSource, and from the other server.
        stream = await read_stream(b, grant["events_url"])
        assert stream.ended and stream.events[0]["type"] == "job.queued"
        assert stream.events[-1]["type"] in ("job.cancelled", "job.succeeded")
        assert {e["job_id"] for e in stream.events} == {first["id"]}

        token = grant["token"]
        # The token is for one job: on another (even alice's own) it is as if it did not exist.
        other = await b.get(f"/v1/research/{second['id']}/events", params={"token": token})
        assert other.status_code == 404
        forged = await b.get(f"/v1/research/{first['id']}/events", params={"token": token[:-2] + "xx"})
        assert forged.status_code == 401
        tokens = StreamTokens.derive(SECRET, [], 600)
        stale = tokens.encode(tokens.mint(first["id"], "alice", admin=False, now=time.time() - 3600))
        expired = await b.get(f"/v1/research/{first['id']}/events", params={"token": stale})
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        # A genuine token of bob's, for alice's job, is refused like a foreign key.
        bobs = tokens.encode(tokens.mint(first["id"], "bob", admin=False))
        assert (await b.get(f"/v1/research/{first['id']}/events", params={"token": bobs})).status_code == 404
        await a.post(f"/v1/research/{second['id']}/cancel", headers=auth(ALICE))


async def test_plain_api_keys_are_one_tenant_each(mini_corpus: Path) -> None:
    with live_server(api_settings(mini_corpus, server={"api_keys": ["one", "two"]})) as server:
        async with server.client() as client:
            job = await _submit(client, "one")
            assert (await client.get(f"/v1/research/{job['id']}", headers=auth("two"))).status_code == 404
            assert (await client.get(f"/v1/research/{job['id']}", headers=auth("one"))).status_code == 200
            usage = (await client.get("/v1/usage", headers=auth("one"))).json()
            # Named after the key's digest, never after the key itself.
            assert usage["tenant"].startswith("key-") and "one" not in usage["tenant"]


async def test_docs_and_metrics_can_require_a_key_and_health_stays_open(mini_corpus: Path) -> None:
    settings = tenant_settings(mini_corpus, server={"protect_docs": True, "protect_metrics": True})
    with live_server(settings) as server:
        async with server.client() as client:
            for path in ("/openapi.json", "/docs", "/metrics"):
                assert (await client.get(path)).status_code == 401, path
                assert (await client.get(path, headers=auth(BOB))).status_code == 200, path
            assert (await client.get("/healthz")).status_code == 200
            document = (await client.get("/openapi.json", headers=auth(BOB))).json()
            assert document["paths"]["/v1/research"]["post"]["security"] == [{"HTTPBearer": []}]


async def test_an_open_server_documents_no_bearer_auth(mini_corpus: Path) -> None:
    with live_server(api_settings(mini_corpus)) as server:
        async with server.client() as client:
            document = (await client.get("/openapi.json")).json()
            assert "securitySchemes" not in document.get("components", {})
            assert all("security" not in op for path in document["paths"].values() for op in path.values())
