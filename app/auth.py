"""Who is calling: API keys → tenants, and the one ownership rule every resource shares.

A key belongs to a tenant (`server.tenants`, or `server.api_keys`: one tenant per key). Only
SHA-256 digests of keys are kept, and a presented key is compared against every digest in
constant time. A route declares `PrincipalDep` and checks what it loads with `ensure_visible`:
another tenant's job (or file) is reported as missing (404), never as forbidden, so an id
cannot be probed for existence. With no keys configured the server is open: every caller is
the `open` principal, which sees everything.

Browsers' `EventSource` cannot send headers, so an event stream also accepts `?token=`, a
short-lived token signed for one job (`app.stream_tokens`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response
from app.stream_tokens import StreamTokens
from workers.errors import Unauthorized
from workers.settings import ServerSettings, TenantQuotas

Role = Literal["user", "admin", "open"]


@dataclass(frozen=True)
class Principal:
    """The caller. `tenant` is None only on an open server (no keys configured)."""

    tenant: str | None
    role: Role

    @property
    def admin(self) -> bool:
        return self.role in ("admin", "open")

    @property
    def owner_filter(self) -> str | None:
        """The owner to list jobs of: None (all) for admins and open servers."""
        return None if self.admin else self.tenant

    def can_see(self, owner: str | None) -> bool:
        return self.admin or (self.tenant is not None and owner == self.tenant)


OPEN = Principal(tenant=None, role="open")


def ensure_visible(principal: Principal, owner: str | None, missing: Exception) -> None:
    """Raise `missing` (the resource's own not-found error) unless `principal` may see a
    resource owned by `owner`. The one ownership check of jobs, streams and files."""
    if not principal.can_see(owner):
        raise missing


@dataclass(frozen=True)
class _Key:
    digest: bytes
    tenant: str
    role: Role


class Keyring:
    """The configured keys, as digests, with each tenant's configured quotas."""

    def __init__(self, settings: ServerSettings) -> None:
        keys: list[_Key] = []
        self.quotas: dict[str, TenantQuotas] = {}
        for plain in settings.api_keys:
            digest = hashlib.sha256(plain.encode()).digest()
            # A legacy plain key is a tenant of its own, named after its digest (never the key).
            keys.append(_Key(digest, f"key-{digest.hex()[:12]}", "user"))
        for entry in settings.tenants:
            if entry.key_sha256:
                digest = bytes.fromhex(entry.key_sha256)
            elif entry.key:
                digest = hashlib.sha256(entry.key.encode()).digest()
            else:
                raise ValueError(f"tenant {entry.tenant!r}: give `key_sha256` (or `key`)")
            keys.append(_Key(digest, entry.tenant, entry.role))
            if entry.quotas is not None:
                self.quotas.setdefault(entry.tenant, entry.quotas)
        self._keys = keys
        self.default_quotas = settings.default_quotas

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def tenants(self) -> list[str]:
        return sorted({k.tenant for k in self._keys})

    def digests(self) -> list[bytes]:
        return [k.digest for k in self._keys]

    def lookup(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: _Key | None = None
        # Every digest is compared, so the time taken says nothing about which one matched.
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return None if found is None else Principal(found.tenant, found.role)

    def configured_quotas(self, tenant: str | None) -> TenantQuotas:
        if tenant is None:
            return TenantQuotas()  # an open server has no tenants to hold to quotas
        return self.quotas.get(tenant, self.default_quotas)


def get_keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


def get_stream_tokens(request: Request) -> StreamTokens:
    tokens: StreamTokens = request.app.state.stream_tokens
    return tokens


KeyringDep = Annotated[Keyring, Depends(get_keyring)]
StreamTokensDep = Annotated[StreamTokens, Depends(get_stream_tokens)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from the server settings `server.tenants` / `server.api_keys`.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(keyring: Keyring, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if not keyring.enabled:
        return OPEN
    if credentials is None:
        raise Unauthorized("this server requires an API key: send `Authorization: Bearer <key>`")
    principal = keyring.lookup(credentials.credentials)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    return principal


async def principal(keyring: KeyringDep, credentials: BearerDep) -> Principal:
    """The caller, from its bearer key; 401 when keys are on and it sent none or a wrong one."""
    return authenticate(keyring, credentials)


PrincipalDep = Annotated[Principal, Depends(principal)]


async def stream_principal(
    keyring: KeyringDep,
    tokens: StreamTokensDep,
    credentials: BearerDep,
    token: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=512,
            description=(
                "A stream token from `POST /v1/research/{job_id}/stream-token`, for clients "
                "that cannot send an `Authorization` header (a browser's EventSource)."
            ),
        ),
    ] = None,
) -> StreamGrant:
    """The caller of an event stream: a bearer key, or a stream token for one job."""
    if token is None or credentials is not None:
        return StreamGrant(authenticate(keyring, credentials), None)
    claim = tokens.verify(token)  # raises Unauthorized when forged or expired
    role: Role = "admin" if claim.admin else "user"
    return StreamGrant(Principal(claim.tenant, role) if keyring.enabled else OPEN, claim.job_id)


@dataclass(frozen=True)
class StreamGrant:
    """Who streams, and (with a token) the one job the token was signed for."""

    principal: Principal
    job_id: str | None

    def allows(self, job_id: str) -> bool:
        return self.job_id is None or hmac.compare_digest(self.job_id.encode(), job_id.encode())


StreamGrantDep = Annotated[StreamGrant, Depends(stream_principal)]


class ProtectedPaths:
    """ASGI middleware: the given paths (/docs, /metrics, …) need a valid API key too."""

    def __init__(self, app: ASGIApp, keyring: Keyring, paths: set[str]) -> None:
        self.app = app
        self.keyring = keyring
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths and self.keyring.enabled:
            authorization = ""
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    authorization = value.decode("latin-1")
            scheme, _, key = authorization.partition(" ")
            if scheme.lower() != "bearer" or self.keyring.lookup(key.strip()) is None:
                response = error_response(
                    401,
                    "unauthorized",
                    "this path requires an API key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
