"""Job webhooks: once a job has ended, its `webhook_url` gets one JSON POST saying how.

The runner calls `WebhookSender.deliver` only after the job's terminal status and event are
stored, so a slow or broken receiver can neither delay nor fail a job, and stores the returned
`WebhookStatus` on the record. A worker that dies in between leaves the record without one
(`JobRecord.webhook_due`), and the next worker that claims the job delivers it: a receiver may
see a notification twice, with the same body and the same `X-Heavyresearch-Delivery` id to
dedupe on.

The url passes the SSRF `AddressGuard` before every attempt (public addresses only, unless
`webhooks.allow_hosts` lets a host through) and the request goes to the checked address itself;
redirects are not followed. Retried after full-jitter backoff: transport errors, timeouts, 429
and 5xx (a `Retry-After` is honoured up to `retry_max_delay`). A 2xx is delivered; a refused
url or any other answer gives up at once.

Headers: `Content-Type: application/json`, `User-Agent: heavyresearch-webhooks`,
`X-Heavyresearch-Event` (the terminal event type), `X-Heavyresearch-Delivery`, and with a
secret `X-Heavyresearch-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (legacy: it
covers no timestamp, so a captured delivery replays). With `webhooks.secrets`, the Standard
Webhooks headers: `webhook-id` (the delivery id), `webhook-timestamp` (unix seconds of the
attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret,
space-separated: two secrets during a rotation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from workers.agent.outcome import job_outcome
from workers.errors import BlockedURL
from workers.events import EventType
from workers.metrics import engine_metrics
from workers.models import JobRecord, JobStatus, WebhookState, WebhookStatus
from workers.net.client import page_client
from workers.net.reads import error_detail, read_capped
from workers.net.retry import backoff_delay, parse_retry_after
from workers.net.ssrf import AddressGuard, Resolver, system_resolver
from workers.settings import WebhookSettings

log = logging.getLogger(__name__)

USER_AGENT = "heavyresearch-webhooks"
SIGNATURE_HEADER = "X-Heavyresearch-Signature"
EVENT_HEADER = "X-Heavyresearch-Event"
DELIVERY_HEADER = "X-Heavyresearch-Delivery"
# Standard Webhooks (https://www.standardwebhooks.com): replay-safe, library-verifiable.
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"

TERMINAL_EVENT = {
    JobStatus.succeeded: EventType.job_succeeded,
    JobStatus.failed: EventType.job_failed,
    JobStatus.cancelled: EventType.job_cancelled,
}

# Fixed, so every worker derives the same delivery id for a job without storing it first.
_DELIVERY_NAMESPACE = uuid.UUID("6f1d2c1e-5b0a-4d8e-9a57-3c2b8e4f7a10")
# Enough of an error answer's body to say why; a receiver's page is not worth more.
_DETAIL_BYTES = 4096


def delivery_id(job_id: str) -> str:
    """The id every attempt of this job's notification carries, from any worker."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, job_id))


