"""The circuit breaker's sliding windows: `CountWindow`, `TimeWindow` and their counters.

`CountWindow` and `TimeWindow` are the options a breaker is given; `CountRing`
and `TimeBuckets` count the outcomes they describe in constant memory, each
outcome as flag bits (`FAILED`, `SLOW`), and answer with `WindowStats` for
`should_trip` to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, cast

from seawall.resilience._breaker_rules import WindowStats
from seawall.resilience._clock import seconds

__all__ = [
    "FAILED",
    "SLOW",
    "CountRing",
    "CountWindow",
    "TimeBuckets",
    "TimeWindow",
]


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Judge the last *size* calls (a count-based sliding window).

    Args:
        size: how many of the most recent calls are counted.

    Raises:
        ValueError: *size* is not positive.
    """

    size: int = 100

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("CountWindow size must be at least 1")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Judge the calls of the last *seconds* (a time-based sliding window).

    Calls are counted in *buckets* equal slices of the window, so memory stays
    constant however many calls arrive; the window slides one bucket at a time.

    Args:
        seconds: the window's length (float seconds or a timedelta).
        buckets: how many slices (default: one per second, at most 60).

    Raises:
        ValueError: the length is not positive or *buckets* is below 1.
    """

    seconds: float | timedelta = 60.0
    buckets: int | None = None

    def __post_init__(self) -> None:
        length = seconds(self.seconds, name="TimeWindow seconds")
        buckets = self.buckets if self.buckets is not None else max(1, min(60, math.ceil(length)))
        if buckets < 1:
            raise ValueError("TimeWindow buckets must be at least 1")
        object.__setattr__(self, "seconds", length)
        object.__setattr__(self, "buckets", buckets)


FAILED: Final = 1
SLOW: Final = 2


class CountRing:
    """The last *size* outcomes in a ring of flag bytes, with running totals."""

    __slots__ = ("_flags", "_next", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._flags = bytearray(size)
        self._next = 0
        self.calls = self.failures = self.slow = 0

    def record(self, flags: int, now: float) -> None:
        ring = self._flags
        index = self._next
        if self.calls == len(ring):
            evicted = ring[index]
            self.failures -= evicted & FAILED
            self.slow -= (evicted & SLOW) >> 1
        else:
            self.calls += 1
        ring[index] = flags
        self.failures += flags & FAILED
        self.slow += (flags & SLOW) >> 1
        self._next = (index + 1) % len(ring)

    def stats(self, now: float) -> WindowStats:
        return WindowStats(self.calls, self.failures, self.slow)

    def clear(self) -> None:
        self._flags = bytearray(len(self._flags))
        self._next = 0
        self.calls = self.failures = self.slow = 0


class TimeBuckets:
    """Outcomes of the last *seconds*, summed per bucket, with running totals."""

    __slots__ = ("_calls", "_failures", "_last", "_slow", "_width", "calls", "failures", "slow")

    def __init__(self, window: TimeWindow) -> None:
        count = cast("int", window.buckets)
        self._width = cast("float", window.seconds) / count
        self._calls = [0] * count
        self._failures = [0] * count
        self._slow = [0] * count
        self._last: int | None = None
        self.calls = self.failures = self.slow = 0

    def _advance(self, now: float) -> int:
        # Empty the buckets that slid out since the last call: at most one pass over the ring.
        current = int(now // self._width)
        last = self._last
        size = len(self._calls)
        if last is None or current - last >= size:
            self.clear()
        elif current > last:
            for tick in range(last + 1, current + 1):
                slot = tick % size
                self.calls -= self._calls[slot]
                self.failures -= self._failures[slot]
                self.slow -= self._slow[slot]
                self._calls[slot] = self._failures[slot] = self._slow[slot] = 0
        if last is None or current > last:
            self._last = current
        return current % size

    def record(self, flags: int, now: float) -> None:
        slot = self._advance(now)
        failed, slow = flags & FAILED, (flags & SLOW) >> 1
        self._calls[slot] += 1
        self._failures[slot] += failed
        self._slow[slot] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def stats(self, now: float) -> WindowStats:
        self._advance(now)
        return WindowStats(self.calls, self.failures, self.slow)

    def clear(self) -> None:
        size = len(self._calls)
        self._calls = [0] * size
        self._failures = [0] * size
        self._slow = [0] * size
        self._last = None
        self.calls = self.failures = self.slow = 0
