"""Optional OpenTelemetry spans: incoming requests, outgoing calls, relay publishes, consumers.

seawall does not need OpenTelemetry: nothing here imports it until tracing is
enabled (`enable_tracing`, or ``SEAWALL_TRACING__ENABLED`` in the service), and
until then every `span` returns one shared no-op context manager. Once
enabled, spans go to the given tracer provider (or the global one), each carries
the current correlation id as ``seawall.correlation_id`` (the thread that ties a
request, its outbox event and the consumers' work together in logs as well), and
trace context travels as a W3C ``traceparent``: on outgoing HTTP requests, and in
published CloudEvents (the distributed-tracing extension).

Install the extra for it: ``pip install 'seawall[otel]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final, Literal

from seawall.observability._correlation import current_correlation_id

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "CORRELATION_ATTRIBUTE",
    "SpanScope",
    "configure_tracing",
    "disable_tracing",
    "enable_tracing",
    "inject_trace_context",
    "span",
    "tracing_enabled",
]

SpanKind = Literal["server", "client", "producer", "consumer", "internal"]

CORRELATION_ATTRIBUTE: Final = "seawall.correlation_id"
"""The span attribute holding the correlation id of the work the span is part of."""

_TRACER_NAME: Final = "seawall"
# The tracer in use, or None while tracing is off (the hot-path check).
_tracer: Tracer | None = None
_OFF: Final[AbstractContextManager[None]] = nullcontext()


def enable_tracing(provider: TracerProvider | None = None) -> None:
    """Emit seawall's spans through *provider* (the global tracer provider if omitted).

    Raises:
        ImportError: OpenTelemetry is not installed (``pip install 'seawall[otel]'``).
    """
    global _tracer  # noqa: PLW0603 - one switch for the whole process, read on every span
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional; loaded when enabled
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "tracing needs OpenTelemetry: pip install 'seawall[otel]'", name=exc.name
        ) from exc
    import seawall  # noqa: PLC0415 - the version, for the instrumentation scope

    _tracer = trace.get_tracer(_TRACER_NAME, seawall.__version__, tracer_provider=provider)


def disable_tracing() -> None:
    """Stop emitting spans (spans already open finish normally)."""
    global _tracer  # noqa: PLW0603 - see enable_tracing
    _tracer = None


def tracing_enabled() -> bool:
    """Tell whether seawall emits spans."""
    return _tracer is not None


class SpanScope:
    """The span a `span` block opened, with the few operations seawall's hooks use."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Set one attribute on the span."""
        self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        """Rename the span (a request's route is only known once it was routed)."""
        self._span.update_name(name)

    def fail(self, description: str) -> None:
        """Mark the span as failed without an exception (a 5xx answer)."""
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - enabled only

        self._span.set_status(Status(StatusCode.ERROR, description))


def _kind(kind: SpanKind) -> Any:
    from opentelemetry.trace import SpanKind as Kinds  # noqa: PLC0415 - enabled only

    return {
        "server": Kinds.SERVER,
        "client": Kinds.CLIENT,
        "producer": Kinds.PRODUCER,
        "consumer": Kinds.CONSUMER,
        "internal": Kinds.INTERNAL,
    }[kind]


def span(
    name: str,
    *,
    kind: SpanKind = "internal",
    attributes: Mapping[str, str | int | float | bool | None] | None = None,
    carrier: Mapping[str, Any] | None = None,
    correlation_id: str | None = None,
) -> AbstractContextManager[SpanScope | None]:
    """Open a span named *name* around the block, when tracing is enabled.

    Args:
        name: the span's name (``POST /cases``, ``relay publish``).
        kind: the OpenTelemetry span kind.
        attributes: set on the span; None values are left out.
        carrier: where the parent's trace context is read from (``traceparent``,
            ``tracestate``: incoming headers, a CloudEvent's extensions); the
            current span is the parent when omitted or when it holds none (or
            an empty or malformed one).
        correlation_id: the correlation id to record; the current one by default.

    Returns:
        A context manager giving a `SpanScope`, or None when tracing is off. An
        exception leaving the block is recorded on the span and marks it failed.
    """
    tracer = _tracer
    if tracer is None:
        return _OFF  # a shared, reusable no-op: the hot path builds nothing
    return _span(tracer, name, kind, attributes, carrier, correlation_id)


@contextmanager
def _span(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, str | int | float | bool | None] | None,
    carrier: Mapping[str, Any] | None,
    correlation_id: str | None,
) -> Iterator[SpanScope]:
    context = None
    if carrier is not None and carrier.get("traceparent"):
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        context = TraceContextTextMapPropagator().extract(
            {key: value for key, value in carrier.items() if value and isinstance(value, str)}
        )
    values = {k: v for k, v in (attributes or {}).items() if v is not None}
    correlation = correlation_id or current_correlation_id()
    if correlation is not None:
        values[CORRELATION_ATTRIBUTE] = correlation
    with tracer.start_as_current_span(
        name, context=context, kind=_kind(kind), attributes=values
    ) as opened:
        yield SpanScope(opened)


def inject_trace_context(carrier: MutableMapping[str, str]) -> None:
    """Write the current span's ``traceparent`` (and ``tracestate``) into *carrier*.

    Nothing is written while tracing is off or outside any span.
    """
    if _tracer is None:
        return
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415 - enabled only
        TraceContextTextMapPropagator,
    )

    TraceContextTextMapPropagator().inject(carrier)


def configure_tracing(
    *,
    exporter: Literal["otlp", "console", "global"] = "otlp",
    endpoint: str | None = None,
    service_name: str = "seawall",
    sample_ratio: float = 1.0,
) -> Callable[[], None]:
    """Build a tracer provider that exports seawall's spans, and enable tracing with it.

    Args:
        exporter: ``otlp`` (OTLP over HTTP/protobuf), ``console`` (JSON on
            stdout, for trying it out), or ``global``: use the provider already
            installed (by ``opentelemetry-instrument`` or the application).
        endpoint: the OTLP traces URL; the exporter's own ``OTEL_EXPORTER_OTLP_*``
            variables apply when omitted.
        service_name: the ``service.name`` resource attribute.
        sample_ratio: the share of new traces recorded (a parent's decision wins).

    Returns:
        A function that flushes the spans still buffered, stops exporting and
        disables tracing.

    Raises:
        ImportError: OpenTelemetry (or its OTLP exporter) is not installed.
    """
    if exporter == "global":
        enable_tracing()
        return disable_tracing
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional extra
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        ParentBased,
        TraceIdRatioBased,
    )

    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        span_exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    enable_tracing(provider)

    def shutdown() -> None:
        disable_tracing()
        provider.shutdown()

    return shutdown
