"""The Prometheus families seawall's building blocks count into, one small class per block.

Each class takes the registry to count into (the default one when omitted) and
gets its families through the ``shared_*`` helpers, so any number of services,
relays or receivers in one process share one family per registry instead of
failing to register it twice. Every label here takes a bounded set of values:
names from configuration or code (services, consumers, providers, route
templates), outcomes from a fixed list, never an id, a raw path or an error text.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from seawall.observability._metrics import shared_counter, shared_histogram

__all__ = [
    "ConsumerMetrics",
    "HttpMetrics",
    "RelayMetrics",
    "ServiceCallMetrics",
    "WebhookMetrics",
    "bounded_method",
]

# Buckets for answers that usually take milliseconds and sometimes seconds.
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Buckets for how long an event waited before a consumer took it: up to an hour.
LAG_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# Attempts past this share one label value: a Retry allowed hundreds would mint hundreds.
_MAX_ATTEMPT_LABEL: Final = 10


def bounded_method(method: str) -> str:
    """*method* if it is a standard HTTP method, else ``OTHER`` (a client may send any token)."""
    return method if method in _METHODS else "OTHER"


class HttpMetrics:
    """Incoming HTTP requests: ``seawall_http_requests_total`` and their latency.

    Families:
        ``seawall_http_requests_total{method, route, status}``
        ``seawall_http_request_duration_seconds{method, route}``

    *route* is the route's path template (``/cases/{case_id}``), never the raw
    path; requests no route matched share ``unmatched``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.requests = shared_counter(
            "seawall_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = shared_histogram(
            "seawall_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        # Children by label values: `labels()` takes a lock and builds a key per call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = bounded_method(method)  # before the key: a client may send any token
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


class ServiceCallMetrics:
    """Attempts of `seawall.http.ExternalService` calls.

    Families:
        ``seawall_service_calls_total{service, outcome, attempt}``: one per attempt;
        *outcome* is ``ok``, ``client_error``, ``rate_limited``, ``timeout``,
        ``unavailable`` or ``invalid_response``; *attempt* is 1, 2, ... (``11+`` past ten).
        ``seawall_service_call_duration_seconds{service, outcome}``: one attempt's time.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.calls = shared_counter(
            "seawall_service_calls",
            "Attempts of calls to external services, by service, outcome and attempt number.",
            ("service", "outcome", "attempt"),
            registry=registry,
        )
        self.duration = shared_histogram(
            "seawall_service_call_duration_seconds",
            "Time of one attempt of a call to an external service, by service and outcome.",
            ("service", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, service: str, outcome: str, attempt: int, seconds: float) -> None:
        """Count one attempt."""
        key = (service, outcome, attempt)
        children = self._children.get(key)
        if children is None:
            label = str(attempt) if attempt <= _MAX_ATTEMPT_LABEL else f"{_MAX_ATTEMPT_LABEL + 1}+"
            children = self._children[key] = (
                self.calls.labels(service, outcome, label),
                self.duration.labels(service, outcome),
            )
        children[0].inc()
        children[1].observe(seconds)


class RelayMetrics:
    """What the outbox relay did with the rows it claimed.

    Families:
        ``seawall_relay_publishes_total{outcome}``: ``published``, ``failed``
        (will be retried) or ``parked`` (refused for good).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.publishes = shared_counter(
            "seawall_relay_publishes",
            "Outbox rows the relay tried to publish, by outcome (published, failed, parked).",
            ("outcome",),
            registry=registry,
        )

    def observe(self, *, published: int, failed: int, parked: int) -> None:
        """Count one round's outcome."""
        for outcome, count in (("published", published), ("failed", failed), ("parked", parked)):
            if count:
                self.publishes.labels(outcome).inc(count)


class ConsumerMetrics:
    """Deliveries handled by a `seawall.messaging.Worker`.

    Families:
        ``seawall_consumer_messages_total{consumer, outcome}``: ``handled``,
        ``duplicate`` (the inbox had it), ``retried`` (failed, redelivered later)
        or ``dead_lettered``.
        ``seawall_consumer_handling_duration_seconds{consumer}``: one delivery's time.
        ``seawall_consumer_lag_seconds{consumer}``: from the event's time to the
        moment the consumer took it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.messages = shared_counter(
            "seawall_consumer_messages",
            "Deliveries handled by consumers, by consumer group and outcome.",
            ("consumer", "outcome"),
            registry=registry,
        )
        self.duration = shared_histogram(
            "seawall_consumer_handling_duration_seconds",
            "Time to handle one delivery (handler, inbox and commit), by consumer group.",
            ("consumer",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lag = shared_histogram(
            "seawall_consumer_lag_seconds",
            "Time from an event's creation to a consumer taking it, by consumer group.",
            ("consumer",),
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def observe(self, consumer: str, outcome: str, seconds: float) -> None:
        """Count one settled delivery and its handling time."""
        self.messages.labels(consumer, outcome).inc()
        self.duration.labels(consumer).observe(seconds)

    def observe_lag(self, consumer: str, seconds: float) -> None:
        """Record how old an event was when *consumer* took it (clock skew clamps to 0)."""
        self.lag.labels(consumer).observe(max(0.0, seconds))


class WebhookMetrics:
    """Webhook deliveries a `seawall.webhooks.WebhookReceiver` was handed.

    Families:
        ``seawall_webhooks_received_total{provider, status}``: ``accepted``,
        ``duplicate``, ``challenge``, ``invalid_signature`` or ``malformed``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.received = shared_counter(
            "seawall_webhooks_received",
            "Webhook deliveries received, by provider and what the receiver did with them.",
            ("provider", "status"),
            registry=registry,
        )

    def observe(self, provider: str, status: str) -> None:
        """Count one delivery."""
        self.received.labels(provider, status).inc()
