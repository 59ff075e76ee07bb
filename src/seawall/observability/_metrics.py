"""Prometheus families created once per registry, however many objects count into them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["shared_counter", "shared_gauge", "shared_histogram"]

M = TypeVar("M", bound=MetricWrapperBase)

_FAMILIES: WeakKeyDictionary[CollectorRegistry, dict[str, MetricWrapperBase]] = WeakKeyDictionary()
_LOCK = threading.Lock()


def _shared(
    kind: type[M],
    name: str,
    documentation: str,
    labels: Sequence[str],
    registry: CollectorRegistry | None,
    **options: Any,
) -> M:
    registry = REGISTRY if registry is None else registry
    with _LOCK:
        families = _FAMILIES.setdefault(registry, {})
        family = families.get(name)
        if family is None:
            family = families[name] = kind(
                name, documentation, tuple(labels), registry=registry, **options
            )
        elif not isinstance(family, kind):
            raise ValueError(f"metric {name!r} exists as a {type(family).__name__}")
        elif tuple(family._labelnames) != tuple(labels):
            raise ValueError(f"metric {name!r} exists with labels {family._labelnames}")
    return family


def shared_counter(
    name: str,
    documentation: str,
    labels: Sequence[str],
    *,
    registry: CollectorRegistry | None = None,
) -> Counter:
    """The counter *name* in *registry* (the default one), created on first use.

    Several objects (every adapter, every alerter) count into one family;
    registering it twice would raise, so the first call creates it and the
    others get it back. A registry that is dropped takes its counters with it.

    Raises:
        ValueError: *name* exists in *registry* with other labels, or is not a counter.
    """
    return _shared(Counter, name, documentation, labels, registry)


def shared_gauge(
    name: str,
    documentation: str,
    labels: Sequence[str],
    *,
    registry: CollectorRegistry | None = None,
) -> Gauge:
    """The gauge *name* in *registry* (the default one), created on first use.

    Raises:
        ValueError: *name* exists in *registry* with other labels, or is not a gauge.
    """
    return _shared(Gauge, name, documentation, labels, registry)


def shared_histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    *,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    registry: CollectorRegistry | None = None,
) -> Histogram:
    """The histogram *name* in *registry* (the default one), created on first use.

    The buckets of the first call win; later calls get that histogram back.

    Raises:
        ValueError: *name* exists in *registry* with other labels, or is not a histogram.
    """
    return _shared(Histogram, name, documentation, labels, registry, buckets=tuple(buckets))
