"""Server-sent events, reduced to what chat-completions streams need: each event's data."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable


class SSEDecoder:
    """Bytes in as they arrive, the `data` of each complete event out.

    Comments (`: keep-alive`, as OpenRouter sends while it queues) and other fields are skipped;
    several `data:` lines in one event are joined with newlines, as the SSE spec says. Lines are
    decoded whole, so a character split across two reads is never cut.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._partial + chunk
        cut = buffer.rfind(b"\n")
        if cut < 0:
            self._partial = buffer
            return []
        # Decoded up to the last newline in one go: a newline byte is never part of a
        # multi-byte character, so no character is cut.
        self._partial = buffer[cut + 1 :]
        return self._lines(buffer[:cut].decode("utf-8", "replace").split("\n"))

    def close(self) -> list[str]:
        """What is left once the body ended: a server that closes right after its last event
        without the blank line still meant it."""
        events = self._lines([self._partial.decode("utf-8", "replace")]) if self._partial else []
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _lines(self, lines: list[str]) -> list[str]:
        events: list[str] = []
        data = self._data
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            if line.startswith("data:"):  # by far the most common line: tested first
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            elif not line:
                if data:
                    events.append(data[0] if len(data) == 1 else "\n".join(data))
                    data.clear()
            elif line == "data":  # a field with no colon has an empty value
                data.append("")
            # Anything else is a comment (`:`) or a field chat streams do not use.
        return events


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """Yield the `data` of each event in a stream of SSE lines (line endings already removed)."""
    decoder = SSEDecoder()
    async for line in lines:
        for data in decoder.feed(line.encode() + b"\n"):
            yield data
    for data in decoder.close():
        yield data
