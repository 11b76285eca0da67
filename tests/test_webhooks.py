"""Job webhooks end to end: the real engine on the simulated model calls a real receiver on
127.0.0.1 (allowed explicitly, as a local set-up would). Every other address is refused by the
guard before any connection is made; a stub resolver stands in for DNS where a name is needed.

Jobs run through `JobRunner.run`, the call a worker makes for each job it claims, so a test
knows the delivery and its record are done when it returns; the drain test runs a real worker.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.routes.research import job_view
from tests.engine_harness import engine_settings
from tests.fake_search_apis import LoopbackServer
from tests.metric_samples import delta, samples
from workers.backend import Backend, MemoryBackend
from workers.engine import Engine, open_engine
from workers.errors import BlockedURL
from workers.events import EventType
from workers.jobs import cancel_job, submit_job
from workers.models import JobRecord, JobStatus, ResearchRequest, WebhookState
from workers.net.ssrf import IPAddress
from workers.runner import JobRunner
from workers.settings import WebhookSettings
from workers.sim.app import SimConfig
from workers.sim.server import SimServer
from workers.webhooks import WebhookSender

pytestmark = pytest.mark.anyio

ATTEMPTS = "hr_webhook_attempts_total"

QUESTION = "When was the Halvard Observatory founded?"
SECRET = "whsec-test"
# Retries in milliseconds, so a test of three attempts stays fast.
FAST = {"allow_hosts": ["127.0.0.1"], "retry_base_delay": 0.01, "retry_max_delay": 0.05}


# -- the receiver -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


HANG = "hang"  # no answer until the receiver stops


@dataclass(frozen=True)
class Call:
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class Receiver:
    """A webhook endpoint on a real uvicorn in its own thread. `replies` script its answers in
    order (a `Reply` or `HANG`); once they are spent it answers 200. Every call is recorded."""

    def __init__(self, *replies: Reply | str) -> None:
        self.replies: deque[Reply | str] = deque(replies)
        self.calls: list[Call] = []
        self.arrived = threading.Event()
        self.elsewhere = 0  # calls to /elsewhere, where the redirect points
        app = Starlette(
            routes=[
                Route("/hook", self._hook, methods=["POST"]),
                Route("/elsewhere", self._elsewhere, methods=["GET", "POST"]),
            ]
        )
        self.server = LoopbackServer(app)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/hook"

    def __enter__(self) -> Self:
        self.server.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.__exit__(exc_type, exc, tb)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        self.calls.append(Call(dict(request.headers), body, time.time()))
        self.arrived.set()
        reply = self.replies.popleft() if self.replies else Reply()
        if reply == HANG:
            await self.server.until_stopped()
            return Response(status_code=200)
        assert isinstance(reply, Reply)
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    async def _elsewhere(self, request: Request) -> Response:
        self.elsewhere += 1
        return Response(status_code=200)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    replies: tuple[Reply | str, ...] = getattr(request, "param", ())
    with Receiver(*replies) as hook:
        yield hook


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(min_rounds=2)) as server:
        yield server


# -- helpers ----------------------------------------------------------------------------------------
@asynccontextmanager
async def engine(
    corpus: Path, sim: SimServer, backend: Backend | None = None, *, worker: bool = False, **webhooks: Any
) -> AsyncIterator[Engine]:
    settings = engine_settings(corpus, sim.base_url, webhooks={**FAST, **webhooks})
    async with open_engine(settings, run_worker=worker, backend=backend) as built:
        yield built


def runner_of(built: Engine) -> JobRunner:
    assert built.runner is not None
    return built.runner


async def submit(built: Engine, webhook_url: str | None) -> JobRecord:
    request = ResearchRequest(query=QUESTION, agents=2, max_rounds=6, webhook_url=webhook_url)
    record, _ = await submit_job(built.backend, request, simulated=True)
    return record


async def stored(backend: Backend, job_id: str) -> JobRecord:
    record = await backend.get_job(job_id)
    assert record is not None
    return record


def signature_ok(call: Call, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), call.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(call.headers.get("x-heavyresearch-signature", ""), expected)


# -- delivery -------------------------------------------------------------------------------------
async def test_a_succeeded_job_is_delivered_once_signed_after_its_terminal_event(
    mini_corpus: Path, sim: SimServer, receiver: Receiver
) -> None:
    async with engine(mini_corpus, sim, secret=SECRET) as built:
        job = await submit(built, receiver.url)
        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)
        events = await built.backend.read_events(job.id)
        # Run again, as a second worker claiming the job would: the outcome is recorded.
        await runner_of(built).run(job.id)
        view = (await job_view(built.backend, record)).model_dump(mode="json")

    assert record.status == JobStatus.succeeded
    assert record.result is not None and record.result.sources
    assert len(receiver.calls) == 1
    call = receiver.calls[0]
    assert call.headers["content-type"] == "application/json"
    assert call.headers["user-agent"] == "heavyresearch-webhooks"
    assert call.headers["x-heavyresearch-event"] == "job.succeeded"
    assert signature_ok(call, SECRET)
    assert not signature_ok(call, SECRET + "x")
    payload = call.json
    assert payload == {
        "type": "job.succeeded",
        "job_id": job.id,
        "status": "succeeded",
        "answer": record.result.answer,
        "sources": [{"id": s.id, "url": s.url, "title": s.title} for s in record.result.sources],
        "error": None,
        "outcome": "answered",
        "simulated": True,
        "finished_at": view["timings"]["finished_at"],
        "links": {"self": f"/v1/research/{job.id}", "events": f"/v1/research/{job.id}/events"},
    }
    # The job had ended, and said so, before its receiver heard of it.
    assert events[-1].type == EventType.job_succeeded
    assert events[-1].ts <= call.at
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.delivered
    assert (hook.attempts, hook.last_status, hook.last_error) == (1, 200, None)
    assert call.headers["x-heavyresearch-delivery"] == hook.delivery_id
    assert view["webhook"]["state"] == "delivered"
    assert view["webhook"]["delivery_id"] == hook.delivery_id
    assert view["webhook"]["delivered_at"] is not None


async def test_a_cancelled_job_is_delivered_as_job_cancelled(mini_corpus: Path, receiver: Receiver) -> None:
    with SimServer(SimConfig(min_rounds=1000, latency=0.05)) as slow:
        async with engine(mini_corpus, slow) as built:
            job = await submit(built, receiver.url)
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner_of(built).run, job.id)
                seen = 0
                with anyio.fail_after(30):
                    while True:
                        batch = await built.backend.wait_events(job.id, seen, 1.0)
                        seen = batch[-1].seq if batch else seen
                        if any(e.type == EventType.round_started for e in batch):
                            break
                await cancel_job(built.backend, job.id)
            record = await stored(built.backend, job.id)

    assert record.status == JobStatus.cancelled
    assert len(receiver.calls) == 1
    call = receiver.calls[0]
    assert call.headers["x-heavyresearch-event"] == "job.cancelled"
    assert "x-heavyresearch-signature" not in call.headers  # no secret: unsigned
    payload = call.json
    assert (payload["type"], payload["status"], payload["answer"], payload["sources"]) == (
        "job.cancelled",
        "cancelled",
        None,
        [],
    )
    assert record.webhook is not None and record.webhook.state == WebhookState.delivered


@pytest.mark.parametrize(
    "receiver", [(Reply(500), Reply(503, headers={"Retry-After": "3600"}), Reply(200))], indirect=True
)
async def test_5xx_is_retried_until_delivered(mini_corpus: Path, sim: SimServer, receiver: Receiver) -> None:
    before = samples()
    async with engine(mini_corpus, sim, secret=SECRET) as built:
        job = await submit(built, receiver.url)
        # The hour a Retry-After asks for is capped at retry_max_delay.
        with anyio.fail_after(30):
            await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)

    assert len(receiver.calls) == 3
    # Every attempt sends the same bytes under the same delivery id, so receivers can dedupe.
    assert len({c.body for c in receiver.calls}) == 1
    assert len({c.headers["x-heavyresearch-delivery"] for c in receiver.calls}) == 1
    assert all(signature_ok(c, SECRET) for c in receiver.calls)
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.delivered
    assert (hook.attempts, hook.last_status) == (3, 200)
    # Each attempt is counted with what it got back.
    after = samples()
    assert [delta(before, after, ATTEMPTS, outcome=o) for o in ("5xx", "2xx", "4xx", "no_response")] == [
        2,
        1,
        0,
        0,
    ]


@pytest.mark.parametrize("receiver", [(HANG, Reply(204))], indirect=True)
async def test_a_timed_out_attempt_is_retried(mini_corpus: Path, sim: SimServer, receiver: Receiver) -> None:
    async with engine(mini_corpus, sim, timeout=0.5) as built:
        job = await submit(built, receiver.url)
        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)

    assert len(receiver.calls) == 2
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.delivered
    assert (hook.attempts, hook.last_status) == (2, 204)


async def test_an_unreachable_receiver_fails_after_every_attempt(mini_corpus: Path, sim: SimServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    before = samples()
    async with engine(mini_corpus, sim, attempts=3) as built:
        job = await submit(built, f"http://127.0.0.1:{closed_port}/hook")
        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)

    assert record.status == JobStatus.succeeded  # the job is not the receiver's to fail
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.failed
    assert (hook.attempts, hook.last_status) == (3, None)
    assert hook.last_error is not None and "ConnectError" in hook.last_error
    after = samples()
    assert [delta(before, after, ATTEMPTS, outcome=o) for o in ("no_response", "2xx", "5xx")] == [3, 0, 0]


@pytest.mark.parametrize(
    ("receiver", "status", "reason"),
    [
        ((Reply(400, body=b'{"error": "unknown hook id"}'),), 400, "HTTP 400: unknown hook id"),
        ((Reply(410),), 410, "HTTP 410"),
        ((Reply(302, headers={"Location": "/elsewhere"}),), 302, "redirects are not followed"),
    ],
    indirect=["receiver"],
)
async def test_other_answers_give_up_at_once(
    mini_corpus: Path, sim: SimServer, receiver: Receiver, status: int, reason: str
) -> None:
    async with engine(mini_corpus, sim) as built:
        job = await submit(built, receiver.url)
        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)
        view = (await job_view(built.backend, record)).model_dump(mode="json")

    assert len(receiver.calls) == 1
    assert receiver.elsewhere == 0
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.failed
    assert (hook.attempts, hook.last_status, hook.delivered_at) == (1, status, None)
    assert hook.last_error is not None and reason in hook.last_error
    assert view["webhook"]["state"] == "failed"
    assert view["webhook"]["last_error"] == hook.last_error


# -- the address guard ------------------------------------------------------------------------------
async def test_loopback_is_refused_without_the_allow_list(
    mini_corpus: Path, sim: SimServer, receiver: Receiver
) -> None:
    async with engine(mini_corpus, sim, allow_hosts=[]) as built:
        job = await submit(built, receiver.url)
        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)

    assert receiver.calls == []
    hook = record.webhook
    assert hook is not None and hook.state == WebhookState.failed
    assert (hook.attempts, hook.last_status) == (1, None)
    assert hook.last_error is not None and "loopback" in hook.last_error


class StubResolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise BlockedURL(f"cannot resolve {host}")
        return [ipaddress.ip_address(a) for a in self.table[host]]


def ended_job(webhook_url: str) -> JobRecord:
    return JobRecord(
        id="job_webhook_guard",
        status=JobStatus.failed,
        request=ResearchRequest(query=QUESTION, webhook_url=webhook_url),
        finished_at=time.time(),
        error="every research agent failed",
    )


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["10.20.30.40"], "private"),
        (["169.254.169.254"], "link-local"),
        (["93.184.215.14", "127.0.0.1"], "loopback"),  # every answer must pass, not just the first
    ],
)
async def test_a_name_resolving_to_a_non_public_address_is_refused(addresses: list[str], why: str) -> None:
    resolver = StubResolver({"hooks.example.com": addresses})
    async with WebhookSender(WebhookSettings(retry_base_delay=0), resolver=resolver) as sender:
        outcome = await sender.deliver(ended_job("https://hooks.example.com/hook"))
    assert resolver.asked == ["hooks.example.com"]  # refused after one look-up: no retries
    assert outcome.state == WebhookState.failed
    assert (outcome.attempts, outcome.last_status) == (1, None)
    assert outcome.last_error is not None and why in outcome.last_error


async def test_an_allowed_name_is_called_at_its_checked_address(receiver: Receiver) -> None:
    resolver = StubResolver({"hooks.internal": ["127.0.0.1"]})
    settings = WebhookSettings(allow_hosts=["hooks.internal"])
    async with WebhookSender(settings, resolver=resolver) as sender:
        outcome = await sender.deliver(ended_job(f"http://hooks.internal:{receiver.port}/hook"))
    assert outcome.state == WebhookState.delivered
    assert len(receiver.calls) == 1
    # The connection went to the address the guard checked; the name travels in Host only.
    assert receiver.calls[0].headers["host"] == f"hooks.internal:{receiver.port}"
    assert receiver.calls[0].json["type"] == "job.failed"
    assert receiver.calls[0].json["error"] == "every research agent failed"


def test_a_bad_allow_list_entry_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="allow_hosts"):
        WebhookSender(WebhookSettings(allow_hosts=["not a host!"]))


# -- nothing lost -----------------------------------------------------------------------------------
async def test_a_job_that_ended_without_its_call_is_delivered_by_the_next_run(
    mini_corpus: Path, sim: SimServer, receiver: Receiver
) -> None:
    async with engine(mini_corpus, sim) as built:
        job = await submit(built, None)
        await runner_of(built).run(job.id)
        # What a worker that died between the terminal event and the call leaves behind.
        record = await stored(built.backend, job.id)
        record.request.webhook_url = receiver.url
        await built.backend.save_job(record)
        assert record.webhook_due
        events_before = await built.backend.read_events(job.id)

        await runner_of(built).run(job.id)
        record = await stored(built.backend, job.id)
        events_after = await built.backend.read_events(job.id)

    assert len(receiver.calls) == 1
    assert receiver.calls[0].json["type"] == "job.succeeded"
    assert record.result is not None and receiver.calls[0].json["answer"] == record.result.answer
    assert record.webhook is not None and record.webhook.state == WebhookState.delivered
    assert not record.webhook_due
    assert events_after == events_before  # the job did not run again


@pytest.mark.parametrize("receiver", [(HANG,)], indirect=True)
async def test_a_worker_drained_mid_call_hands_the_job_back_for_the_call(
    mini_corpus: Path, sim: SimServer, receiver: Receiver
) -> None:
    backend = MemoryBackend()
    async with engine(mini_corpus, sim, backend, worker=True, timeout=60) as built:
        job = await submit(built, receiver.url)
        assert await anyio.to_thread.run_sync(receiver.arrived.wait, 60)
        ended = await stored(backend, job.id)
        assert ended.status == JobStatus.succeeded and ended.webhook is None
    # Leaving the engine drained its worker while the receiver still held the call.
    assert await backend.queue_depth() == 1
    assert (await stored(backend, job.id)).webhook_due

    async with engine(mini_corpus, sim, backend) as built:
        claimed = await backend.claim("next-worker", 1.0)
        assert claimed == job.id
        await runner_of(built).run(claimed)
        record = await stored(backend, job.id)

    assert len(receiver.calls) == 2
    first, second = receiver.calls
    assert first.body == second.body
    assert first.headers["x-heavyresearch-delivery"] == second.headers["x-heavyresearch-delivery"]
    assert record.webhook is not None and record.webhook.state == WebhookState.delivered
    assert record.webhook.attempts == 1