async def check_webhook_url(
    settings: WebhookSettings, url: str, resolver: Resolver = system_resolver
) -> None:
    """Refuse, at submit time, a url no delivery could reach (a private, loopback, … address,
    or a host that does not resolve): `BlockedURL` with the guard's own reason."""
    await AddressGuard(settings.allow_hosts, resolver).check(url)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_`."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def standard_headers(keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: one `v1,<signature>` per key, so a receiver holding
    either the old or the new secret verifies the delivery during a rotation."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = [
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
    ]
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        STANDARD_SIGNATURE_HEADER: " ".join(signatures),
    }


def sign(secret: str, body: bytes) -> str:
    """The `X-Heavyresearch-Signature` value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(record: JobRecord) -> dict[str, Any]:
    """The notification for an ended job. Built from the stored record only, so a redelivery
    by another worker sends the same bytes."""
    result = record.result
    finished = None
    if record.finished_at is not None:
        finished = datetime.fromtimestamp(record.finished_at, tz=UTC).isoformat().replace("+00:00", "Z")
    base = f"/v1/research/{record.id}"
    return {
        "type": TERMINAL_EVENT[record.status].value,
        "job_id": record.id,
        "status": record.status.value,
        "answer": result.answer if result is not None else None,
        "sources": [
            {"id": s.id, "url": s.url, "title": s.title}
            for s in (result.sources if result is not None else [])
        ],
        "error": record.error,
        "outcome": job_outcome(record),
        "simulated": record.simulated,
        "finished_at": finished,
        "links": {"self": base, "events": f"{base}/events"},
    }


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None  # the receiver's HTTP status; None when no answer came
    error: str | None  # None: delivered
    retry: bool = False
    retry_after: float | None = None

    @property
    def outcome(self) -> str:
        """The attempt for metrics: the status class (`2xx`, `4xx`, …) or `no_response`."""
        return "no_response" if self.status is None else f"{self.status // 100}xx"


class WebhookSender:
    """Calls jobs' webhooks; owns its HTTP client (`async with`, or `aclose`)."""

    def __init__(self, settings: WebhookSettings, *, resolver: Resolver = system_resolver) -> None:
        """`ValueError` for an `allow_hosts` entry that is neither a host nor an IP / CIDR."""
        self._settings = settings
        self._guard = AddressGuard(settings.allow_hosts, resolver)
        self._keys = [signing_key(secret) for secret in settings.secrets]
        # Page fetches' rules hold here too: no environment proxy (it would resolve the host
        # itself and undo the pinning), no connection pooled across pinned addresses.
        self._client = page_client()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, record: JobRecord) -> WebhookStatus:
        """Notify the ended job's `webhook_url`, retrying as configured; the outcome, which the
        caller stores on the record. Never raises for a receiver's failure."""
        url = record.request.webhook_url
        if url is None or not record.status.terminal:
            raise ValueError(f"job {record.id} has no webhook to call yet ({record.status.value})")
        event = TERMINAL_EVENT[record.status].value
        body = json.dumps(payload(record), separators=(",", ":"), ensure_ascii=False).encode()
        delivery = delivery_id(record.id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery,
        }
        if self._settings.secret:
            headers[SIGNATURE_HEADER] = sign(self._settings.secret, body)
        attempts = self._settings.attempts
        extra = {"job_id": record.id}
        number = 0
        while True:
            number += 1
            if self._keys:
                # Signed anew per attempt: the timestamp is part of what is signed.
                headers.update(standard_headers(self._keys, delivery, int(time.time()), body))
            attempt = await self._attempt(url, body, headers)
            engine_metrics().webhook_attempts.labels(attempt.outcome).inc()
            if attempt.error is None:
                log.info(
                    "webhook %s delivered (HTTP %s, attempt %d)", event, attempt.status, number, extra=extra
                )
                return WebhookStatus(
                    state=WebhookState.delivered,
                    delivery_id=delivery,
                    attempts=number,
                    last_status=attempt.status,
                    delivered_at=time.time(),
                )
            if not attempt.retry or number == attempts:
                break
            delay = self._delay(number - 1, attempt.retry_after)
            log.warning(
                "webhook attempt %d of %d failed: %s; retrying in %.2fs",
                number,
                attempts,
                attempt.error,
                delay,
                extra=extra,
            )
            await anyio.sleep(delay)
        log.warning("webhook %s failed after %d attempt(s): %s", event, number, attempt.error, extra=extra)
        return WebhookStatus(
            state=WebhookState.failed,
            delivery_id=delivery,
            attempts=number,
            last_status=attempt.status,
            last_error=attempt.error,
        )

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> _Attempt:
        timeout = self._settings.timeout
        try:
            with anyio.fail_after(timeout):
                # Checked on every attempt: each connection goes to an address checked just before it.
                target = await self._guard.check(url)
                # TLS must verify the certificate of the host, not of the address we pinned.
                extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
                request = self._client.build_request(
                    "POST",
                    target.pinned_url,
                    content=body,
                    headers={**headers, "Host": target.host_header},
                    extensions=extensions,
                )
                response = await self._client.send(request, stream=True)
                try:
                    if response.is_success:
                        return _Attempt(response.status_code, None)
                    detail, _ = await read_capped(response, _DETAIL_BYTES)
                finally:
                    await response.aclose()
        except BlockedURL as exc:
            return _Attempt(None, str(exc))
        except TimeoutError:
            return _Attempt(None, f"timed out after {timeout:g}s", retry=True)
        except httpx.HTTPError as exc:
            return _Attempt(None, f"{type(exc).__name__}: {exc}", retry=True)
        return _classify(response, detail)

    def _delay(self, retry: int, retry_after: float | None) -> float:
        cap = self._settings.retry_max_delay
        if retry_after is not None:
            return min(retry_after, cap)
        return backoff_delay(retry, self._settings.retry_base_delay, cap)


def _classify(response: httpx.Response, body: bytes) -> _Attempt:
    """A non-2xx answer: retried when the receiver may recover (429, 5xx), else final."""
    status = response.status_code
    if response.is_redirect:
        location = response.headers.get("location", "")
        return _Attempt(status, f"HTTP {status}: redirects are not followed (Location: {location!r})")
    detail = error_detail(body)
    error = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status == 429 or status >= 500:
        return _Attempt(
            status, error, retry=True, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    return _Attempt(status, error)
