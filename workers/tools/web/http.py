"""The search providers' API calls: a bounded read of the answer, `ProviderError` on failure."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx

from workers.errors import ProviderError
from workers.net.reads import error_detail, read_capped, short_detail

# A search API's answer is a few kB; this bounds a misbehaving endpoint, not a normal one.
MAX_API_BYTES = 2_000_000


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
            provider,
            f"answered with something that is not JSON: {short_detail(raw.decode('utf-8', 'replace'))}",
        ) from None
