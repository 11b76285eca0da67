"""Tools' JSON signatures for the ReAct system prompt's `<tools>` block.

Every tool describes itself in one line, `name(arg: type, …) — what it does` (see
`workers.tools.base.Tool`); this reads that line into the function-signature JSON the released
model was trained on, one object per line:
`{"type": "function", "function": {"name": …, "description": …, "parameters": {…}}}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from workers.tools.base import Tool

_LINE = re.compile(r"^\s*(?P<name>[\w.-]+)\s*\((?P<args>[^)]*)\)\s*(?:[—–:-]+\s*(?P<text>.*))?$", re.DOTALL)
_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "str": {"type": "string"},
    "integer": {"type": "integer"},
    "int": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
}


def _json_type(spelled: str) -> dict[str, Any]:
    spelled = spelled.strip().lower()
    if spelled.endswith("[]"):
        return {"type": "array", "items": _json_type(spelled[:-2])}
    return dict(_TYPES.get(spelled, {"type": "string"}))


def signature(tool: Tool) -> dict[str, Any]:
    match = _LINE.match(tool.description)
    properties: dict[str, Any] = {}
    required: list[str] = []
    description = tool.description
    if match:
        description = (match.group("text") or "").strip() or tool.description
        for part in filter(None, (p.strip() for p in match.group("args").split(","))):
            name, _, spelled = part.partition(":")
            name = name.strip().rstrip("?")
            if not name:
                continue
            properties[name] = _json_type(spelled or "string")
            if not part.split(":", 1)[0].strip().endswith("?"):
                required.append(name)
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def tools_block(tools: Iterable[Tool]) -> str:
    """The `<tools>` block's content: one JSON signature per line."""
    return "\n".join(json.dumps(signature(tool), ensure_ascii=False) for tool in tools)
