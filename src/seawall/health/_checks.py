"""Checks for external services, and the alert sent when a breaker opens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry, Counter

from seawall.errors import ExternalServiceError
from seawall.health._monitor import DependencyResult, Status, clip
from seawall.http import ExternalService
from seawall.observability import shared_counter
from seawall.resilience import EventHub, ResilienceEvent, events

__all__ = ["BreakerAlerts", "ServiceCheck"]

_log = structlog.get_logger("seawall.health")

# Passive judgement: this many failed calls in a row with no success between
# makes a service unhealthy; fewer make it degraded.
UNHEALTHY_AFTER_FAILURES: Final = 3
# A fallback served this recently keeps the service reported as degraded.
DEGRADED_AFTER_FALLBACK_SECONDS: Final = 60.0


def _when(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


class ServiceCheck:
    """The health of one `ExternalService`.

    With a ``health_path`` the service is probed (one GET, no retries, not
    through the breaker); without one it is judged from its recent calls: three
    failures in a row make it unhealthy, one or two degraded. An open breaker is
    always unhealthy, a half-open one degraded, and a fallback served or a 429
    received in the last minute keeps it degraded.
    """

    kind = "http"

    def __init__(self, service: ExternalService) -> None:
        self.service = service
        self.name = service.name
        self.critical = service.critical

    def __repr__(self) -> str:
        return f"ServiceCheck({self.name!r})"

    async def check(self) -> DependencyResult:
        """Probe or judge the service now."""
        service = self.service
        health = service.health
        breaker = service.breaker_state()
        latency: float | None = health.last_latency_ms
        error: str | None = health.last_error
        status: Status = "healthy"
        mode = "passive"
        if service.health_path is not None and breaker != "open":
            mode = "probe"
            try:
                latency = round(await service.probe(), 2)
                error = None
            except ExternalServiceError as exc:
                status, error = "unhealthy", clip(exc)
        elif health.consecutive_failures >= UNHEALTHY_AFTER_FAILURES:
            status = "unhealthy"
        elif health.consecutive_failures > 0:
            status = "degraded"
        else:
            error = None
        if breaker == "open":
            status = "unhealthy"
            error = error or "the circuit breaker is open"
        elif breaker == "half_open" and status == "healthy":
            status = "degraded"
        degraded_at = health.degraded_at
        if (
            status == "healthy"
            and degraded_at is not None
            and service.clock.wall() - degraded_at < DEGRADED_AFTER_FALLBACK_SECONDS
        ):
            status = "degraded"
            error = error or "a fallback answer was served in the last minute"
        return DependencyResult(
            self.name,
            status,
            self.critical,
            self.kind,
            latency_ms=latency,
            error=error,
            breaker=breaker,
            details={
                "mode": mode,
                "calls": health.calls,
                "failures": health.failures,
                "consecutive_failures": health.consecutive_failures,
                "last_success_at": _when(health.last_success_at),
                "last_failure_at": _when(health.last_failure_at),
            },
        )


class BreakerAlerts:
    """Raises an alert when a circuit breaker opens: a log line, a metric, a webhook.

    Subscribe it to the resilience `EventHub` with `attach`. Each opening writes
    a ``dependency_alert`` warning, counts ``seawall_alerts_total{kind, name}``
    and, when a webhook service is given, posts ``{"text": …, "breaker": …,
    "retry_after": …}`` to it (Slack's incoming-webhook shape) without making
    the failing call wait for it.

    Args:
        webhook: the `ExternalService` of the ops webhook, or None.
        path: the path to post to under its base URL (empty: the base URL itself).
        registry: where the counter is registered.
    """

    def __init__(
        self,
        webhook: ExternalService | None = None,
        *,
        path: str = "/",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.webhook = webhook
        self.path = path
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Any = None
        self.alerts_total = _alerts_counter(registry)

    def attach(self, hub: EventHub | None = None) -> BreakerAlerts:
        """Start listening to *hub* (the global one by default)."""
        self._unsubscribe = (events if hub is None else hub).subscribe(self)
        return self

    async def aclose(self) -> None:
        """Stop listening and wait for the webhook posts in flight."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def __call__(self, event: ResilienceEvent) -> None:
        """Raise the alert for a ``breaker_opened`` event; ignore the others."""
        if event.kind != "breaker_opened":
            return
        retry_after = event.attributes.get("retry_after")
        _log.warning(
            "dependency_alert",
            alert="breaker_opened",
            breaker=event.name,
            reason=event.attributes.get("reason"),
            retry_after=retry_after,
        )
        self.alerts_total.labels("breaker_opened", event.name).inc()
        if self.webhook is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._post(event.name, retry_after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, breaker: str, retry_after: object) -> None:
        assert self.webhook is not None
        payload = {
            "text": f"seawall: circuit breaker {breaker!r} opened; calls to it fail fast",
            "alert": "breaker_opened",
            "breaker": breaker,
            "retry_after": retry_after,
        }
        try:
            await self.webhook.post(self.path, json=payload)
        except Exception as exc:
            _log.warning("dependency_alert_not_sent", breaker=breaker, error=clip(exc))


def _alerts_counter(registry: CollectorRegistry | None) -> Counter:
    return shared_counter(
        "seawall_alerts",
        "Alerts raised, by kind and dependency.",
        ("kind", "name"),
        registry=registry,
    )
