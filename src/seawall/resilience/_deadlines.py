"""Cancel work that passes its deadline, with one shared timer per tick per event loop.

`asyncio.timeout` schedules (and then cancels) a timer handle for every call:
about 6 µs here, the largest single cost in a pipeline. Calls whose deadlines
fall in the same 5 ms tick share one timer instead; a call only joins and leaves
a set. The cancellation semantics are `asyncio.timeout`'s: the work is
cancelled (its ``finally`` blocks run), the cancellation is taken back with
``Task.uncancel()`` so it never leaks into the caller, and an outer cancellation
that arrives meanwhile stays a `asyncio.CancelledError`.

The price is precision: a deadline fires up to one tick (5 ms) late.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import TypeVar

from seawall.resilience._context import Thunk

T = TypeVar("T")

TICK_SECONDS = 0.005


class DeadlineExpired(TimeoutError):  # noqa: N818 - internal signal, mapped to TimeoutExceeded
    """The work was cancelled because its deadline passed (internal).

    A `TimeoutError`, as `asyncio.timeout` raises, but a type of its own so that a
    `TimeoutError` raised by the work itself is never mistaken for it.
    """


class _Guard:
    __slots__ = ("cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False


class _Wheel:
    """The deadlines of one event loop, bucketed by tick; one timer per bucket.

    It holds no reference to its loop: it is the value of a weak-keyed mapping,
    and a value that refers to its key would keep the loop alive forever.
    """

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[int, set[_Guard]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, guard: _Guard, seconds: float) -> set[_Guard]:
        tick = math.ceil((loop.time() + seconds) / TICK_SECONDS)
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = set()
            loop.call_at(tick * TICK_SECONDS, self._fire, tick)
        bucket.add(guard)
        return bucket

    def _fire(self, tick: int) -> None:
        for guard in self.buckets.pop(tick, ()):
            guard.expired = True
            guard.task.cancel()


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheel] = weakref.WeakKeyDictionary()


async def within(seconds: float, thunk: Thunk[T]) -> T:
    """Await ``thunk()``, cancelling it if it runs longer than *seconds*.

    Raises:
        DeadlineExpired: the deadline passed and the work was cancelled (chained
            from the `asyncio.CancelledError` the work saw). A `TimeoutError`
            raised by the work itself passes through unchanged.
        RuntimeError: not called from inside an asyncio task.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    if task is None:
        raise RuntimeError("a deadline needs a running asyncio task")
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = _Wheel()
    guard = _Guard(task)
    bucket = wheel.add(loop, guard, seconds)
    try:
        return await thunk()
    except asyncio.CancelledError as exc:
        if guard.expired:
            guard.expired = False  # taken back below; the finally must not do it twice
            if task.uncancel() <= guard.cancelling:
                raise DeadlineExpired from exc
        raise
    finally:
        bucket.discard(guard)
        if guard.expired:
            # The work swallowed our cancellation (or finished in the same loop
            # turn): take it back so it does not leak into the caller.
            task.uncancel()
