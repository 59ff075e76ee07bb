"""Retrying: the `Retry` policy (for pipelines) and the decisions it shares with `retry`.

The tenacity-compatible `retry` decorator lives in ``_retrying``. Both are
hand-written loops rather than wrappers around tenacity: a successful first
attempt costs one extra coroutine frame and a clock read, where tenacity builds
its whole state machine (about 36 µs here) on every call.

The decisions are pure and tested without sleeping: `compute_delay` (in
``_waits``), `parse_retry_after`, `retry_after_of`, `is_transient`,
`retryable_status` and the `RetryBudget` arithmetic, which takes the time as an
argument.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any, ClassVar, ParamSpec, TypeVar

from seawall.errors import (
    BulkheadFull,
    CircuitOpenError,
    RetryError,
    TimeoutExceeded,
)
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_RETRY, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls
from seawall.resilience._waits import (
    _JITTERS,
    Jitter,
    Outcome,
    RetryCallState,
    compute_delay,
)

__all__ = [
    "RETRYABLE_STATUS_CODES",
    "Retry",
    "RetryBudget",
    "failure_reason",
    "is_transient",
    "parse_retry_after",
    "retry_after_of",
    "retryable_status",
]

P = ParamSpec("P")
T = TypeVar("T")

RETRYABLE_STATUS_CODES = frozenset({429, 502, 503, 504})
"""Statuses `Retry` retries by default: too many requests, bad gateway, unavailable, timeout."""

_POLICY = "retry"
# Errors that mean "a policy refused": retrying them only adds load or repeats a give-up.
_NEVER_TRANSIENT = (CircuitOpenError, BulkheadFull, RetryError)
# OSError covers ConnectionError and TimeoutError (asyncio.TimeoutError is TimeoutError).
_TRANSIENT = (OSError, TimeoutExceeded)


def is_transient(exception: BaseException) -> bool:
    """Whether *exception* is worth retrying by default: a timeout or a connection failure.

    True for `TimeoutError` (and ``asyncio.TimeoutError``), `seawall.errors.TimeoutExceeded`,
    `ConnectionError` and other `OSError`s, and any exception whose ``transient``
    attribute is truthy. Never for `CircuitOpenError`, `BulkheadFull` or `RetryError`.
    """
    if isinstance(exception, _NEVER_TRANSIENT):
        return False
    return isinstance(exception, _TRANSIENT) or bool(getattr(exception, "transient", False))


def retryable_status(result: Any) -> bool:
    """Whether *result* is a response worth retrying: its ``status_code`` is 429, 502, 503 or 504.

    Results without an integer ``status_code`` are never retried.
    """
    return getattr(result, "status_code", None) in RETRYABLE_STATUS_CODES


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value (pure).

    Args:
        value: delay-seconds (``"120"``) or an HTTP date (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
        now: the current Unix time, to turn a date into a delay.

    Returns:
        Non-negative seconds (0 for a date in the past), or None if the value is invalid.
    """
    text = value.strip()
    if not text:
        return None
    try:
        delay = float(text)
    except ValueError:
        pass
    else:
        return delay if math.isfinite(delay) and delay >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _header(headers: object, name: str) -> str | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    # httpx/Starlette headers ignore case; a plain dict may hold either spelling.
    value = get(name)
    if value is None:
        value = get(name.lower())
    return value if isinstance(value, str) else None


def retry_after_of(exception: BaseException | None, result: object, *, now: float) -> float | None:
    """The server's requested delay carried by a failed attempt, if any (pure).

    Looks, in order, at a ``retry_after`` attribute (seconds, a timedelta, or a
    header string) of the exception (or of the result when there is no
    exception), then at a ``Retry-After`` entry in its ``headers``, then at the
    headers of an exception's ``response``.

    Args:
        exception: the attempt's exception, or None if it returned.
        result: the attempt's value (used when *exception* is None).
        now: the current Unix time, for HTTP dates.

    Returns:
        Seconds to wait, or None when nothing asks for a delay.
    """
    source: object = exception if exception is not None else result
    attribute = getattr(source, "retry_after", None)
    if isinstance(attribute, timedelta):
        attribute = attribute.total_seconds()
    if isinstance(attribute, int | float) and not isinstance(attribute, bool):
        return max(0.0, float(attribute)) if math.isfinite(attribute) else None
    if isinstance(attribute, str):
        return parse_retry_after(attribute, now=now)
    raw = _header(getattr(source, "headers", None), "Retry-After")
    if raw is None and exception is not None:
        raw = _header(getattr(getattr(exception, "response", None), "headers", None), "Retry-After")
    return None if raw is None else parse_retry_after(raw, now=now)


