"""`Bulkhead`: at most N calls in flight, a bounded FIFO queue, and a queue timeout.

A bulkhead keeps one slow dependency from taking every connection, task and
socket of the process: once *max_concurrent* calls are running, up to
*max_queue* more wait in arrival order for at most *queue_timeout*, and the
rest are refused at once with `BulkheadFull`.

A freed slot is handed straight to the first waiter (the count in flight does
not drop), so a newcomer can never overtake the queue. A waiter that is
cancelled or times out leaves the queue; if a slot had already been handed to
it, the slot is passed on. The success path is a counter test and a
``try/finally``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta
from typing import ClassVar, NoReturn, ParamSpec, TypeVar

from seawall.errors import BulkheadFull
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_BULKHEAD, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = ["Bulkhead"]

P = ParamSpec("P")
T = TypeVar("T")


class Bulkhead(PolicyCalls):
    """Limits how many calls run at once, with a bounded queue for the excess.

    Args:
        max_concurrent: calls allowed in flight at once.
        max_queue: calls allowed to wait for a slot (0: refuse as soon as all
            slots are taken).
        queue_timeout: the longest a call waits in the queue (seconds or
            timedelta); a call's deadline shortens it.
        name: reported in events and errors.
        clock: where the queue timeout is waited on.
        events: the hub to report to; None means `seawall.resilience.events`.

    Raises:
        ValueError: *max_concurrent* is below 1, *max_queue* is negative, or
            *queue_timeout* is not a positive duration.
    """

    stage: ClassVar[int] = STAGE_BULKHEAD

    __slots__ = (
        "_clock",
        "_events",
        "_in_flight",
        "_queue_timeout",
        "_waiters",
        "max_concurrent",
        "max_queue",
        "name",
    )

    def __init__(
        self,
        *,
        max_concurrent: int = 10,
        max_queue: int = 0,
        queue_timeout: float | timedelta = 5.0,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError(f"max_concurrent must be an integer, not {max_concurrent!r}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int):
            raise TypeError(f"max_queue must be an integer, not {max_queue!r}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, not {max_queue}")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.name = name
        self._queue_timeout = seconds(queue_timeout, name="queue_timeout")
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._events = events if events is not None else default_events
        self._in_flight = 0
        # Each waiter's future resolves to True when a slot is handed to it.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.name!r}, {self._in_flight}/{self.max_concurrent} in flight, "
            f"{len(self._waiters)}/{self.max_queue} queued)"
        )

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now (running, or handed a slot and about to run)."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* once a slot is free.

        Raises:
            BulkheadFull: every slot and queue place is taken, or the queue
                wait passed *queue_timeout* or the call's deadline.
        """
        if self._in_flight < self.max_concurrent:
            self._in_flight += 1
        else:
            await self._enqueue(context)
        try:
            return await thunk()
        finally:
            self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot changes hands; in flight stays the same
                return
        self._in_flight -= 1

    async def _enqueue(self, context: CallContext) -> None:
        if len(self._waiters) >= self.max_queue:
            self._reject("full")
        timeout = self._queue_timeout
        if context.deadline is not None:
            timeout = min(timeout, context.deadline - self._clock.monotonic())
            if timeout <= 0:
                self._reject("deadline")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.create_task(self._expire(waiter, timeout))
        try:
            granted = await waiter
        except asyncio.CancelledError:
            self._leave(waiter)
            raise
        finally:
            timer.cancel()
        if not granted:
            self._leave(waiter)
            self._reject("queue_timeout")

    async def _expire(self, waiter: asyncio.Future[bool], timeout: float) -> None:
        await self._clock.sleep(timeout)
        if not waiter.done():
            waiter.set_result(False)

    def _leave(self, waiter: asyncio.Future[bool]) -> None:
        # Cancelled or timed out while queued. If the slot was handed over in
        # the meantime, it is ours to pass on: no slot may leak.
        if waiter.done() and not waiter.cancelled() and waiter.result():
            self._release()
            return
        if waiter in self._waiters:  # a release may have taken it off already
            self._waiters.remove(waiter)

    def _reject(self, reason: str) -> NoReturn:
        hub = self._events
        if hub:
            hub.emit(
                "bulkhead_rejected",
                "bulkhead",
                self.name,
                reason=reason,
                in_flight=self._in_flight,
                queued=len(self._waiters),
            )
        raise BulkheadFull(
            bulkhead=self.name, max_concurrent=self.max_concurrent, max_queue=self.max_queue
        )
