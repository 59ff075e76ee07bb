"""Shared Prometheus families, the resilience subscriber, and the building blocks' families."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from seawall.observability import (
    ConsumerMetrics,
    HttpMetrics,
    PrometheusSubscriber,
    RelayMetrics,
    ServiceCallMetrics,
    WebhookMetrics,
    bounded_method,
    count_resilience,
    shared_counter,
    shared_gauge,
    shared_histogram,
)
from seawall.resilience import EventHub


def test_shared_families_are_created_once_per_registry() -> None:
    registry, other = CollectorRegistry(), CollectorRegistry()

    first = shared_histogram("seawall_x_seconds", "X.", ("a",), registry=registry)
    again = shared_histogram("seawall_x_seconds", "X.", ("a",), registry=registry)
    elsewhere = shared_histogram("seawall_x_seconds", "X.", ("a",), registry=other)

    assert first is again
    assert first is not elsewhere


def test_a_shared_family_refuses_other_labels_or_another_kind() -> None:
    registry = CollectorRegistry()
    shared_gauge("seawall_y", "Y.", ("a",), registry=registry)

    with pytest.raises(ValueError, match="labels"):
        shared_gauge("seawall_y", "Y.", ("b",), registry=registry)
    with pytest.raises(ValueError, match="Gauge"):
        shared_counter("seawall_y", "Y.", ("a",), registry=registry)


def test_building_blocks_in_one_registry_share_their_families() -> None:
    registry = CollectorRegistry()

    for _ in range(2):
        ServiceCallMetrics(registry).observe("crm", "ok", 1, 0.01)
        RelayMetrics(registry).observe(published=3, failed=1, parked=0)
        ConsumerMetrics(registry).observe("audit", "handled", 0.02)
        WebhookMetrics(registry).observe("github", "accepted")
        HttpMetrics(registry).observe("GET", "/cases/{case_id}", 200, 0.003)

    sample = registry.get_sample_value
    assert (
        sample("seawall_service_calls_total", {"service": "crm", "outcome": "ok", "attempt": "1"})
        == 2
    )
    assert sample("seawall_relay_publishes_total", {"outcome": "published"}) == 6
    assert sample("seawall_relay_publishes_total", {"outcome": "parked"}) is None
    assert (
        sample("seawall_consumer_messages_total", {"consumer": "audit", "outcome": "handled"}) == 2
    )
    assert (
        sample("seawall_webhooks_received_total", {"provider": "github", "status": "accepted"}) == 2
    )
    labels = {"method": "GET", "route": "/cases/{case_id}", "status": "200"}
    assert sample("seawall_http_requests_total", labels) == 2


def test_labels_stay_bounded_for_many_attempts_and_odd_methods() -> None:
    registry = CollectorRegistry()
    calls = ServiceCallMetrics(registry)

    for attempt in range(1, 30):
        calls.observe("crm", "timeout", attempt, 0.1)

    attempts = {
        s.labels["attempt"] for f in registry.collect() for s in f.samples if "attempt" in s.labels
    }
    assert attempts == {str(n) for n in range(1, 11)} | {"11+"}
    assert bounded_method("PATCH") == "PATCH"
    assert bounded_method("BREW") == "OTHER"


def test_the_subscriber_counts_transitions_rejections_and_cache_results() -> None:
    registry, hub = CollectorRegistry(), EventHub()
    hub.subscribe(PrometheusSubscriber(registry))

    hub.emit("breaker_opened", "circuit_breaker", "crm")
    hub.emit("call_rejected", "circuit_breaker", "crm")
    hub.emit("rate_limited", "rate_limit", "crm")
    hub.emit("bulkhead_rejected", "bulkhead", "crm")
    hub.emit("cache_hit", "cache", "crm:/rates")
    hub.emit("cache_stale_served", "cache", "crm:/rates")
    hub.emit("breaker_closed", "circuit_breaker", "crm")

    sample = registry.get_sample_value
    assert sample("seawall_breaker_state", {"name": "crm"}) == 0
    assert sample("seawall_breaker_transitions_total", {"name": "crm", "state": "open"}) == 1
    assert sample("seawall_breaker_transitions_total", {"name": "crm", "state": "closed"}) == 1
    for reason in ("circuit_open", "rate_limited", "bulkhead_full"):
        assert sample("seawall_rejections_total", {"name": "crm", "reason": reason}) == 1
    assert sample("seawall_cache_requests_total", {"name": "crm:/rates", "result": "hit"}) == 1
    assert sample("seawall_cache_requests_total", {"name": "crm:/rates", "result": "stale"}) == 1


def test_counting_resilience_twice_subscribes_once_until_the_last_release() -> None:
    registry, hub = CollectorRegistry(), EventHub()
    labels = {"policy": "retry", "name": "crm", "kind": "attempt"}

    first = count_resilience(hub, registry=registry)
    second = count_resilience(hub, registry=registry)
    hub.emit("attempt", "retry", "crm")
    first()
    first()  # a second release of the same holder does nothing
    hub.emit("attempt", "retry", "crm")
    second()
    hub.emit("attempt", "retry", "crm")

    assert registry.get_sample_value("seawall_resilience_events_total", labels) == 2
    assert not hub
