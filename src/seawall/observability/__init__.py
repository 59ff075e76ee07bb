"""Logs, metrics, traces and correlation: JSON lines, redaction, ids, Prometheus, OpenTelemetry.

The correlation id of the current unit of work (an HTTP request, a consumed
message) lives in a context variable: every log line carries it, outgoing calls
and outbox events read it, and nobody passes it by hand.

The metric families and the resilience subscribers load on first use: they
bring in ``prometheus_client`` and `seawall.resilience`, which settings and the
database layer (importers of `mask_url`) must not pay for. Tracing is optional:
`span` is a no-op until `enable_tracing` or `configure_tracing` is called, and
OpenTelemetry is imported only then.
"""

from typing import TYPE_CHECKING, Any

from seawall.observability._correlation import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    bind_correlation,
    current_causation_id,
    current_correlation_id,
    new_correlation_id,
    valid_correlation_id,
)
from seawall.observability._logging import configure_logging, mask_url, redact
from seawall.observability._tracing import (
    CORRELATION_ATTRIBUTE,
    SpanScope,
    configure_tracing,
    disable_tracing,
    enable_tracing,
    inject_trace_context,
    span,
    tracing_enabled,
)

if TYPE_CHECKING:
    from seawall.observability._families import (
        ConsumerMetrics,
        HttpMetrics,
        RelayMetrics,
        ServiceCallMetrics,
        WebhookMetrics,
        bounded_method,
    )
    from seawall.observability._metrics import shared_counter, shared_gauge, shared_histogram
    from seawall.observability._resilience import (
        PrometheusSubscriber,
        StructlogSubscriber,
        count_resilience,
        observe_resilience,
    )

_LAZY = frozenset(
    {"PrometheusSubscriber", "StructlogSubscriber", "count_resilience", "observe_resilience"}
)
_METRICS = frozenset({"shared_counter", "shared_gauge", "shared_histogram"})
_FAMILIES = frozenset(
    {
        "ConsumerMetrics",
        "HttpMetrics",
        "RelayMetrics",
        "ServiceCallMetrics",
        "WebhookMetrics",
        "bounded_method",
    }
)


def __getattr__(name: str) -> Any:
    if name in _METRICS:
        from seawall.observability import _metrics  # noqa: PLC0415 - loaded on first use

        return getattr(_metrics, name)
    if name in _FAMILIES:
        from seawall.observability import _families  # noqa: PLC0415 - loaded on first use

        return getattr(_families, name)
    if name in _LAZY:
        from seawall.observability import _resilience  # noqa: PLC0415 - loaded on first use

        return getattr(_resilience, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_ATTRIBUTE",
    "CORRELATION_HEADER",
    "ConsumerMetrics",
    "HttpMetrics",
    "PrometheusSubscriber",
    "RelayMetrics",
    "ServiceCallMetrics",
    "SpanScope",
    "StructlogSubscriber",
    "WebhookMetrics",
    "bind_correlation",
    "bounded_method",
    "configure_logging",
    "configure_tracing",
    "count_resilience",
    "current_causation_id",
    "current_correlation_id",
    "disable_tracing",
    "enable_tracing",
    "inject_trace_context",
    "mask_url",
    "new_correlation_id",
    "observe_resilience",
    "redact",
    "shared_counter",
    "shared_gauge",
    "shared_histogram",
    "span",
    "tracing_enabled",
    "valid_correlation_id",
]
