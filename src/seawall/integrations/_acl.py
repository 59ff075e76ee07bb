"""What an anti-corruption layer did not understand: counted, logged once, never fatal.

A translation from a provider's payload into our models is a pure function. When
it meets a value it has no mapping for (a new ticket state, a new charge
status), it takes a safe default and says so in its result, as `UnknownValue`
entries. The adapter, the I/O shell around it, hands them to an
`UnknownValueRecorder`, which counts them in
``seawall_acl_unknown_values_total{adapter, field}`` and logs each distinct
value once (``acl_unknown_value``), so a provider's change shows up in a
dashboard without flooding the logs or the metrics' label space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter

from seawall.observability import shared_counter

__all__ = ["Translated", "UnknownValue", "UnknownValueRecorder"]

T = TypeVar("T")

_log = structlog.get_logger("seawall.integrations")
_VALUE_LIMIT: Final = 100
# The value is not a label: a provider sending free text would create a series per value.


def _counter(registry: CollectorRegistry | None) -> Counter:
    return shared_counter(
        "seawall_acl_unknown_values",
        "Provider values an anti-corruption layer had no mapping for, by adapter and field.",
        ("adapter", "field"),
        registry=registry,
    )


@dataclass(frozen=True, slots=True)
class UnknownValue:
    """A provider value that a translation had no mapping for.

    Attributes:
        field: our name for the field (``priority``, ``status``, ``charge_status``).
        value: the provider's value, as it came.
        default: what the translation used instead.
    """

    field: str
    value: str
    default: str


@dataclass(frozen=True, slots=True)
class Translated(Generic[T]):
    """The result of a translation: our model, and what it had to guess.

    Attributes:
        value: the translated model.
        unknown: the values that had no mapping (empty when all were known).
    """

    value: T
    unknown: tuple[UnknownValue, ...] = ()


class UnknownValueRecorder:
    """Counts unknown provider values and logs each distinct one once.

    Args:
        adapter: the adapter's name, the ``adapter`` label (``salesforce``).
        registry: where the counter lives (the default Prometheus registry).
        max_remembered: how many distinct values are remembered as already
            logged; past that the memory is cleared, so a flood of distinct
            values is logged again now and then rather than growing memory.
    """

    def __init__(
        self,
        adapter: str,
        *,
        registry: CollectorRegistry | None = None,
        max_remembered: int = 1000,
    ) -> None:
        if max_remembered < 1:
            raise ValueError("max_remembered must be positive")
        self.adapter = adapter
        self._counter = _counter(registry)
        self._logged: set[tuple[str, str]] = set()
        self._max_remembered = max_remembered

    def __repr__(self) -> str:
        return f"UnknownValueRecorder({self.adapter!r})"

    def record(self, unknown: Iterable[UnknownValue]) -> None:
        """Count each unknown value, and log the ones not logged before."""
        for item in unknown:
            self._counter.labels(self.adapter, item.field).inc()
            seen = (item.field, item.value)
            if seen in self._logged:
                continue
            if len(self._logged) >= self._max_remembered:
                self._logged.clear()
            self._logged.add(seen)
            _log.warning(
                "acl_unknown_value",
                adapter=self.adapter,
                field=item.field,
                value=item.value[:_VALUE_LIMIT],
                default=item.default,
            )
