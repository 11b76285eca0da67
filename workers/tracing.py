"""Traces: OpenTelemetry spans when `tracing.enabled` is on (the `otel` extra), no-ops otherwise.

This is the only module that imports opentelemetry, and it does so only in `installed()` once
tracing is on: with tracing off (the default) the service never loads it, and every `span()` is
a shared no-op. One trace follows a job from the request that submitted it to its last model call:

    POST /v1/research                      server span (the API process; a client's own
    └── job                                  `traceparent` header is its parent)
        ├── agent                          the worker process: parented through the job
        │   ├── round                        record's `trace_context` (W3C traceparent)
        │   │   ├── chat research
        │   │   └── execute_tool search
        │   └── forced_answer
        │       └── chat research
        └── synthesis
            └── chat synthesis

A span inherits `heavyresearch.job.id`, `heavyresearch.agent` and `heavyresearch.round` from
the spans around it, so every span of a job can be found by job id. A span that ends with an
exception has status ERROR and `error.type`; a cancelled one has `heavyresearch.cancelled`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Literal, Protocol, TypeVar

from workers.errors import TracingUnavailable
from workers.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

T = TypeVar("T")
AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue | None]

JOB_ID = "heavyresearch.job.id"
AGENT = "heavyresearch.agent"
ROUND = "heavyresearch.round"
# Attributes a span hands down to the spans inside it.
INHERITED = (JOB_ID, AGENT, ROUND)

INSTALL_HINT = (
    "tracing.enabled is true but OpenTelemetry is not installed: install the `otel` extra "
    "(pip install 'heavyresearch[otel]', or uv sync --extra otel), or set HR_TRACING__ENABLED=false"
)


class SpanHandle(Protocol):
    """What a caller may do with the span it is in."""

    def set(self, attributes: Attributes) -> None: ...

    def rename(self, name: str) -> None: ...


class _NoSpan:
    def set(self, attributes: Attributes) -> None:
        pass

    def rename(self, name: str) -> None:
        pass


NO_SPAN = _NoSpan()


class _LiveSpan:
    def __init__(self, span: Span) -> None:
        self._span = span

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def rename(self, name: str) -> None:
        self._span.update_name(name)


@dataclass
class _Tracing:
    tracer: Tracer
    provider: TracerProvider
    propagator: TraceContextTextMapPropagator
    out: IO[str] | None  # the "file" exporter's file


_state: _Tracing | None = None
_inherited: ContextVar[Mapping[str, AttributeValue]] = ContextVar(
    "trace_inherited", default=MappingProxyType({})
)


def active() -> bool:
    return _state is not None


@contextmanager
def installed(
    settings: TracingSettings, *, service: str, exporter: SpanExporter | None = None
) -> Iterator[None]:
    """Tracing on for this process while the block runs (nothing when `settings.enabled` is
    off); spans still queued are exported at the end. Raises `TracingUnavailable` when tracing
    is on and the `otel` extra is missing. `exporter`: one of the caller's own (an embedding
    program's, a test's `InMemorySpanExporter`) instead of the configured one; it gets each
    span as it ends."""
    global _state
    if not settings.enabled:
        yield
        return
    state = _start(settings, service, exporter)
    previous, _state = _state, state
    try:
        yield
    finally:
        _state = previous
        state.provider.shutdown()
        if state.out is not None:
            state.out.close()


def require(settings: TracingSettings) -> None:
    """Raises `TracingUnavailable` when tracing is on and the `otel` extra is missing: a
    process checks at start, before it does anything else."""
    if not settings.enabled:
        return
    try:
        import opentelemetry.sdk.trace

        if settings.exporter == "otlp":
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as exc:
        raise TracingUnavailable(INSTALL_HINT) from exc


def _start(settings: TracingSettings, service: str, given: SpanExporter | None) -> _Tracing:
    require(settings)
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; without them the process says what it is.
    resource = Resource.create({"heavyresearch.process": service})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), batching from OTEL_BSP_*.
    provider = TracerProvider(resource=resource)
    out = None
    if given is not None:
        provider.add_span_processor(SimpleSpanProcessor(given))
    else:
        exporter, out = _exporter(settings)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return _Tracing(provider.get_tracer("heavyresearch"), provider, TraceContextTextMapPropagator(), out)


def _exporter(settings: TracingSettings) -> tuple[SpanExporter, IO[str] | None]:
    if settings.exporter == "file":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        path = Path(settings.file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("a", encoding="utf-8")

        def one_line(span: ReadableSpan) -> str:
            return str(span.to_json(indent=None)) + "\n"

        return ConsoleSpanExporter(out=out, formatter=one_line), out
    # Endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_(TRACES_)… variables.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(), None


@contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: Mapping[str, str] | None = None,
    kind: Literal["internal", "server"] = "internal",
) -> Iterator[SpanHandle]:
    """A span around the block, current inside it (and in tasks started from it). `parent`:
    W3C trace context headers (`traceparent`, `tracestate`) to continue, instead of the
    current span; an empty mapping starts a new trace."""
    state = _state
    if state is None:
        yield NO_SPAN
        return
    from opentelemetry import context, trace

    given = {k: v for k, v in (attributes or {}).items() if v is not None}
    outer = _inherited.get()
    handed = {**outer, **{k: v for k, v in given.items() if k in INHERITED}}
    parent_context = state.propagator.extract(dict(parent)) if parent is not None else None
    live = state.tracer.start_span(
        name,
        context=parent_context,
        kind=trace.SpanKind.SERVER if kind == "server" else trace.SpanKind.INTERNAL,
        attributes={**outer, **given},
    )
    token = context.attach(trace.set_span_in_context(live))
    handed_token = _inherited.set(handed)
    try:
        yield _LiveSpan(live)
    except Exception as exc:
        live.record_exception(exc)
        live.set_attribute("error.type", type(exc).__name__)
        live.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
        raise
    except BaseException:
        # A cancel scope's cancellation (a cancel, a drain, a deadline): not a failure.
        live.set_attribute("heavyresearch.cancelled", True)
        raise
    finally:
        _inherited.reset(handed_token)
        context.detach(token)
        live.end()


async def traced(
    name: str,
    awaitable: Awaitable[T],
    attributes: Attributes | None = None,
    *,
    outcome: Callable[[T], Attributes] | None = None,
) -> T:
    """`await awaitable` inside a span; `outcome` turns the result into attributes of it."""
    with span(name, attributes) as handle:
        result = await awaitable
        if outcome is not None and active():
            handle.set(outcome(result))
        return result


def annotate(attributes: Attributes) -> None:
    """Add attributes to the current span (nothing when tracing is off)."""
    if _state is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def trace_context() -> dict[str, str] | None:
    """The current span's W3C trace context headers, to carry it to another process (a job
    record); None when tracing is off or no span is current."""
    state = _state
    if state is None:
        return None
    carrier: dict[str, str] = {}
    state.propagator.inject(carrier)
    return carrier or None
