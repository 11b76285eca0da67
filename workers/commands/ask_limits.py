"""`heavyresearch ask` checks its options with the API's own limits (`app.limits`), before any
engine starts, and says what is allowed: `--agents: 40 is out of range; allowed: 1 to 16`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import ValidationError

from app.limits import allowed_ranges, request_limit_errors
from app.schemas import ResearchCreate
from workers.settings import Settings

FIELDS = ("agents", "max_rounds", "max_seconds", "max_tokens")


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def ask_problems(settings: Settings, args: argparse.Namespace, *, server_limits: bool) -> list[str]:
    """One line per option the API would refuse; `server_limits` False checks only the public
    schema (a remote service applies its own settings, and says so with a 422)."""
    given: dict[str, Any] = {
        field: getattr(args, field) for field in FIELDS if getattr(args, field) is not None
    }
    try:
        body = ResearchCreate.model_validate({"query": args.question, **given})
    except ValidationError as exc:
        return [_line(settings, str(error["loc"][-1]), error["msg"], given) for error in exc.errors()]
    if not server_limits:
        return []
    return [
        _line(settings, str(error["loc"][-1]), error["msg"], given, error["type"])
        for error in request_limit_errors(body, settings)
    ]


def _line(settings: Settings, field: str, message: str, given: dict[str, Any], type_: str = "") -> str:
    if field == "query":
        return f"the question: {message}"
    low, high = allowed_ranges(settings).get(field, (None, None))
    if type_ == "budget_too_small" or low is None or high is None:
        return f"{option(field)}: {message}"
    return f"{option(field)}: {given.get(field)!s} is out of range; allowed: {_num(low)} to {_num(high)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe_refusal(status: int, body: str) -> list[str]:
    """A service's refusal of the job, one line per field when it names them (422)."""
    try:
        error = json.loads(body).get("error") or {}
        fields = [(str(e["path"]), str(e["message"])) for e in error.get("errors") or []]
    except (ValueError, AttributeError, KeyError, TypeError):
        return [f"the service refused the job: {status} {body}"]
    if not fields:
        return [f"the service refused the job: {status} {error.get('message') or body}"]
    return [
        f"{option(path.removeprefix('body.')) if path.startswith('body.') else path}: {message}"
        for path, message in fields
    ]
