"""Reading what a remote server sends, defensively: a body read up to a cap, and a short
human-readable reason out of an error body. Shared by search providers, page fetches and
webhook deliveries."""

from __future__ import annotations

import json
from typing import Any

import httpx

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
        return short_detail(text)
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
            return short_detail(value)
    return short_detail(text)


def short_detail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
