"""Subscribers that turn resilience events into log lines and Prometheus metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from prometheus_client import REGISTRY, CollectorRegistry

from seawall.observability._metrics import shared_counter, shared_gauge
from seawall.resilience import EventHub, ResilienceEvent, events

# Routine events go to debug so a healthy service stays quiet; the rest are news.
_DEBUG_KINDS: Final = frozenset({"attempt", "cache_hit", "cache_miss"})
_WARNING_KINDS: Final = frozenset(
    {"breaker_opened", "retries_exhausted", "retry_budget_exhausted", "bulkhead_rejected"}
)
BREAKER_STATES: Final = {"breaker_closed": 0, "breaker_half_opened": 1, "breaker_opened": 2}
_TRANSITIONS: Final = {
    "breaker_closed": "closed",
    "breaker_half_opened": "half_open",
    "breaker_opened": "open",
}
_REJECTIONS: Final = {
    "call_rejected": "circuit_open",
    "rate_limited": "rate_limited",
    "bulkhead_rejected": "bulkhead_full",
}
_CACHE_RESULTS: Final = {"cache_hit": "hit", "cache_miss": "miss", "cache_stale_served": "stale"}


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
        ``seawall_breaker_transitions_total{name, state}``: changes into *state*
        (``closed``, ``half_open``, ``open``).
        ``seawall_rejections_total{name, reason}``: calls refused before they were
        sent (``circuit_open``, ``rate_limited``, ``bulkhead_full``).
        ``seawall_cache_requests_total{name, result}``: cache look-ups (``hit``,
        ``miss``, ``stale`` for a stale answer served on error).

    Several subscribers on one registry share these families.

    Args:
        registry: where the metrics are registered (the default registry if omitted).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.events_total = shared_counter(
            "seawall_resilience_events",
            "Resilience policy events by policy, instance and kind.",
            ("policy", "name", "kind"),
            registry=registry,
        )
        self.breaker_state = shared_gauge(
            "seawall_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("name",),
            registry=registry,
        )
        self.breaker_transitions = shared_counter(
            "seawall_breaker_transitions",
            "Circuit breaker state changes, by breaker and the state entered.",
            ("name", "state"),
            registry=registry,
        )
        self.rejections = shared_counter(
            "seawall_rejections",
            "Calls refused before being sent, by policy instance and reason.",
            ("name", "reason"),
            registry=registry,
        )
        self.cache_requests = shared_counter(
            "seawall_cache_requests",
            "Response cache look-ups, by cache and result (hit, miss, stale).",
            ("name", "result"),
            registry=registry,
        )

    def __call__(self, event: ResilienceEvent) -> None:
        """Count *event* (and move the breaker gauge on state changes)."""
        kind = event.kind
        self.events_total.labels(event.policy, event.name, kind).inc()
        state = BREAKER_STATES.get(kind)
        if state is not None:
            self.breaker_state.labels(event.name).set(state)
            self.breaker_transitions.labels(event.name, _TRANSITIONS[kind]).inc()
            return
        reason = _REJECTIONS.get(kind)
        if reason is not None:
            self.rejections.labels(event.name, reason).inc()
            return
        result = _CACHE_RESULTS.get(kind)
        if result is not None:
            self.cache_requests.labels(event.name, result).inc()


@dataclass(slots=True)
class _Counting:
    # The hub and registry are held so that their ids, the key, cannot be reused meanwhile.
    hub: EventHub
    registry: CollectorRegistry
    unsubscribe: Callable[[], None]
    holders: int = 0


# One shared subscriber per (hub, registry); see `count_resilience`.
_COUNTING: dict[tuple[int, int], _Counting] = {}
_COUNTING_LOCK = threading.Lock()


def count_resilience(
    hub: EventHub | None = None, *, registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Count *hub*'s events (the default hub) into *registry*, once however many ask.

    Each app instance of a process asks at start-up and releases at shutdown; a
    second `PrometheusSubscriber` on the same hub and registry would count every
    event twice, so the first caller subscribes one and the last release removes it.

    Returns:
        The release function (calling it more than once does nothing).
    """
    target = events if hub is None else hub
    registry = REGISTRY if registry is None else registry
    key = (id(target), id(registry))
    with _COUNTING_LOCK:
        entry = _COUNTING.get(key)
        if entry is None:
            entry = _COUNTING[key] = _Counting(
                target, registry, target.subscribe(PrometheusSubscriber(registry))
            )
        entry.holders += 1
    released = False

    def release() -> None:
        nonlocal released
        with _COUNTING_LOCK:
            if released:
                return
            released = True
            current = _COUNTING.get(key)
            if current is None:
                return
            current.holders -= 1
            if current.holders == 0:
                del _COUNTING[key]
                current.unsubscribe()

    return release


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
