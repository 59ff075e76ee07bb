"""What policies report: `ResilienceEvent`s delivered to subscribers through an `EventHub`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventHub", "ResilienceEvent", "Subscriber", "events"]

_log = logging.getLogger("seawall.resilience")


@dataclass(frozen=True, slots=True)
class ResilienceEvent:
    """One thing a policy did.

    Attributes:
        kind: what happened, snake_case past tense or noun: ``attempt``,
            ``retry_scheduled``, ``retries_exhausted``, ``retry_budget_exhausted``,
            ``breaker_opened``, ``breaker_half_opened``, ``breaker_closed``, ``call_rejected``,
            ``rate_limited``, ``bulkhead_rejected``, ``timed_out``, ``cache_hit``,
            ``cache_miss``, ``cache_stale_served``, ``fallback_used``,
            ``chaos_injected``.
        policy: the policy type: ``circuit_breaker``, ``retry``, ``timeout``,
            ``rate_limit``, ``bulkhead``, ``cache``, ``fallback``, ``chaos``.
        name: the policy instance's name (usually the external service's).
        attributes: the facts (attempt number, delay, state, key, ...).
    """

    kind: str
    policy: str
    name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


Subscriber = Callable[[ResilienceEvent], None]


class EventHub:
    """Fans events out to subscribers.

    A hub with no subscribers is falsy, so a policy's hot path pays one truth
    test and builds no event. A subscriber that raises is logged and skipped:
    an observer never breaks the call it observes.
    """

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Deliver every event to *subscriber*; return a function that unsubscribes it."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def emit(self, kind: str, policy: str, name: str, **attributes: Any) -> None:
        """Build an event and hand it to every subscriber (nothing when there are none)."""
        if not self._subscribers:
            return
        event = ResilienceEvent(kind, policy, name, attributes)
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                _log.exception("resilience subscriber %r failed on %s", subscriber, kind)


events = EventHub()
"""The default hub: every policy reports here unless it was given its own."""
