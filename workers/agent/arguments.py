"""The argument slips real models make in tool calls, and how each is read.

The released tools take `search(query: string[])`, `visit(url: string[], goal: string)`,
`google_scholar(query: string[])`, `PythonInterpreter(code)` and `parse_file(files: string[])`
(DESIGN.md §1). Models write `queries` for `query`, `urls` for `url`, a bare string where a list
is expected, or leave out the tool's name and give only its arguments. Each fix here is recorded
as a recovery, so a user sees how often their model needed one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Signature:
    lists: frozenset[str]  # parameters typed string[]
    others: frozenset[str] = frozenset()
    aliases: dict[str, str] = field(default_factory=dict)  # what models write -> the parameter

    @property
    def names(self) -> frozenset[str]:
        return self.lists | self.others

    def accepts(self, keys: Collection[str]) -> bool:
        return bool(keys) and all(k in self.names or k in self.aliases for k in keys)


_QUERY_ALIASES = {"queries": "query", "q": "query", "search_query": "query", "search_queries": "query"}
SIGNATURES: dict[str, Signature] = {
    "search": Signature(frozenset({"query"}), aliases=_QUERY_ALIASES),
    "google_scholar": Signature(frozenset({"query"}), aliases=_QUERY_ALIASES),
    "visit": Signature(
        frozenset({"url"}), frozenset({"goal"}), {"urls": "url", "link": "url", "links": "url"}
    ),
    "parse_file": Signature(frozenset({"files"}), aliases={"file": "files", "paths": "files"}),
    "PythonInterpreter": Signature(frozenset(), frozenset({"code"})),
}


def fix_arguments(name: str, arguments: dict[str, Any], recoveries: list[str]) -> dict[str, Any]:
    """`arguments` with aliased names renamed and bare strings wrapped in lists, for a known tool."""
    signature = SIGNATURES.get(name)
    if signature is None:
        return arguments
    fixed: dict[str, Any] = {}
    for key, value in arguments.items():
        target = key
        if key not in signature.names and key in signature.aliases:
            target = signature.aliases[key]
            if target in arguments:
                fixed[key] = value  # both given: keep the real one, leave the alias to the tool
                continue
            recoveries.append(f'read argument "{key}" of {name} as "{target}"')
        if target in signature.lists and isinstance(value, str):
            recoveries.append(f'wrapped the bare string given for "{target}" of {name} in a list')
            value = [value]
        fixed[target] = value
    return fixed


def infer_tool(arguments: dict[str, Any], available: Collection[str]) -> tuple[str | None, list[str]]:
    """The one available tool whose parameters fit `arguments`; (None, candidates) if not exactly one."""
    fits = [name for name in available if name in SIGNATURES and SIGNATURES[name].accepts(arguments)]
    return (fits[0] if len(fits) == 1 else None), fits
