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


class Stopper:
    """A stop request that sleeping loops wake up for."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def stop(self) -> None:
        """Ask every loop watching this stopper to finish."""
        self._event.set()

    async def pause(self, seconds: float, *, wake: asyncio.Event | None = None) -> None:
        """Sleep *seconds*, or less when a stop is requested or *wake* is set."""
        if self._event.is_set():
            return
        waiters = [asyncio.ensure_future(self._event.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


async def finish(tasks: set[asyncio.Task[None]] | list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to *grace* seconds for *tasks* to end, then cancel what is left."""
    pending = [task for task in tasks if not task.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
