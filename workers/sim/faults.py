"""The simulated model's knobs, and the faults it injects (SIMULATION, not a real LLM).

A fault is drawn per call from `random.Random` seeded by (config seed, request seed, call number),
so a scripted run misbehaves the same way every time:

- `429`: rate limited, with `Retry-After: 0` so clients retry at once;
- `500`: a server error;
- `hang`: no answer for `hang_seconds` (cancellable), then an error;
- `malformed`: a 200 whose text breaks the output format, rotating among `MALFORMED_KINDS`.
"""

from __future__ import annotations

import random
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.settings import SimSettings
from workers.sim.policy import Reply, SimRole

FaultKind = Literal["429", "500", "hang", "malformed"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
MalformedKind = Literal["unclosed_tags", "bad_tool_json", "answer_and_tool_call", "no_action"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = get_args(MalformedKind)

# A bare `fault_rate` spreads over the faults every client must survive quickly; hangs cost a
# client its whole timeout, so they only happen when asked for by name.
_SHARED_KINDS: tuple[FaultKind, ...] = ("429", "500", "malformed")


class SimConfig(BaseModel):
    """Behaviour of the simulated model server; replaceable at runtime via `POST /sim/config`."""

    model_config = ConfigDict(extra="forbid")

    latency: float = Field(default=0.0, ge=0, description="seconds before the first token")
    tokens_per_second: float = Field(default=0.0, ge=0, description="output pace; 0 = instant")
    fault_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="total probability that a call faults; what the explicit rates leave is split "
        "evenly among the unset 429/500/malformed rates",
    )
    rate_429: float | None = Field(default=None, ge=0, le=1)
    rate_500: float | None = Field(default=None, ge=0, le=1)
    rate_hang: float | None = Field(default=None, ge=0, le=1)
    rate_malformed: float | None = Field(default=None, ge=0, le=1)
    hang_seconds: float = Field(default=3600.0, ge=0)
    min_rounds: int = Field(default=3, ge=1, description="research agents answer no earlier")
    seed: int = 0
    fault_roles: list[SimRole] = Field(
        default_factory=list, description="roles whose calls may fault; empty = every role"
    )
    max_faults: int | None = Field(
        default=None, ge=0, description="stop faulting after this many faults (scripts 'fail, then recover')"
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> SimConfig:
        if sum(self.fault_rates().values()) > 1 + 1e-9:
            raise ValueError("the fault rates add up to more than 1")
        return self

    def fault_rates(self) -> dict[FaultKind, float]:
        """The probability of each fault kind for one call."""
        explicit: dict[FaultKind, float | None] = {
            "429": self.rate_429,
            "500": self.rate_500,
            "hang": self.rate_hang,
            "malformed": self.rate_malformed,
        }
        rates = {kind: rate or 0.0 for kind, rate in explicit.items()}
        unset = [kind for kind in _SHARED_KINDS if explicit[kind] is None]
        left = max(0.0, self.fault_rate - sum(rates.values()))
        for kind in unset:
            rates[kind] = left / len(unset)
        return rates

    @classmethod
    def from_settings(cls, settings: SimSettings) -> SimConfig:
        return cls(
            latency=settings.latency,
            tokens_per_second=settings.tokens_per_second,
            fault_rate=settings.fault_rate,
            min_rounds=settings.min_rounds,
            seed=settings.seed,
        )


def decide_fault(
    config: SimConfig, *, request_seed: int | None, call: int, role: SimRole, faults_so_far: int
) -> FaultKind | None:
    """The fault for call number `call` (from 1), or None for a normal reply."""
    if config.fault_roles and role not in config.fault_roles:
        return None
    if config.max_faults is not None and faults_so_far >= config.max_faults:
        return None
    draw = random.Random(f"fault:{config.seed}:{request_seed}:{call}").random()
    edge = 0.0
    chosen: FaultKind | None = None
    for kind, rate in config.fault_rates().items():
        if rate <= 0:
            continue
        edge += rate
        chosen = kind
        if draw < edge:
            return kind
    # Float sums like 1/3 * 3 can land a hair under 1: a total of 1 must always fault.
    return chosen if edge >= 1 - 1e-9 else None


_ACTION = re.compile(r"<tool_call>.*?</tool_call>|<answer>.*?</answer>", re.DOTALL)


def malform(reply: Reply, kind: MalformedKind) -> Reply:
    """Break `reply` the way real models do, so the caller's parser and feedback get exercised."""
    content = reply.content
    action = _ACTION.search(content)
    head = content[: action.start()] if action else content
    if kind == "unclosed_tags":
        broken = re.sub(r"</(think|report|answer|tool_call)>", "", content)
        broken = broken[: max(1, len(broken) * 2 // 3)]
    elif kind == "bad_tool_json":
        broken = head + '<tool_call>\n{"name": "search", "arguments": {"query": ["unterminated\n</tool_call>'
    elif kind == "answer_and_tool_call":
        broken = (
            head
            + "<answer>an answer given too early</answer>\n"
            + '<tool_call>\n{"name": "search", "arguments": {"query": ["more"]}}\n</tool_call>'
        )
    else:
        broken = "I will look into this and come back with a report shortly."
    return Reply(role=reply.role, content=broken, reasoning=reply.reasoning)
