"""`Chaos`: inject faults, latency and bad results at a rate, to rehearse an outage.

Off by default. The choice of what to inject is the pure `decide()`; `Chaos.run`
draws the random numbers, sleeps through the clock and raises or returns.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, NamedTuple, ParamSpec, TypeVar, cast

from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_CHAOS, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = ["Chaos", "ChaosDecision", "decide"]

P = ParamSpec("P")
T = TypeVar("T")

_MISSING: Final = object()


class ChaosDecision(NamedTuple):
    """What to inject into one call.

    Attributes:
        latency: sleep before going on.
        outcome: ``"fault"`` (raise instead of calling), ``"result"`` (return the
            bad result instead of calling) or None (make the real call).
    """

    latency: bool
    outcome: Literal["fault", "result"] | None


def decide(
    draw: Callable[[], float], *, latency_rate: float, fault_rate: float, result_rate: float
) -> ChaosDecision:
    """Choose what to inject, drawing one number in [0, 1) per kind with a non-zero rate.

    Each kind is drawn independently; a fault wins over a bad result. Kinds
    with a zero rate draw nothing, so a seeded generator gives the same
    sequence whatever the other rates are set to.

    Args:
        draw: returns a uniform number in [0, 1) (``random.Random.random``).
        latency_rate: probability of added latency.
        fault_rate: probability of an injected exception.
        result_rate: probability of an injected bad result.
    """
    latency = latency_rate > 0 and draw() < latency_rate
    outcome: Literal["fault", "result"] | None = None
    if fault_rate > 0 and draw() < fault_rate:
        outcome = "fault"
    elif result_rate > 0 and draw() < result_rate:
        outcome = "result"
    return ChaosDecision(latency, outcome)


def _rate(value: float, name: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return rate


class Chaos(PolicyCalls):
    """Inject faults, latency and bad results into calls, at set rates, when enabled.

    The innermost policy in a `Pipeline`, right before the real call, so that
    every other policy (timeouts, retries, the breaker, fallbacks) meets the
    injected trouble exactly as it would meet the real thing.

    Off by default. Switch it at runtime with ``chaos.enabled = True``, or pass
    a callable as *enabled* that is read on every call (a settings flag, a
    feature toggle). While disabled a call costs one attribute check.

    Per call, independently: with *latency_rate* sleep *latency* (through the
    clock); then with *fault_rate* raise *fault* instead of calling; else with
    *result_rate* return *result* instead of calling.

    Args:
        enabled: a bool, or a zero-argument callable returning one, read per call.
        fault_rate: probability in [0, 1] of raising *fault*.
        fault: an exception class or factory (a fresh exception per injection),
            or an instance (re-raised with its traceback reset). Defaults to a
            ``ConnectionError``, which transient-error retries handle.
        latency_rate: probability in [0, 1] of sleeping *latency*.
        latency: seconds (or timedelta) of injected latency.
        result_rate: probability in [0, 1] of returning *result*.
        result: the bad result, or a zero-argument callable making one.
        rng: the random source; pass ``random.Random(seed)`` for repeatable runs.
        name: the policy's name, in events and injected errors.
        clock: where injected latency sleeps; defaults to the system clock.
        events: where to report; defaults to the global `events` hub.

    Raises:
        ValueError: a rate is outside [0, 1], *result_rate* is set without a
            *result*, or *fault* is an instance that is not an Exception.
        TypeError: *enabled* is neither a bool nor callable.
    """

    __slots__ = (
        "_clock",
        "_enabled",
        "_fault",
        "_hub",
        "_latency",
        "_result",
        "_rng",
        "fault_rate",
        "latency_rate",
        "name",
        "result_rate",
    )

    stage: ClassVar[int] = STAGE_CHAOS

    def __init__(
        self,
        *,
        enabled: bool | Callable[[], bool] = False,
        fault_rate: float = 0.0,
        fault: BaseException | Callable[[], BaseException] | None = None,
        latency_rate: float = 0.0,
        latency: float | timedelta = 1.0,
        result_rate: float = 0.0,
        result: Any = _MISSING,
        rng: random.Random | None = None,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.fault_rate = _rate(fault_rate, "fault_rate")
        self.latency_rate = _rate(latency_rate, "latency_rate")
        self.result_rate = _rate(result_rate, "result_rate")
        if self.result_rate > 0 and result is _MISSING:
            raise ValueError("result_rate needs result= (the bad result to inject)")
        if isinstance(fault, BaseException) and not isinstance(fault, Exception):
            raise ValueError("fault must be an Exception: injecting a cancellation or exit lies")
        self.name = name
        self._enabled: bool | Callable[[], bool] = False
        self.enabled = enabled
        self._fault = fault
        self._latency = seconds(latency, name="latency", allow_zero=True)
        self._result = result
        # Chaos rates, not security: a seedable PRNG is what tests need.
        self._rng = rng or random.Random()  # noqa: S311
        self._clock = clock or SYSTEM_CLOCK
        self._hub = default_events if events is None else events

    @property
    def enabled(self) -> bool | Callable[[], bool]:
        """Whether chaos is on: a bool, or a callable read on every call."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool | Callable[[], bool]) -> None:
        if not isinstance(value, bool) and not callable(value):
            raise TypeError("enabled must be a bool or a zero-argument callable returning one")
        self._enabled = value

    @property
    def is_active(self) -> bool:
        """Whether chaos would be applied to a call made now."""
        enabled = self._enabled
        return enabled if isinstance(enabled, bool) else bool(enabled())

    def __repr__(self) -> str:
        return (
            f"Chaos({self.name!r}, enabled={self._enabled!r}, fault_rate={self.fault_rate:g}, "
            f"latency_rate={self.latency_rate:g}, result_rate={self.result_rate:g})"
        )

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk*, unless chaos is on and decides to slow it, fail it or fake its result.

        Raises:
            Exception: the injected fault, or whatever *thunk* raises.
        """
        enabled = self._enabled
        if enabled is False or (enabled is not True and not enabled()):
            return await thunk()
        decision = decide(
            self._rng.random,
            latency_rate=self.latency_rate,
            fault_rate=self.fault_rate,
            result_rate=self.result_rate,
        )
        if decision.latency:
            self._report("latency", context, seconds=self._latency)
            await self._clock.sleep(self._latency)
        if decision.outcome == "fault":
            self._report("fault", context)
            raise self._make_fault()
        if decision.outcome == "result":
            self._report("result", context)
            result = self._result
            return cast("T", result() if callable(result) else result)
        return await thunk()

    def _report(self, kind: str, context: CallContext, **attributes: Any) -> None:
        if self._hub:
            self._hub.emit(
                "chaos_injected",
                "chaos",
                self.name,
                injection=kind,
                operation=context.operation,
                **attributes,
            )

    def _make_fault(self) -> BaseException:
        fault = self._fault
        if fault is None:
            return ConnectionError(f"chaos {self.name!r} injected a connection failure")
        if isinstance(fault, BaseException):
            # A reused instance would grow its traceback on every raise.
            return fault.with_traceback(None)
        return fault()
