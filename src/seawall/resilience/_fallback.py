"""`Fallback`: answer with a value (or a handler's value) when the call fails."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, ParamSpec, TypeVar, cast

from seawall.resilience._clock import SYSTEM_CLOCK, Clock
from seawall.resilience._context import STAGE_FALLBACK, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = ["Fallback", "FallbackHandler"]

P = ParamSpec("P")
T = TypeVar("T")

FallbackHandler = Callable[[Exception | None, CallContext], Any]
"""``handler(error, context)``: returns the replacement value, or an awaitable of it.

*error* is the exception that triggered the fallback, or None when a result was
rejected by *result_predicate*.
"""

_MISSING: Final = object()


class Fallback(PolicyCalls):
    """Replace a failure with a value, so the caller degrades instead of failing.

    The outermost policy in a `Pipeline`: it sees every error of the stages
    inside it, including an open circuit (`CircuitOpenError`), a rejection
    by a rate limit or bulkhead, a timeout, and retries given up. Together with
    a `Cache` that serves stale values, "cached or default" is one line::

        Pipeline([Fallback(value=[]), Cache(ttl=60, stale_ttl=3600), breaker, retry])

    Args:
        value: returned on failure (as is, not copied).
        handler: ``handler(error, context)`` returning the value or an awaitable
            of it; *error* is None when *result_predicate* rejected a result.
            Give exactly one of *value* and *handler*.
        on: the exception types that trigger the fallback; any other exception
            propagates. Cancellation is never one of them.
        result_predicate: also fall back when it returns true for a result
            (for example a 5xx response object).
        name: the policy's name, in events.
        clock: unused by the fallback itself; accepted like every policy's.
        events: where to report; defaults to the global `events` hub.

    Raises:
        ValueError: neither or both of *value* and *handler* are given, or *on*
            holds a type that is not an Exception subclass.
        TypeError: *handler* is not callable.
    """

    __slots__ = ("_clock", "_handler", "_hub", "_on", "_predicate", "_value", "name")

    stage: ClassVar[int] = STAGE_FALLBACK

    def __init__(
        self,
        *,
        value: Any = _MISSING,
        handler: FallbackHandler | None = None,
        on: type[Exception] | Iterable[type[Exception]] = (Exception,),
        result_predicate: Callable[[Any], bool] | None = None,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        if (value is _MISSING) == (handler is None):
            raise ValueError("give exactly one of value= and handler=")
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable as handler(error, context)")
        on_types = (on,) if isinstance(on, type) else tuple(on)
        for candidate in on_types:
            # Only Exception subclasses: a cancellation (BaseException) must always propagate.
            if not (isinstance(candidate, type) and issubclass(candidate, Exception)):
                raise ValueError(f"on takes Exception subclasses, got {candidate!r}")
        self.name = name
        self._value = value
        self._handler = handler
        self._on = on_types
        self._predicate = result_predicate
        self._clock = clock or SYSTEM_CLOCK
        self._hub = default_events if events is None else events

    def __repr__(self) -> str:
        what = "handler" if self._handler is not None else f"value={self._value!r}"
        return f"Fallback({self.name!r}, {what})"

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk*; on a chosen error (or rejected result) return the fallback instead.

        Raises:
            Exception: an exception not in *on*, or whatever the handler raises.
        """
        try:
            result = await thunk()
        except self._on as exc:
            return await self._fall_back(exc, context, type(exc).__name__)
        if self._predicate is not None and self._predicate(result):
            return await self._fall_back(None, context, "result")
        return result

    async def _fall_back(self, error: Exception | None, context: CallContext, reason: str) -> T:
        if self._hub:
            self._hub.emit(
                "fallback_used", "fallback", self.name, reason=reason, operation=context.operation
            )
        if self._handler is None:
            return cast("T", self._value)
        value = self._handler(error, context)
        if inspect.isawaitable(value):
            value = await value
        return cast("T", value)
