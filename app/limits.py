"""The limits a job request must keep, one set for the API and the CLI.

The public schema (`ResearchCreate`) carries the fixed bounds; a server may set some of them
stricter (`agent.max_agents`, `agent.max_rounds_limit`, `server.max_query_chars`, …) and refuses
budgets too small to do anything. `request_limit_errors` reports the stricter ones in the shape of
pydantic's errors, so the API answers them as a 422 like any schema error, and `allowed_ranges`
tells the CLI what to print ("--agents: 40 is out of range; allowed: 1 to 16").
"""

from __future__ import annotations

from typing import Any

from annotated_types import Ge, Le

from app.schemas import MAX_AGENTS, MAX_ROUNDS, ResearchCreate
from workers.budget import budget_problems
from workers.settings import Settings


def _schema_bounds(field: str) -> tuple[float | None, float | None]:
    low = high = None
    for item in ResearchCreate.model_fields[field].metadata:
        if isinstance(item, Ge):
            low = float(item.ge)  # type: ignore[arg-type]
        elif isinstance(item, Le):
            high = float(item.le)  # type: ignore[arg-type]
    return low, high


def allowed_ranges(settings: Settings) -> dict[str, tuple[float | None, float | None]]:
    """(least, most) each numeric request field accepts on a server with these settings."""
    ranges = {field: _schema_bounds(field) for field in ("agents", "max_rounds", "max_tokens", "max_seconds")}
    ranges["agents"] = (ranges["agents"][0], min(MAX_AGENTS, settings.agent.max_agents))
    ranges["max_rounds"] = (ranges["max_rounds"][0], min(MAX_ROUNDS, settings.agent.max_rounds_limit))
    return ranges


def request_limit_errors(body: ResearchCreate, settings: Settings) -> list[dict[str, Any]]:
    """The limits a server may set stricter than the public schema, as schema-shaped errors."""
    errors: list[dict[str, Any]] = []
    max_chars = settings.server.max_query_chars
    if len(body.query) > max_chars:
        errors.append(
            limit_error("query", "string_too_long", f"String should have at most {max_chars} characters")
        )
    ranges = allowed_ranges(settings)
    for field in ("agents", "max_rounds"):
        value, most = getattr(body, field), ranges[field][1]
        if value is not None and most is not None and value > most:
            errors.append(
                limit_error(field, "less_than_equal", f"Input should be less than or equal to {most:g}")
            )
    max_files = settings.files.max_files_per_job
    if body.files is not None and len(set(body.files)) > max_files:
        errors.append(limit_error("files", "too_long", f"List should have at most {max_files} items"))
    agents = body.agents or settings.agent.default_agents
    for field, message in budget_problems(agents, body.max_tokens, body.max_seconds, settings.budget):
        errors.append(limit_error(field, "budget_too_small", message))
    return errors


def limit_error(field: str, type_: str, message: str) -> dict[str, Any]:
    return {"type": type_, "loc": ("body", field), "msg": message}
