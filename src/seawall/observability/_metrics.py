"""Prometheus counters created once per registry, however many objects count into them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter

__all__ = ["shared_counter"]

_COUNTERS: WeakKeyDictionary[CollectorRegistry, dict[str, Counter]] = WeakKeyDictionary()
_LOCK = threading.Lock()


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
        ValueError: *name* exists in *registry* with other labels.
    """
    registry = REGISTRY if registry is None else registry
    with _LOCK:
        families = _COUNTERS.setdefault(registry, {})
        counter = families.get(name)
        if counter is None:
            counter = families[name] = Counter(
                name, documentation, tuple(labels), registry=registry
            )
        elif tuple(counter._labelnames) != tuple(labels):
            raise ValueError(f"counter {name!r} exists with labels {counter._labelnames}")
    return counter
