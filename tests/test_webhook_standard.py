"""Standard Webhooks signatures, verified with the `standardwebhooks` reference library, and
the submit-time check of `webhook_url` over HTTP (a stub resolver stands in for DNS; nothing
connects anywhere but loopback)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.server import api_settings, live_server, run_to_end
from tests.test_webhooks import Receiver, Reply, StubResolver, ended_job, receiver  # noqa: F401  (fixture)
from workers.models import WebhookState
from workers.settings import WebhookSettings
from workers.webhooks import DELIVERY_HEADER, WebhookSender

pytestmark = pytest.mark.anyio

FAST = {"allow_hosts": ["127.0.0.1"], "retry_base_delay": 0.01, "retry_max_delay": 0.05}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.mark.parametrize("receiver", [(Reply(503),)], indirect=True)
async def test_deliveries_verify_with_either_secret_during_a_rotation(receiver: Receiver) -> None:  # noqa: F811
    old, new, stranger = new_secret(), new_secret(), new_secret()
    settings = WebhookSettings(secrets=[new, old], **FAST)
    async with WebhookSender(settings) as sender:
        outcome = await sender.deliver(ended_job(receiver.url))
    assert outcome.state == WebhookState.delivered and outcome.attempts == 2
    first, second = receiver.calls
    for call in (first, second):
        headers = call.headers
        assert headers["webhook-id"] == headers[DELIVERY_HEADER.lower()] == outcome.delivery_id
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert len(headers["webhook-signature"].split(" ")) == 2
        # The reference library accepts the delivery with the old secret and with the new one.
        for secret in (old, new):
            assert Webhook(secret).verify(call.body, headers)["type"] == "job.failed"
        with pytest.raises(WebhookVerificationError):
            Webhook(stranger).verify(call.body, headers)
    # The timestamp is signed: moving it (a replay made to look fresh) breaks the signature.
    replayed = dict(second.headers, **{"webhook-timestamp": str(int(time.time()) + 5)})
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, replayed)
    # And a capture older than the library's tolerance is refused even untouched.
    stale = dict(second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, {**stale, "webhook-timestamp": str(int(time.time()) - 3600)})


def test_a_secret_that_is_not_base64_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="base64"):
        WebhookSettings(secrets=["whsec_not base64!"])


async def test_webhook_urls_are_checked_at_submit(mini_corpus: Path, receiver: Receiver) -> None:  # noqa: F811
    settings = api_settings(mini_corpus, webhooks={"allow_hosts": ["127.0.0.1"], **FAST})
    with live_server(settings) as server:
        # Names resolve through a stub; only refused urls use names, so the worker that
        # delivers accepted ones never needs DNS.
        server.app.state.resolver = StubResolver(
            {"hooks.example.com": ["10.1.2.3"], "meta.example": ["169.254.169.254"]}
        )
        async with server.client() as client:
            for url, why in [
                ("http://10.0.0.7/hook", "private"),
                ("https://hooks.example.com/hook", "private"),
                ("https://meta.example/latest", "link-local"),
                ("http://[::1]/hook", "loopback"),
                ("https://nowhere.example/hook", "resolve"),
            ]:
                refused = await client.post("/v1/research", json={"query": "q", "webhook_url": url})
                assert refused.status_code == 422, (url, refused.text)
                error = refused.json()["error"]
                assert error["errors"][0]["path"] == "body.webhook_url" and why in error["message"], error
            # Loopback passes where the allow-list lets it, and the job is delivered as before.
            accepted = await client.post(
                "/v1/research", json={"query": "q", "agents": 1, "max_rounds": 3, "webhook_url": receiver.url}
            )
            assert accepted.status_code == 202, accepted.text
            await run_to_end(client, accepted.json()["id"])
