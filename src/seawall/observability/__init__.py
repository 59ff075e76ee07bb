"""Logs, metrics and correlation: JSON lines, redaction, correlation ids, resilience events.

The correlation id of the current unit of work (an HTTP request, a consumed
message) lives in a context variable: every log line carries it, outgoing calls
and outbox events read it, and nobody passes it by hand.

The resilience subscribers load on first use: they bring in ``prometheus_client``
and `seawall.resilience`, which settings and the database layer (importers of
`mask_url`) must not pay for.
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

if TYPE_CHECKING:
    from seawall.observability._metrics import shared_counter
    from seawall.observability._resilience import (
        PrometheusSubscriber,
        StructlogSubscriber,
        observe_resilience,
    )

_LAZY = frozenset({"PrometheusSubscriber", "StructlogSubscriber", "observe_resilience"})


def __getattr__(name: str) -> Any:
    if name == "shared_counter":
        from seawall.observability import _metrics  # noqa: PLC0415 - loaded on first use

        return _metrics.shared_counter
    if name in _LAZY:
        from seawall.observability import _resilience  # noqa: PLC0415 - loaded on first use

        return getattr(_resilience, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "PrometheusSubscriber",
    "StructlogSubscriber",
    "bind_correlation",
    "configure_logging",
    "current_causation_id",
    "current_correlation_id",
    "mask_url",
    "new_correlation_id",
    "observe_resilience",
    "redact",
    "shared_counter",
    "valid_correlation_id",
]
