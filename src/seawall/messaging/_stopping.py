"""`Stopper`: end background loops between database operations, not in the middle of one.

Cancelling a task inside an aiosqlite (or asyncpg) call leaves a connection
half-closed that the event loop then cannot finish closing. seawall's loops
therefore check a stop flag and sleep through `Stopper.pause`, which returns
early when a stop is requested; cancellation is only the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib

# How long `Messaging.stop` lets loops and handlers finish before cancelling them.
GRACE_SECONDS = 10.0


class Signal:
    """A flag loops sleep on: `asyncio.Event`'s ``set``, ``clear``, ``is_set`` and ``wait``.

    `Stopper.pause` waits for the first of two signals, or a timeout, on one
    future and one timer. With `asyncio.Event` it took a task per event and
    `asyncio.wait`, each task then cancelled: the outbox relay pauses between
    rounds, about once per event on a quiet embedded service (issue #5).
    Like `asyncio.Event`, it is for one event loop; from another thread, call
    ``set`` through ``call_soon_threadsafe``.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        """Whether the signal is set."""
        return self._set

    def set(self) -> None:
        """Set the signal and wake everyone waiting for it."""
        if self._set:
            return
        self._set = True
        for waiter in self._waiters:
            _resolve(waiter)

    def clear(self) -> None:
        """Unset the signal: later waits sleep until it is set again."""
        self._set = False

    async def wait(self) -> None:
        """Return once the signal is set (at once if it is)."""
        await _first_of((self,), None)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _first_of(signals: tuple[Signal, ...], timeout: float | None) -> None:
    """Return once one of *signals* is set, or after *timeout* seconds."""
    if any(signal._set for signal in signals):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    for signal in signals:
        signal._waiters.add(waiter)
    timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for signal in signals:
            signal._waiters.discard(waiter)


class Stopper:
    """A stop request that sleeping loops wake up for."""

    def __init__(self) -> None:
        self._signal = Signal()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._signal.is_set()

    def stop(self) -> None:
        """Ask every loop watching this stopper to finish."""
        self._signal.set()

    async def pause(self, seconds: float, *, wake: Signal | None = None) -> None:
        """Sleep *seconds*, or less when a stop is requested or *wake* is set."""
        await _first_of((self._signal,) if wake is None else (self._signal, wake), seconds)


async def finish(tasks: set[asyncio.Task[None]] | list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to *grace* seconds for *tasks* to end, then cancel what is left."""
    pending = [task for task in tasks if not task.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
