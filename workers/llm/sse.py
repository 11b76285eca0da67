"""Server-sent events, reduced to what chat-completions streams need: each event's data."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """Yield the `data` of each event in a stream of SSE lines (line endings already removed).

    Comments (`: keep-alive`, as OpenRouter sends while it queues) and other fields are skipped;
    several `data:` lines in one event are joined with newlines, as the SSE spec says.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name != "data":
            continue
        data.append(value.removeprefix(" "))
    # A server that closes right after its last event without the blank line still meant it.
    if data:
        yield "\n".join(data)
