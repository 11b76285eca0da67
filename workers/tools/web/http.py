"""HTTP plumbing shared by the providers and the page fetcher: bounded reads, error details."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx

from workers.errors import ProviderError

# A search API's answer is a few kB; this bounds a misbehaving endpoint, not a normal one.
MAX_API_BYTES = 2_000_000
_DETAIL_CHARS = 300


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """The body of a streamed response, at most `cap` bytes; True when more was left unread."""
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes are counted, so a compressed bomb stops at the cap like a plain body.
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > cap:
            chunks.append(chunk[: cap - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def error_detail(body: bytes) -> str:
    """A short human-readable reason from an error body, whichever API shape it has:
    `{"message"}` (Serper), `{"detail": {"error"}}` (Tavily), `{"error": {"detail"}}` (Brave),
    `{"errors": [{"detail"}]}`, `{"error": "…"}`, or plain text / HTML."""
    text = body.decode("utf-8", "replace")
    try:
        payload: Any = json.loads(text)
    except ValueError:
        return _short(text)
    for path in (
        ("detail", "error"),
        ("error", "detail"),
        ("errors", 0, "detail"),
        ("message",),
        ("detail",),
        ("error",),
    ):
        value: Any = payload
        for step in path:
            if isinstance(step, int):
                value = value[step] if isinstance(value, list) and len(value) > step else None
            else:
                value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, str) and value.strip():
            return _short(value)
    return _short(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


async def request_raw(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    params: dict[str, str | int] | None = None,
    body: dict[str, Any] | None = None,
) -> bytes:
    """One API call: the body of a 2xx answer, else `ProviderError` naming the status and the
    API's own reason (a 429 or 5xx is no different: the chain moves on)."""
    try:
        with anyio.fail_after(timeout):
            request = client.build_request(method, url, headers=headers, params=params, json=body)
            response = await client.send(request, stream=True)
            try:
                raw, truncated = await read_capped(response, MAX_API_BYTES)
            finally:
                await response.aclose()
    except TimeoutError:
        raise ProviderError(provider, f"timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise ProviderError(provider, f"request failed: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        raise ProviderError(
            provider, f"HTTP {response.status_code}: {error_detail(raw)}", status=response.status_code
        )
    if truncated:
        raise ProviderError(provider, f"answer larger than {MAX_API_BYTES} bytes")
    return raw


async def request_json(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    params: dict[str, str | int] | None = None,
    body: dict[str, Any] | None = None,
) -> Any:
    """`request_raw`, decoded as JSON (`ProviderError` when it is not)."""
    raw = await request_raw(
        client, provider, method, url, timeout=timeout, headers=headers, params=params, body=body
    )
    try:
        return json.loads(raw)
    except ValueError:
        raise ProviderError(
            provider, f"answered with something that is not JSON: {_short(raw.decode('utf-8', 'replace'))}"
        ) from None
