"""`FakeClock`: time that moves only when a test (or a sleep) moves it."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A manual clock implementing `seawall.resilience.Clock`.

    ``sleep(s)`` does not wait: it records *s* in `sleeps`, moves the clock
    forward by *s* and yields to the event loop once, so concurrent tasks run.

    Args:
        start: the initial monotonic time.
        wall_start: the initial Unix time (for ``Retry-After`` dates).
    """

    def __init__(self, start: float = 1000.0, *, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The current fake monotonic time."""
        return self._now

    def wall(self) -> float:
        """The current fake Unix time (moves with the monotonic time)."""
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*.

        Raises:
            ValueError: *seconds* is negative.
        """
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, move time forward by it, and let other tasks run."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