def failure_reason(exception: BaseException | None, result: object) -> str:
    """The ``reason`` events give for a failed attempt: ``OSError``, ``status 503``, ``result``."""
    if exception is not None:
        return type(exception).__name__
    status = getattr(result, "status_code", None)
    return f"status {status}" if isinstance(status, int) else "result"


class RetryBudget:
    """Limits retries to a fraction of calls over a sliding window, shared by many calls.

    A retry is allowed while ``retries + 1 <= ratio * calls + min_retries_per_second * window``
    over the last *window* seconds, so a fleet retrying against a sick provider
    adds at most *ratio* to its load instead of multiplying it by the attempt
    count. The reserve lets a quiet service still retry now and then.

    Counting a call must cost next to nothing on the success path, so
    `record_call` only bumps a counter; the counted calls join the window's
    current bucket when the budget is next consulted, or every *flush_every*
    calls. Calls can therefore count as up to *flush_every* calls more recent
    than they were: the budget errs, slightly, towards allowing a retry.

    Args:
        ratio: retries allowed per call (0.2: one retry per five calls).
        min_retries_per_second: the reserve that is always allowed.
        window: the sliding window (seconds or a timedelta).
        buckets: how finely the window slides.
        flush_every: how many calls may be counted before the window is updated.
        clock: where the window reads the time (`SYSTEM_CLOCK` by default).

    Raises:
        ValueError: a negative ratio or reserve, a non-positive window, or fewer
            than 1 bucket or flush.
    """

    __slots__ = (
        "_calls",
        "_clock",
        "_flush_every",
        "_head",
        "_reserve",
        "_retries",
        "_total_calls",
        "_total_retries",
        "_unplaced",
        "_width",
        "min_retries_per_second",
        "ratio",
        "window",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries_per_second: float = 1.0,
        window: float | timedelta = 10.0,
        buckets: int = 10,
        flush_every: int = 64,
        clock: Clock | None = None,
    ) -> None:
        if not (ratio >= 0 and math.isfinite(ratio)):
            raise ValueError("ratio must be a non-negative number")
        if not (min_retries_per_second >= 0 and math.isfinite(min_retries_per_second)):
            raise ValueError("min_retries_per_second must be a non-negative number")
        if buckets < 1 or flush_every < 1:
            raise ValueError("buckets and flush_every must be at least 1")
        self.ratio = float(ratio)
        self.min_retries_per_second = float(min_retries_per_second)
        self.window = seconds(window, name="window")
        self._clock = clock or SYSTEM_CLOCK
        self._flush_every = flush_every
        self._reserve = self.min_retries_per_second * self.window
        self._width = self.window / buckets
        self._calls = [0] * buckets
        self._retries = [0] * buckets
        self._total_calls = 0
        self._total_retries = 0
        self._unplaced = 0
        self._head: int | None = None

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio:g}, min_retries_per_second="
            f"{self.min_retries_per_second:g}, window={self.window:g})"
        )

    def _update(self) -> int:
        # Slide the window to now, expiring old buckets, and place the counted calls.
        index = int(self._clock.monotonic() // self._width)
        head = self._head
        size = len(self._calls)
        if index != head:
            if head is None or index - head >= size or index < head:
                self._calls = [0] * size
                self._retries = [0] * size
                self._total_calls = self._total_retries = 0
            else:
                for bucket in range(head + 1, index + 1):
                    slot = bucket % size
                    self._total_calls -= self._calls[slot]
                    self._total_retries -= self._retries[slot]
                    self._calls[slot] = self._retries[slot] = 0
            self._head = index
        if self._unplaced:
            self._calls[index % size] += self._unplaced
            self._total_calls += self._unplaced
            self._unplaced = 0
        return index

    def record_call(self) -> None:
        """Count one call (its first attempt)."""
        self._unplaced += 1
        if self._unplaced >= self._flush_every:
            self._update()

    def available(self) -> float:
        """How many retries the budget allows now."""
        self._update()
        return max(0.0, self.ratio * self._total_calls + self._reserve - self._total_retries)

    def try_retry(self) -> bool:
        """Take one retry from the budget; False if none is left."""
        if self.available() < 1:
            return False
        index = self._head if self._head is not None else 0
        self._retries[index % len(self._retries)] += 1
        self._total_retries += 1
        return True


_NO_RESULT: Any = object()


class Retry(PolicyCalls):
    """Retries transient failures with jittered exponential backoff.

    The policy for pipelines and `ExternalService`s. By default it retries only
    the transient family (see `is_transient`) and responses whose ``status_code``
    is 429, 502, 503 or 504 (see `retryable_status`). Between attempts it waits
    ``compute_delay(...)``, or longer when the failure carries a ``Retry-After``
    (an exception's ``retry_after`` attribute or a response's header).

    It gives up, re-raising the last exception (or returning the last result),
    when: the attempts are used up; the next wait would pass *max_total_time* or
    the context's deadline (set by a total `Timeout`); ``Retry-After`` asks for
    more than *max_retry_after*; or the retry budget is spent. It never repeats
    a call whose context says it is not idempotent, unless the context carries
    an ``idempotency_key``. A cancelled call is never retried.

    Events: ``attempt`` (every attempt, only when someone listens),
    ``retry_scheduled`` (attempt, delay_s, reason), ``retries_exhausted``
    (attempts, reason) and ``retry_budget_exhausted``.

    Args:
        max_attempts: attempts in all, the first included.
        jitter: ``"full"`` (default), ``"equal"``, ``"decorrelated"`` or ``"none"``.
        base_delay: the first backoff delay.
        max_delay: the longest backoff delay.
        min_delay: the shortest backoff delay (after jitter).
        max_total_time: give up rather than wait past this time since the first attempt.
        retry_on: exception types to retry, or a predicate on the exception.
        retry_on_result: a predicate on a returned value asking for a retry (None: never).
        max_retry_after: the longest ``Retry-After`` honoured; a longer one ends the retries.
        budget: True for a budget of this policy's own (`RetryBudget` defaults), a
            `RetryBudget` to share one, or False for none.
        name: reported in events.
        clock: time and sleep (`SYSTEM_CLOCK` by default).
        events: the event hub (the global one by default).
        rng: the random generator for jitter (seed one in tests).

    A ``Retry-After`` may exceed *max_delay*: the server's word wins, up to
    *max_retry_after*. When the result is returned after the last attempt, it
    is the caller's (or the HTTP client's) job to turn it into an error.

    Raises:
        ValueError: an option is out of range.
        TypeError: *retry_on* or *budget* has the wrong type.
    """

    stage: ClassVar[int] = STAGE_RETRY

    __slots__ = (
        "_budget",
        "_clock",
        "_hub",
        "_retry_exception",
        "_retry_result",
        "base_delay",
        "jitter",
        "max_attempts",
        "max_delay",
        "max_retry_after",
        "max_total_time",
        "min_delay",
        "name",
        "rng",
    )

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        jitter: Jitter = "full",
        base_delay: float | timedelta = 0.5,
        max_delay: float | timedelta = 30.0,
        min_delay: float | timedelta = 0.0,
        max_total_time: float | timedelta | None = None,
        retry_on: type[BaseException]
        | tuple[type[BaseException], ...]
        | Callable[[BaseException], bool] = is_transient,
        retry_on_result: Callable[[Any], bool] | None = retryable_status,
        max_retry_after: float | timedelta = 60.0,
        budget: RetryBudget | bool = True,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if jitter not in _JITTERS:
            raise ValueError(f"jitter must be one of {sorted(_JITTERS)}, not {jitter!r}")
        self.max_attempts = max_attempts
        self.jitter: Jitter = jitter
        self.base_delay = seconds(base_delay, name="base_delay", allow_zero=True)
        self.max_delay = seconds(max_delay, name="max_delay", allow_zero=True)
        self.min_delay = seconds(min_delay, name="min_delay", allow_zero=True)
        if self.min_delay > self.max_delay:
            raise ValueError("min_delay must not exceed max_delay")
        self.max_total_time = (
            None if max_total_time is None else seconds(max_total_time, name="max_total_time")
        )
        self.max_retry_after = seconds(max_retry_after, name="max_retry_after", allow_zero=True)
        if isinstance(retry_on, type | tuple):
            types = retry_on
            self._retry_exception: Callable[[BaseException], bool] = lambda exc: isinstance(
                exc, types
            )
        elif callable(retry_on):
            self._retry_exception = retry_on
        else:
            raise TypeError("retry_on must be exception types or a predicate")
        self._retry_result = retry_on_result
        self._clock = clock or SYSTEM_CLOCK
        if budget is True:
            self._budget: RetryBudget | None = RetryBudget(clock=self._clock)
        elif budget is False:
            self._budget = None
        elif isinstance(budget, RetryBudget):
            self._budget = budget
        else:
            raise TypeError("budget must be a RetryBudget, True or False")
        self.name = name
        self._hub = events if events is not None else default_events
        self.rng = rng

    def __repr__(self) -> str:
        return (
            f"Retry({self.name!r}, max_attempts={self.max_attempts}, jitter={self.jitter!r}, "
            f"base_delay={self.base_delay:g}, max_delay={self.max_delay:g})"
        )

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget this policy draws from, if any."""
        return self._budget

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* (the rest of the pipeline), retrying as configured.

        Sets ``context.attempt`` before each attempt.

        Raises:
            Exception: the last attempt's exception when the policy gives up or
                the exception is not retryable.
            asyncio.CancelledError: at once, whenever the call is cancelled.
        """
        # The start time matters only to max_total_time: skip the clock read otherwise.
        start = None if self.max_total_time is None else self._clock.monotonic()
        if self._budget is not None:
            self._budget.record_call()
        context.attempt = 1
        hub = self._hub
        if hub:
            hub.emit("attempt", _POLICY, self.name, attempt=1, operation=context.operation)
        try:
            result = await thunk()
        except Exception as exc:
            if not self._retry_exception(exc):
                raise
            return await self._again(thunk, context, start, exc, _NO_RESULT)
        if self._retry_result is not None and self._retry_result(result):
            return await self._again(thunk, context, start, None, result)
        return result

    def plan(self, state: RetryCallState, context: CallContext, *, now: float) -> float | str:
        """Decide what follows a retryable failure: a delay in seconds, or why to give up.

        Pure apart from the jitter's random draw and the budget it takes from.

        Args:
            state: the call so far; ``state.outcome`` is the failed attempt's.
            context: the call's context (idempotency, deadline).
            now: the current monotonic time.

        Returns:
            Seconds to wait before the next attempt, or the reason to stop:
            ``not_idempotent``, ``max_attempts``, ``retry_after_too_long``,
            ``max_total_time``, ``deadline`` or ``budget``.
        """
        if not context.idempotent and not context.idempotency_key:
            return "not_idempotent"
        attempt = state.attempt_number
        if attempt >= self.max_attempts:
            return "max_attempts"
        delay = compute_delay(
            attempt,
            jitter=self.jitter,
            base=self.base_delay,
            cap=self.max_delay,
            previous=state.last_sleep,
            floor=self.min_delay,
            rng=self.rng,
        )
        outcome = state.outcome
        if outcome is not None:
            exception = outcome.exception()
            asked = retry_after_of(
                exception,
                None if exception is not None else outcome.result(),
                now=self._clock.wall(),
            )
            if asked is not None:
                if asked > self.max_retry_after:
                    return "retry_after_too_long"
                delay = max(delay, asked)
        if self.max_total_time is not None and now - state.start_time + delay > self.max_total_time:
            return "max_total_time"
        if context.deadline is not None and now + delay >= context.deadline:
            return "deadline"
        if self._budget is not None and not self._budget.try_retry():
            return "budget"
        return delay

    async def _again(
        self,
        thunk: Thunk[T],
        context: CallContext,
        start: float | None,
        exception: BaseException | None,
        result: T,
    ) -> T:
        clock = self._clock
        hub = self._hub
        state = RetryCallState(
            start_time=clock.monotonic() if start is None else start,
            args=context.args,
            kwargs=context.kwargs,
        )
        while True:
            attempt = state.attempt_number
            now = clock.monotonic()
            state.outcome = Outcome(attempt, value=result, exception=exception)
            state.outcome_timestamp = now
            decision = self.plan(state, context, now=now)
            if isinstance(decision, str):
                return self._give_up(decision, attempt, context, exception, result)
            if hub:
                hub.emit(
                    "retry_scheduled",
                    _POLICY,
                    self.name,
                    attempt=attempt,
                    delay_s=decision,
                    reason=failure_reason(exception, result),
                    operation=context.operation,
                )
            await clock.sleep(decision)
            state.idle_for += decision
            state.last_sleep = decision
            state.attempt_number = attempt = attempt + 1
            context.attempt = attempt
            if hub:
                hub.emit(
                    "attempt", _POLICY, self.name, attempt=attempt, operation=context.operation
                )
            try:
                result = await thunk()
            except Exception as exc:
                if not self._retry_exception(exc):
                    raise
                exception, result = exc, _NO_RESULT
            else:
                if self._retry_result is None or not self._retry_result(result):
                    return result
                exception = None

    def _give_up(
        self,
        reason: str,
        attempts: int,
        context: CallContext,
        exception: BaseException | None,
        result: T,
    ) -> T:
        hub = self._hub
        if reason == "budget" and hub:
            hub.emit("retry_budget_exhausted", _POLICY, self.name, operation=context.operation)
        if reason != "not_idempotent" and hub:
            hub.emit(
                "retries_exhausted",
                _POLICY,
                self.name,
                attempts=attempts,
                reason=reason,
                operation=context.operation,
            )
        if exception is None:
            return result
        exception.add_note(f"seawall: retry {self.name!r} gave up after {attempts} ({reason})")
        raise exception
