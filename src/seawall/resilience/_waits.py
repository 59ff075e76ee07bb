"""tenacity-compatible retry strategies: ``wait_*``, ``stop_*`` and ``retry_if_*``.

The names, arguments and formulas follow tenacity, so code moves over by
changing the import. Every strategy is a small immutable object called with a
`RetryCallState` (as in tenacity); the delays are pure functions of that state
and of an injectable ``random.Random`` (``rng=``), so they are tested directly.

`compute_delay` is the backoff arithmetic shared with the `Retry` policy, with
the jitter kinds of the AWS Architecture Blog ("Exponential Backoff And
Jitter"): ``none``, ``full``, ``equal`` and ``decorrelated``.
"""

from __future__ import annotations

import builtins
import random
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

__all__ = [
    "MAX_WAIT",
    "Jitter",
    "Outcome",
    "RetryAction",
    "RetryCallState",
    "compute_delay",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_base",
    "retry_if_exception",
    "retry_if_exception_type",
    "retry_if_not_exception_type",
    "retry_if_not_result",
    "retry_if_result",
    "retry_never",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_base",
    "stop_before_delay",
    "stop_never",
    "wait_base",
    "wait_chain",
    "wait_combine",
    "wait_decorrelated_jitter",
    "wait_equal_jitter",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]

MAX_WAIT: float = sys.maxsize / 2
"""The largest wait, as in tenacity (used as the default ``max``)."""

Jitter = Literal["none", "full", "equal", "decorrelated"]
"""How a backoff delay is randomised (AWS Architecture Blog definitions)."""

_JITTERS = frozenset(("none", "full", "equal", "decorrelated"))
# 2.0 ** 1024 overflows a float; any exponent past this is "the cap" anyway.
_MAX_EXPONENT = 1000


