"""Reading result lists out of provider responses, defensively: APIs change shape."""

from __future__ import annotations

from typing import Any

from workers.errors import ProviderError
from workers.tools.web.types import Hit


def results_at(provider: str, payload: Any, *path: str, required: bool = True) -> list[Any]:
    """The list at `path` in a JSON payload. When `required`, a missing list is a
    `ProviderError`, so a changed schema reads as a failure in the log rather than as 'no
    results' (either way the next provider answers). APIs that leave the list out when
    nothing matched pass `required=False`."""
    if not isinstance(payload, dict):
        raise ProviderError(provider, "the answer is not a JSON object")
    value: Any = payload
    for step in path:
        if not isinstance(value, dict) or step not in value:
            if required:
                raise ProviderError(provider, f"no result list at {'.'.join(path)} in the answer")
            return []
        value = value[step]
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProviderError(provider, f"{'.'.join(path)} in the answer is not a list")
    return value


def text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return value.strip() if isinstance(value, str) else ""


def hits(items: list[Any], *, url: str, title: str, snippet: str) -> list[Hit]:
    """Hits from result objects with an http(s) url; the rest are skipped."""
    out: list[Hit] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        link = text(item, url)
        if link.startswith(("http://", "https://")):
            out.append(Hit(url=link, title=text(item, title), snippet=text(item, snippet)))
    return out
