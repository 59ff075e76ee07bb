"""`Timeout`: a limit per attempt and a limit on the whole call, cancelling the work cleanly.

Both parts cancel the running work the way `asyncio.timeout` does (its
``finally`` blocks run, and an outer cancellation still arrives as
`asyncio.CancelledError`), through `seawall.resilience._deadlines`, which shares
one timer per 5 ms tick instead of scheduling one per call. In a `Pipeline`
the total part sits outside `Retry` and publishes ``context.deadline``, so
`Retry` never sleeps past it; the per-attempt part sits inside, around each
attempt.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import ClassVar, ParamSpec, TypeVar

from seawall.errors import TimeoutExceeded
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import (
    STAGE_ATTEMPT_TIMEOUT,
    STAGE_TOTAL_TIMEOUT,
    CallContext,
    Thunk,
)
from seawall.resilience._deadlines import DeadlineExpired, within
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = ["AttemptTimeout", "Timeout", "TotalTimeout"]

P = ParamSpec("P")
T = TypeVar("T")

_POLICY = "timeout"


def _expired(
    name: str, limit: float, scope: str, context: CallContext, hub: EventHub
) -> TimeoutExceeded:
    if hub:
        hub.emit(
            "timed_out", _POLICY, name, scope=scope, seconds=limit, operation=context.operation
        )
    return TimeoutExceeded(timeout=name, seconds=limit, scope=scope)


class AttemptTimeout:
    """The per-attempt part of a `Timeout` (pipeline position: inside `Retry`).

    Args:
        seconds: the limit for one attempt.
        name: reported in events and errors.
        events: the event hub.
    """

    stage: ClassVar[int] = STAGE_ATTEMPT_TIMEOUT

    __slots__ = ("_hub", "name", "seconds")

    def __init__(self, *, seconds: float, name: str, events: EventHub) -> None:
        self.seconds = seconds
        self.name = name
        self._hub = events

    def __repr__(self) -> str:
        return f"AttemptTimeout({self.name!r}, {self.seconds:g}s)"

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run one attempt, cancelling it after ``seconds``.

        Raises:
            seawall.errors.TimeoutExceeded: the attempt ran out of time (``scope="attempt"``).
        """
        try:
            return await within(self.seconds, thunk)
        except DeadlineExpired as exc:
            raise _expired(self.name, self.seconds, "attempt", context, self._hub) from exc


class TotalTimeout:
    """The whole-call part of a `Timeout` (pipeline position: outside `Retry`).

    Sets ``context.deadline`` (on the policy's clock) for the duration of the
    call, keeping an earlier deadline if one is already set.

    Args:
        seconds: the limit for the whole call, retries and waits included.
        name: reported in events and errors.
        clock: where the deadline is read.
        events: the event hub.
    """

    stage: ClassVar[int] = STAGE_TOTAL_TIMEOUT

    __slots__ = ("_clock", "_hub", "name", "seconds")

    def __init__(self, *, seconds: float, name: str, clock: Clock, events: EventHub) -> None:
        self.seconds = seconds
        self.name = name
        self._clock = clock
        self._hub = events

    def __repr__(self) -> str:
        return f"TotalTimeout({self.name!r}, {self.seconds:g}s)"

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run the whole call, cancelling it after ``seconds``.

        Raises:
            seawall.errors.TimeoutExceeded: the call ran out of time (``scope="total"``).
        """
        outer = context.deadline
        deadline = self._clock.monotonic() + self.seconds
        context.deadline = deadline if outer is None else min(outer, deadline)
        try:
            return await within(self.seconds, thunk)
        except DeadlineExpired as exc:
            raise _expired(self.name, self.seconds, "total", context, self._hub) from exc
        finally:
            context.deadline = outer


class Timeout(PolicyCalls):
    """Limits how long each attempt, and the whole call, may take.

    Used alone (``await Timeout(per_attempt=2, total=5).call(fn)`` or as a
    decorator) it applies both limits. In a `Pipeline` it splits into a
    `TotalTimeout` outside `Retry` and an `AttemptTimeout` inside it.

    Events: ``timed_out`` (scope, seconds).

    Args:
        per_attempt: the limit for one attempt, or None.
        total: the limit for the whole call with its retries, or None.
        name: reported in events and errors.
        clock: where the total deadline is read (the cancellation itself runs on
            the event loop's clock).
        events: the event hub (the global one by default).

    Raises:
        ValueError: neither limit is given, or one is not positive.
    """

    stage: ClassVar[int] = STAGE_ATTEMPT_TIMEOUT

    __slots__ = ("_attempt", "_total", "name")

    def __init__(
        self,
        *,
        per_attempt: float | timedelta | None = 10.0,
        total: float | timedelta | None = None,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        if per_attempt is None and total is None:
            raise ValueError("give per_attempt, total, or both")
        hub = events if events is not None else default_events
        self.name = name
        self._attempt = (
            None
            if per_attempt is None
            else AttemptTimeout(
                seconds=seconds(per_attempt, name="per_attempt"), name=name, events=hub
            )
        )
        self._total = (
            None
            if total is None
            else TotalTimeout(
                seconds=seconds(total, name="total"),
                name=name,
                clock=clock or SYSTEM_CLOCK,
                events=hub,
            )
        )

    @property
    def per_attempt(self) -> float | None:
        """Seconds allowed for one attempt, or None."""
        return None if self._attempt is None else self._attempt.seconds

    @property
    def total(self) -> float | None:
        """Seconds allowed for the whole call, or None."""
        return None if self._total is None else self._total.seconds

    def __repr__(self) -> str:
        return f"Timeout({self.name!r}, per_attempt={self.per_attempt}, total={self.total})"

    def pipeline_stages(self) -> tuple[TotalTimeout | AttemptTimeout, ...]:
        """The parts a `Pipeline` places: the total one (if any), then the per-attempt one."""
        return tuple(part for part in (self._total, self._attempt) if part is not None)

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* under both limits.

        Raises:
            seawall.errors.TimeoutExceeded: a limit was reached (``scope`` says which).
            asyncio.CancelledError: the caller was cancelled (never converted).
        """
        if self._total is None:
            return await self._attempt.run(thunk, context)  # type: ignore[union-attr]  # one is set
        if self._attempt is None:
            return await self._total.run(thunk, context)
        return await self._total.run(functools.partial(self._attempt.run, thunk, context), context)