def _secs(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _uniform(rng: random.Random | None) -> Callable[[float, float], float]:
    # Jitter spreads load; it is not a secret, so the module-level generator is fine.
    return rng.uniform if rng is not None else random.uniform


class Outcome:
    """What one attempt produced: a value or an exception (tenacity's ``Future``).

    Attributes:
        attempt_number: the attempt that produced it, counted from 1.
    """

    __slots__ = ("_exception", "_value", "attempt_number")

    def __init__(
        self, attempt_number: int, *, value: object = None, exception: BaseException | None = None
    ) -> None:
        self.attempt_number = attempt_number
        self._value = value
        self._exception = exception

    @property
    def failed(self) -> bool:
        """Whether the attempt raised."""
        return self._exception is not None

    def exception(self) -> BaseException | None:
        """The attempt's exception, or None if it returned."""
        return self._exception

    def result(self) -> Any:
        """The attempt's value.

        Raises:
            BaseException: the attempt's own exception, if it raised one.
        """
        if self._exception is not None:
            raise self._exception
        return self._value

    def __repr__(self) -> str:
        inner = f"exception={self._exception!r}" if self.failed else f"value={self._value!r}"
        return f"Outcome(attempt {self.attempt_number}, {inner})"


class RetryAction:
    """The decision to sleep before the next attempt (tenacity's ``RetryAction``).

    Attributes:
        sleep: seconds until the next attempt.
    """

    __slots__ = ("sleep",)

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"RetryAction(sleep={self.sleep:g})"


class RetryCallState:
    """The state of one retried call, handed to every strategy and callback.

    It has the attributes tenacity's ``RetryCallState`` has, so custom
    strategies and ``before_sleep`` callbacks written for tenacity keep working.

    Attributes:
        fn: the function being retried (None inside a pipeline).
        args: its positional arguments.
        kwargs: its keyword arguments.
        start_time: monotonic time when the first attempt started.
        attempt_number: the current attempt, counted from 1.
        outcome: what the current attempt produced (None while it runs).
        outcome_timestamp: monotonic time when it produced it.
        idle_for: seconds slept so far between attempts.
        upcoming_sleep: the delay chosen before the next attempt.
        last_sleep: the delay slept before the current attempt (0 on the first);
            decorrelated jitter grows from it.
        next_action: the scheduled sleep, set just before ``before_sleep`` runs.
    """

    __slots__ = (
        "args",
        "attempt_number",
        "fn",
        "idle_for",
        "kwargs",
        "last_sleep",
        "next_action",
        "outcome",
        "outcome_timestamp",
        "start_time",
        "upcoming_sleep",
    )

    def __init__(
        self,
        *,
        start_time: float = 0.0,
        attempt_number: int = 1,
        outcome: Outcome | None = None,
        outcome_timestamp: float | None = None,
        fn: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.start_time = start_time
        self.attempt_number = attempt_number
        self.outcome = outcome
        self.outcome_timestamp = outcome_timestamp
        self.idle_for = 0.0
        self.upcoming_sleep = 0.0
        self.last_sleep = 0.0
        self.next_action: RetryAction | None = None

    @property
    def seconds_since_start(self) -> float | None:
        """Seconds from the first attempt's start to the current outcome (None before one)."""
        if self.outcome_timestamp is None:
            return None
        return self.outcome_timestamp - self.start_time

    def __repr__(self) -> str:
        return (
            f"<RetryCallState attempt #{self.attempt_number}; "
            f"slept for {self.idle_for:.2f}; last result: {self.outcome!r}>"
        )


WaitFn = Callable[[RetryCallState], float]
StopFn = Callable[[RetryCallState], bool]
RetryFn = Callable[[RetryCallState], bool]


def compute_delay(
    attempt: int,
    *,
    jitter: Jitter = "full",
    base: float,
    cap: float,
    previous: float = 0.0,
    floor: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The delay before retrying after failed attempt *attempt* (pure, given *rng*).

    With ``t = min(cap, base * 2 ** (attempt - 1))``: ``none`` waits ``t``;
    ``full`` waits ``uniform(0, t)``; ``equal`` waits ``t/2 + uniform(0, t/2)``;
    ``decorrelated`` waits ``min(cap, uniform(base, 3 * previous))`` where
    *previous* is the last delay (``base`` before the first retry). The result
    is then raised to *floor* and kept within *cap*.

    Args:
        attempt: the attempt that just failed, counted from 1.
        jitter: the randomisation kind.
        base: the first delay, in seconds.
        cap: the largest delay, in seconds.
        previous: the delay slept before *attempt* (0 if none); used by ``decorrelated``.
        floor: the smallest delay, in seconds.
        rng: the random generator (seed one in tests); the shared one by default.

    Returns:
        Seconds to wait.

    Raises:
        ValueError: *attempt* is below 1 or *jitter* is unknown.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    uniform = _uniform(rng)
    if jitter == "decorrelated":
        last = previous if previous > 0 else base
        delay = min(cap, uniform(base, last * 3))
    else:
        exponential = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
        if jitter == "full":
            delay = uniform(0.0, exponential)
        elif jitter == "equal":
            half = exponential / 2
            delay = half + uniform(0.0, half)
        elif jitter == "none":
            delay = exponential
        else:
            raise ValueError(f"jitter must be one of {sorted(_JITTERS)}, not {jitter!r}")
    return min(cap, max(floor, delay))


# --- waits ------------------------------------------------------------------------------------


class wait_base:  # noqa: N801 - tenacity's names, so code moves over by changing the import
    """A wait strategy: seconds to sleep before the next attempt. Add two with ``+``."""

    __slots__ = ()

    def __call__(self, retry_state: RetryCallState) -> float:
        """Seconds to wait after *retry_state*'s current attempt."""
        raise NotImplementedError

    def __add__(self, other: WaitFn) -> wait_combine:
        return wait_combine(self, other)

    def __radd__(self, other: WaitFn | int) -> wait_base:
        # sum() starts from 0.
        if other == 0:
            return self
        return wait_combine(other, self)  # type: ignore[arg-type]  # other is a wait here


class wait_none(wait_base):  # noqa: N801 - tenacity's name
    """Retry at once."""

    __slots__ = ()

    def __call__(self, retry_state: RetryCallState) -> float:
        """Always 0."""
        return 0.0


class wait_fixed(wait_base):  # noqa: N801 - tenacity's name
    """Wait the same time before every retry.

    Args:
        wait: seconds (or a timedelta).
    """

    __slots__ = ("wait_fixed",)

    def __init__(self, wait: float | timedelta) -> None:
        self.wait_fixed = _secs(wait)

    def __call__(self, retry_state: RetryCallState) -> float:
        """The fixed wait."""
        return self.wait_fixed


class wait_random(wait_base):  # noqa: N801 - tenacity's name
    """Wait a uniformly random time between *min* and *max* seconds.

    Args:
        min: shortest wait.
        max: longest wait.
        rng: random generator (seed one in tests).
    """

    __slots__ = ("_uniform", "wait_random_max", "wait_random_min")

    def __init__(
        self,
        min: float | timedelta = 0,
        max: float | timedelta = 1,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.wait_random_min = _secs(min)
        self.wait_random_max = _secs(max)
        self._uniform = _uniform(rng)

    def __call__(self, retry_state: RetryCallState) -> float:
        """A random wait in [min, max]."""
        return self._uniform(self.wait_random_min, self.wait_random_max)


class wait_incrementing(wait_base):  # noqa: N801 - tenacity's name
    """Wait *start*, then *increment* more after each attempt, up to *max*.

    Args:
        start: the first wait.
        increment: added per attempt.
        max: the longest wait.
    """

    __slots__ = ("increment", "max", "start")

    def __init__(
        self,
        start: float | timedelta = 0,
        increment: float | timedelta = 100,
        max: float | timedelta = MAX_WAIT,
    ) -> None:
        self.start = _secs(start)
        self.increment = _secs(increment)
        self.max = _secs(max)

    def __call__(self, retry_state: RetryCallState) -> float:
        """``start + increment * (attempt - 1)``, within [0, max]."""
        result = self.start + self.increment * (retry_state.attempt_number - 1)
        return builtins.max(0.0, builtins.min(result, self.max))


class wait_exponential(wait_base):  # noqa: N801 - tenacity's name
    """Wait ``multiplier * exp_base ** (attempt - 1)`` seconds, kept within [min, max].

    No jitter: prefer `wait_random_exponential` or `wait_exponential_jitter` when
    many clients may retry together.

    Args:
        multiplier: the first wait.
        max: the longest wait.
        exp_base: the growth factor.
        min: the shortest wait.
    """

    __slots__ = ("exp_base", "max", "min", "multiplier")

    def __init__(
        self,
        multiplier: float = 1,
        max: float | timedelta = MAX_WAIT,
        exp_base: float = 2,
        min: float | timedelta = 0,
    ) -> None:
        self.multiplier = float(multiplier)
        self.max = _secs(max)
        self.exp_base = float(exp_base)
        self.min = _secs(min)

    def __call__(self, retry_state: RetryCallState) -> float:
        """The exponential wait for the current attempt."""
        try:
            result = self.multiplier * self.exp_base ** (retry_state.attempt_number - 1)
        except OverflowError:
            return self.max
        return builtins.max(0.0, self.min, builtins.min(result, self.max))


class wait_random_exponential(wait_exponential):  # noqa: N801 - tenacity's name
    """Full jitter: a uniformly random wait between *min* and the exponential wait.

    Args:
        multiplier: scale of the exponential wait.
        max: the longest wait.
        exp_base: the growth factor.
        min: the shortest wait.
        rng: random generator (seed one in tests).
    """

    __slots__ = ("_uniform",)

    def __init__(
        self,
        multiplier: float = 1,
        max: float | timedelta = MAX_WAIT,
        exp_base: float = 2,
        min: float | timedelta = 0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(multiplier=multiplier, max=max, exp_base=exp_base, min=min)
        self._uniform = _uniform(rng)

    def __call__(self, retry_state: RetryCallState) -> float:
        """``uniform(min, exponential wait)``."""
        high = super().__call__(retry_state)
        return self._uniform(self.min, high)


wait_full_jitter = wait_random_exponential
"""tenacity's alias for full jitter."""


class wait_exponential_jitter(wait_base):  # noqa: N801 - tenacity's name
    """Exponential wait plus ``uniform(0, jitter)``, capped at *max* (tenacity's formula).

    Args:
        initial: the first wait (before jitter).
        max: the longest wait.
        exp_base: the growth factor.
        jitter: the largest random addition.
        rng: random generator (seed one in tests).
    """

    __slots__ = ("_uniform", "exp_base", "initial", "jitter", "max")

    def __init__(
        self,
        initial: float = 1,
        max: float | timedelta = MAX_WAIT,
        exp_base: float = 2,
        jitter: float = 1,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = float(initial)
        self.max = _secs(max)
        self.exp_base = float(exp_base)
        self.jitter = float(jitter)
        self._uniform = _uniform(rng)

    def __call__(self, retry_state: RetryCallState) -> float:
        """``initial * exp_base ** (attempt - 1) + uniform(0, jitter)``, within [0, max]."""
        jitter = self._uniform(0.0, self.jitter)
        try:
            result = self.initial * self.exp_base ** (retry_state.attempt_number - 1) + jitter
        except OverflowError:
            result = self.max
        return builtins.max(0.0, builtins.min(result, self.max))


class _wait_aws_jitter(wait_base):  # noqa: N801 - the base of the two below
    """An AWS-style jittered exponential wait; subclasses name the jitter kind.

    Args:
        base: the first exponential wait (and, for decorrelated, the shortest one).
        max: the longest wait.
        rng: random generator (seed one in tests).
    """

    __slots__ = ("base", "max", "rng")
    _kind: Jitter

    def __init__(
        self,
        base: float = 1,
        max: float | timedelta = MAX_WAIT,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.base = float(base)
        self.max = _secs(max)
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        """See `compute_delay` with this class's jitter kind."""
        return compute_delay(
            retry_state.attempt_number,
            jitter=self._kind,
            base=self.base,
            cap=self.max,
            previous=retry_state.last_sleep,
            rng=self.rng,
        )


class wait_equal_jitter(_wait_aws_jitter):  # noqa: N801 - named like its tenacity siblings
    """Equal jitter (AWS): half the exponential wait, plus a random half.

    Args:
        base: the first exponential wait.
        max: the longest wait.
        rng: random generator (seed one in tests).
    """

    __slots__ = ()
    _kind: Jitter = "equal"


class wait_decorrelated_jitter(_wait_aws_jitter):  # noqa: N801 - named like its tenacity siblings
    """Decorrelated jitter (AWS): ``min(max, uniform(base, 3 * last wait))``.

    Args:
        base: the shortest wait, and the first "last wait".
        max: the longest wait.
        rng: random generator (seed one in tests).
    """

    __slots__ = ()
    _kind: Jitter = "decorrelated"


class wait_chain(wait_base):  # noqa: N801 - tenacity's name
    """Use the first strategy after attempt 1, the second after attempt 2, ... then the last.

    Args:
        strategies: one wait strategy per attempt.
    """

    __slots__ = ("strategies",)

    def __init__(self, *strategies: WaitFn) -> None:
        if not strategies:
            raise ValueError("wait_chain needs at least one strategy")
        self.strategies = strategies

    def __call__(self, retry_state: RetryCallState) -> float:
        """The wait of the strategy for the current attempt."""
        index = builtins.min(builtins.max(retry_state.attempt_number, 1), len(self.strategies))
        return self.strategies[index - 1](retry_state)


class wait_combine(wait_base):  # noqa: N801 - tenacity's name
    """The sum of several waits (what ``wait_a + wait_b`` builds).

    Args:
        strategies: the waits to add up.
    """

    __slots__ = ("strategies",)

    def __init__(self, *strategies: WaitFn) -> None:
        self.strategies = strategies

    def __call__(self, retry_state: RetryCallState) -> float:
        """The sum of the waits."""
        return sum(strategy(retry_state) for strategy in self.strategies)


# --- stops ------------------------------------------------------------------------------------


class stop_base:  # noqa: N801 - tenacity's name
    """A stop strategy: whether to give up. Combine with ``|`` (any) and ``&`` (all)."""

    __slots__ = ()

    def __call__(self, retry_state: RetryCallState) -> bool:
        """Whether to stop after *retry_state*'s current attempt."""
        raise NotImplementedError

    def __or__(self, other: StopFn) -> stop_any:
        return stop_any(self, other)

    def __and__(self, other: StopFn) -> stop_all:
        return stop_all(self, other)


class stop_any(stop_base):  # noqa: N801 - tenacity's name
    """Stop when any of the strategies says so."""

    __slots__ = ("stops",)

    def __init__(self, *stops: StopFn) -> None:
        self.stops = stops

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True if any strategy stops."""
        return any(stop(retry_state) for stop in self.stops)


class stop_all(stop_base):  # noqa: N801 - tenacity's name
    """Stop when all of the strategies say so."""

    __slots__ = ("stops",)

    def __init__(self, *stops: StopFn) -> None:
        self.stops = stops

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True if every strategy stops."""
        return all(stop(retry_state) for stop in self.stops)


class _stop_never(stop_base):  # noqa: N801 - tenacity's name
    __slots__ = ()

    def __call__(self, retry_state: RetryCallState) -> bool:
        return False

    def __repr__(self) -> str:
        return "stop_never"


stop_never = _stop_never()
"""Never stop (tenacity's default; seawall's `retry` defaults to 3 attempts instead)."""


class stop_after_attempt(stop_base):  # noqa: N801 - tenacity's name
    """Stop once *max_attempt_number* attempts have been made.

    Args:
        max_attempt_number: attempts in all, the first included (at least 1).
    """

    __slots__ = ("max_attempt_number",)

    def __init__(self, max_attempt_number: int) -> None:
        if max_attempt_number < 1:
            raise ValueError("max_attempt_number must be at least 1")
        self.max_attempt_number = max_attempt_number

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True from the last allowed attempt on."""
        return retry_state.attempt_number >= self.max_attempt_number


class stop_after_delay(stop_base):  # noqa: N801 - tenacity's name
    """Stop once *max_delay* seconds have passed since the first attempt started.

    Args:
        max_delay: seconds (or a timedelta).
    """

    __slots__ = ("max_delay",)

    def __init__(self, max_delay: float | timedelta) -> None:
        self.max_delay = _secs(max_delay)

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True when the time since the start reaches *max_delay*."""
        elapsed = retry_state.seconds_since_start
        return elapsed is not None and elapsed >= self.max_delay


class stop_before_delay(stop_base):  # noqa: N801 - tenacity's name
    """Stop if the next sleep would end past *max_delay* seconds since the start.

    Args:
        max_delay: seconds (or a timedelta).
    """

    __slots__ = ("max_delay",)

    def __init__(self, max_delay: float | timedelta) -> None:
        self.max_delay = _secs(max_delay)

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True when the time since the start plus the upcoming sleep reaches *max_delay*."""
        elapsed = retry_state.seconds_since_start
        return elapsed is not None and elapsed + retry_state.upcoming_sleep >= self.max_delay


# --- retry predicates -------------------------------------------------------------------------


class retry_base:  # noqa: N801 - tenacity's name
    """A retry predicate: whether an outcome should be retried. Combine with ``|`` and ``&``.

    Attributes:
        checks_results: whether the predicate can ask to retry a returned value.
            When it cannot, a successful attempt returns without consulting it
            (the fast path).
    """

    __slots__ = ()
    checks_results: bool = True

    def __call__(self, retry_state: RetryCallState) -> bool:
        """Whether to retry *retry_state*'s outcome."""
        outcome = retry_state.outcome
        if outcome is None:
            raise RuntimeError("__call__() called before the attempt produced an outcome")
        exception = outcome.exception()
        if exception is not None:
            return self.on_exception(exception)
        return self.on_result(outcome.result())

    def on_exception(self, exception: BaseException) -> bool:
        """Whether to retry after *exception*."""
        return False

    def on_result(self, result: Any) -> bool:
        """Whether to retry after the value *result*."""
        return False

    def __or__(self, other: RetryFn) -> retry_any:
        return retry_any(self, other)

    def __and__(self, other: RetryFn) -> retry_all:
        return retry_all(self, other)


def _checks_results(predicate: RetryFn) -> bool:
    # A plain callable from tenacity code may look at anything: assume it reads results.
    return getattr(predicate, "checks_results", True) is not False


class _retry_always(retry_base):  # noqa: N801 - tenacity's name
    __slots__ = ()

    def __call__(self, retry_state: RetryCallState) -> bool:
        return True

    def __repr__(self) -> str:
        return "retry_always"


class _retry_never(retry_base):  # noqa: N801 - tenacity's name
    __slots__ = ()
    checks_results = False

    def __call__(self, retry_state: RetryCallState) -> bool:
        return False

    def __repr__(self) -> str:
        return "retry_never"


retry_always = _retry_always()
"""Retry every outcome, values included."""

retry_never = _retry_never()
"""Retry nothing."""


class retry_if_exception(retry_base):  # noqa: N801 - tenacity's name
    """Retry when the attempt raised an exception for which *predicate* is true.

    Args:
        predicate: called with the exception.
    """

    __slots__ = ("predicate",)
    checks_results = False

    def __init__(self, predicate: Callable[[BaseException], bool]) -> None:
        self.predicate = predicate

    def on_exception(self, exception: BaseException) -> bool:
        """``predicate(exception)``."""
        return bool(self.predicate(exception))


class retry_if_exception_type(retry_if_exception):  # noqa: N801 - tenacity's name
    """Retry when the attempt raised one of *exception_types* (any `Exception` by default).

    Args:
        exception_types: a type or a tuple of types.
    """

    __slots__ = ("exception_types",)

    def __init__(
        self,
        exception_types: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> None:
        self.exception_types = exception_types
        super().__init__(lambda exception: isinstance(exception, exception_types))


class retry_if_not_exception_type(retry_if_exception):  # noqa: N801 - tenacity's name
    """Retry when the attempt raised an exception that is none of *exception_types*.

    Args:
        exception_types: a type or a tuple of types.
    """

    __slots__ = ("exception_types",)

    def __init__(
        self,
        exception_types: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> None:
        self.exception_types = exception_types
        super().__init__(lambda exception: not isinstance(exception, exception_types))


class retry_if_result(retry_base):  # noqa: N801 - tenacity's name
    """Retry when the attempt returned a value for which *predicate* is true.

    Args:
        predicate: called with the value.
    """

    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate

    def on_result(self, result: Any) -> bool:
        """``predicate(result)``."""
        return bool(self.predicate(result))


class retry_if_not_result(retry_base):  # noqa: N801 - tenacity's name
    """Retry when the attempt returned a value for which *predicate* is false.

    Args:
        predicate: called with the value.
    """

    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate

    def on_result(self, result: Any) -> bool:
        """``not predicate(result)``."""
        return not self.predicate(result)


class retry_any(retry_base):  # noqa: N801 - tenacity's name
    """Retry when any of the predicates says so."""

    __slots__ = ("checks_results", "retries")

    def __init__(self, *retries: RetryFn) -> None:
        self.retries = retries
        self.checks_results = any(_checks_results(r) for r in retries)

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True if any predicate retries."""
        return any(r(retry_state) for r in self.retries)


class retry_all(retry_base):  # noqa: N801 - tenacity's name
    """Retry when all of the predicates say so."""

    __slots__ = ("checks_results", "retries")

    def __init__(self, *retries: RetryFn) -> None:
        self.retries = retries
        self.checks_results = all(_checks_results(r) for r in retries)

    def __call__(self, retry_state: RetryCallState) -> bool:
        """True if every predicate retries."""
        return all(r(retry_state) for r in self.retries)
