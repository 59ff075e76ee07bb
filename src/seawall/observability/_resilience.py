"""Subscribers that turn resilience events into log lines and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from seawall.resilience import EventHub, ResilienceEvent, events

# Routine events go to debug so a healthy service stays quiet; the rest are news.
_DEBUG_KINDS: Final = frozenset({"attempt", "cache_hit", "cache_miss"})
_WARNING_KINDS: Final = frozenset(
    {"breaker_opened", "retries_exhausted", "retry_budget_exhausted", "bulkhead_rejected"}
)
BREAKER_STATES: Final = {"breaker_closed": 0, "breaker_half_opened": 1, "breaker_opened": 2}


class StructlogSubscriber:
    """Writes each resilience event as a structlog line named after the event kind.

    ``attempt``, ``cache_hit`` and ``cache_miss`` are debug lines; breaker openings,
    exhausted retries and bulkhead rejections are warnings; the rest are info.
    """

    def __init__(self, logger_name: str = "seawall.resilience") -> None:
        self._log = structlog.get_logger(logger_name)

    def __call__(self, event: ResilienceEvent) -> None:
        """Log *event*."""
        if event.kind in _DEBUG_KINDS:
            method = self._log.debug
        elif event.kind in _WARNING_KINDS:
            method = self._log.warning
        else:
            method = self._log.info
        method(event.kind, policy=event.policy, name=event.name, **event.attributes)


class PrometheusSubscriber:
    """Counts resilience events and tracks breaker states as Prometheus metrics.

    Metrics:
        ``seawall_resilience_events_total{policy, name, kind}``: every event.
        ``seawall_breaker_state{name}``: 0 closed, 1 half-open, 2 open.

    Args:
        registry: where the metrics are registered (the default registry if omitted).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.events_total = Counter(
            "seawall_resilience_events",
            "Resilience policy events by policy, instance and kind.",
            ("policy", "name", "kind"),
            registry=registry,
        )
        self.breaker_state = Gauge(
            "seawall_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("name",),
            registry=registry,
        )

    def __call__(self, event: ResilienceEvent) -> None:
        """Count *event* (and move the breaker gauge on state changes)."""
        self.events_total.labels(event.policy, event.name, event.kind).inc()
        state = BREAKER_STATES.get(event.kind)
        if state is not None:
            self.breaker_state.labels(event.name).set(state)


def observe_resilience(
    hub: EventHub | None = None,
    *,
    log: bool = True,
    metrics: bool = True,
    registry: CollectorRegistry | None = None,
) -> list[Callable[[], None]]:
    """Subscribe the structlog and Prometheus subscribers to *hub* (the default hub).

    Returns:
        The unsubscribe functions, to undo it.
    """
    target = events if hub is None else hub
    undo: list[Callable[[], None]] = []
    if log:
        undo.append(target.subscribe(StructlogSubscriber()))
    if metrics:
        undo.append(target.subscribe(PrometheusSubscriber(registry)))
    return undo
