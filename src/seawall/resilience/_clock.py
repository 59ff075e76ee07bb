"""Time as a collaborator: every policy reads and waits through a `Clock`."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where policies read the time and wait.

    ``monotonic()`` measures durations; ``wall()`` is Unix time, used only to
    read ``Retry-After`` dates. Tests pass `seawall.testing.FakeClock`.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds*."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds* on the event loop."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def seconds(value: float | timedelta, *, name: str, allow_zero: bool = False) -> float:
    """Return *value* in float seconds, refusing negative (and, by default, zero) durations.

    Raises:
        ValueError: the duration is negative, zero when not allowed, or not finite.
    """
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be a finite duration")
    if result < 0 or (result == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}")
    return result
