"""Short-lived signed tokens that let a browser's EventSource follow one job's events.

A token is `<job_id>.<expiry>.<tenant, base64url>.<role>.<signature>`: HMAC-SHA256 over the first four
parts, base64url. It names one job and expires (`server.stream_token_ttl`); it carries no key.
Every API process must sign with the same secret: `server.stream_token_secret`, or, when that
is empty, one derived from the configured key digests (identical wherever the keys are).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from workers.errors import Unauthorized


@dataclass(frozen=True)
class StreamClaim:
    job_id: str
    tenant: str | None
    admin: bool
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class StreamTokens:
    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret = secret
        self.ttl = ttl

    @classmethod
    def derive(cls, configured: str, key_digests: list[bytes], ttl: int) -> StreamTokens:
        if configured:
            return cls(configured.encode(), ttl)
        material = hashlib.sha256(b"heavyresearch stream tokens v1")
        for digest in sorted(key_digests):
            material.update(digest)
        return cls(material.digest(), ttl)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def mint(self, job_id: str, tenant: str | None, *, admin: bool, now: float | None = None) -> StreamClaim:
        expires = int(now if now is not None else time.time()) + self.ttl
        return StreamClaim(job_id, tenant, admin, expires)

    def encode(self, claim: StreamClaim) -> str:
        # base64url: a tenant name may hold dots; empty for an open server's callers.
        tenant = "" if claim.tenant is None else _b64(claim.tenant.encode())
        body = f"{claim.job_id}.{claim.expires_at}.{tenant}.{'a' if claim.admin else 'u'}"
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, *, now: float | None = None) -> StreamClaim:
        """The token's claim; `Unauthorized` when it is malformed, forged or expired."""
        body, _, signature = token.rpartition(".")
        parts = body.split(".")
        if len(parts) != 4 or not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise Unauthorized("the stream token is not valid")
        job_id, expires, tenant, role = parts
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            raise Unauthorized("the stream token has expired; mint a new one")
        name = base64.urlsafe_b64decode(tenant + "=" * (-len(tenant) % 4)).decode() if tenant else None
        return StreamClaim(job_id, name, role == "a", int(expires))
