"""`CircuitBreaker` and the `circuit` decorator: stop calling a service that keeps failing.

The breaker is closed (calls pass), open (calls are rejected at once with
`CircuitOpenError`) or half-open (a set number of probe calls test whether the
service is back). The decisions are pure: `next_state` is a transition table,
`admit` decides whether a call may pass and `should_trip` whether the recorded
outcomes open the circuit (all three live in ``_breaker_rules``, the sliding
windows in ``_breaker_windows`` and the `BreakerStore` protocol for shared state
in ``_breaker_store``). `CircuitBreaker` is the thin shell that counts
outcomes, reads the clock and reports events.

Opening rules:

- consecutive failures (the default): ``failure_threshold`` failures in a row;
- failures in a sliding window (``window=CountWindow(100)`` for the last 100
  calls, ``window=TimeWindow(60)`` for the last 60 seconds): ``failure_threshold``
  failures in the window ("5 failures in 60 seconds"), or a failure *rate* of at
  least ``failure_rate_threshold`` once the window holds ``minimum_calls``;
- slow calls: calls taking at least ``slow_call_duration`` are slow, and a slow
  rate of at least ``slow_call_rate_threshold`` opens the circuit.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any, ClassVar, Final, ParamSpec, TypeVar, cast, overload

from seawall.errors import BulkheadFull, CircuitOpenError, RateLimitExceeded
from seawall.resilience._breaker_rules import (
    Admission,
    BreakerState,
    Trigger,
    TripRules,
    WindowStats,
    admit,
    next_state,
    should_trip,
)
from seawall.resilience._breaker_store import BreakerStore, ProbeGrant, SharedState
from seawall.resilience._breaker_windows import (
    SLOW,
    CountRing,
    CountWindow,
    TimeBuckets,
    TimeWindow,
)
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_CIRCUIT_BREAKER, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events

__all__ = ["CircuitBreaker", "ExceptionSpec", "circuit"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("seawall.resilience")

_POLICY: Final = "circuit_breaker"

_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN


# --------------------------------------------------------------------------- errors


# The lease of a probe taken while the shared store was unreachable: judged locally.
# Store leases look like "<slot>:<generation>:<token>", so this one never collides with them.
_LOCAL_LEASE = "local"

# Refusals by seawall's own policies (an open circuit, a rate limit or bulkhead
# inside the breaker in a pipeline) say nothing about the provider's health.
# A TimeoutExceeded does: a slow provider is a failing one.
_OWN_REJECTIONS = (CircuitOpenError, RateLimitExceeded, BulkheadFull)


_new_open_error = CircuitOpenError.__new__


def _open_error(breaker: str, retry_after: float) -> CircuitOpenError:
    # A fresh error per rejection, so no traceback ever grows. Built without the
    # keyword __init__ (0.16 us instead of 0.39 us here): the same slots, and the
    # class formats its message only when it is read.
    error = _new_open_error(CircuitOpenError)
    error.breaker = breaker
    error.retry_after = retry_after if retry_after > 0.0 else 0.0
    return error


# --------------------------------------------------------------------------- the breaker

ExceptionSpec = (
    type[BaseException]
    | tuple[type[BaseException], ...]
    | Callable[[type[BaseException], BaseException], bool]
)
"""What counts as a failure: an exception type, a tuple of them, or a predicate
``(type, exception) -> bool`` (as in the ``circuitbreaker`` package)."""

# Outcome codes of one call. _FAILURE equals the window flag FAILED, so that
# ``outcome | slow`` is the flags a window records.
_SUCCESS: Final = 0
_FAILURE: Final = 1
_IGNORED: Final = 2


def _exception_matcher(
    spec: ExceptionSpec | Iterable[type[BaseException]],
) -> Callable[[BaseException], bool]:
    if isinstance(spec, type):
        if not issubclass(spec, BaseException):
            raise TypeError(f"expected_exception {spec!r} is not an exception type")
        return lambda exc: isinstance(exc, spec)
    if isinstance(spec, str | bytes):
        raise TypeError("expected_exception cannot be a string; did you mean name=?")
    if callable(spec):
        predicate = spec
        return lambda exc: bool(predicate(type(exc), exc))
    types = tuple(spec)
    if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in types):
        raise TypeError("expected_exception must be exception types or a predicate")
    return lambda exc: isinstance(exc, types)


def _duration(value: float | timedelta, name: str) -> float:
    return seconds(value, name=name, allow_zero=True)


def _fraction(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a fraction in (0, 1], such as 0.5 for 50%")
    return value


def _opening_rules(
    *,
    failure_threshold: int | None,
    window: CountWindow | TimeWindow | None,
    failure_rate_threshold: float | None,
    minimum_calls: int | None,
    slow: bool,
    slow_call_rate_threshold: float | None,
) -> tuple[TripRules, CountWindow | TimeWindow | None]:
    """Validate the opening options and fill in their defaults (see `CircuitBreaker`)."""
    if failure_threshold is not None and failure_threshold < 1:
        raise ValueError("failure_threshold must be at least 1")
    failure_rate_threshold = _fraction(failure_rate_threshold, "failure_rate_threshold")
    slow_call_rate_threshold = _fraction(slow_call_rate_threshold, "slow_call_rate_threshold")
    if slow_call_rate_threshold is not None and not slow:
        raise ValueError("slow_call_rate_threshold needs slow_call_duration")
    if slow and slow_call_rate_threshold is None:
        slow_call_rate_threshold = 1.0
    has_rate_rule = failure_rate_threshold is not None or slow_call_rate_threshold is not None
    if failure_threshold is None and not has_rate_rule:
        failure_threshold = 5
    if window is None and has_rate_rule:
        window = CountWindow(100)
    if minimum_calls is None:
        minimum_calls = min(10, window.size) if isinstance(window, CountWindow) else 10
    if minimum_calls < 1:
        raise ValueError("minimum_calls must be at least 1")
    if isinstance(window, CountWindow) and minimum_calls > window.size:
        raise ValueError("minimum_calls cannot exceed the CountWindow size")
    rules = TripRules(
        failure_threshold, failure_rate_threshold, slow_call_rate_threshold, minimum_calls
    )
    return rules, window


class CircuitBreaker:
    """Fail fast while a service keeps failing, and probe it before trusting it again.

    Closed, it counts outcomes; when an opening rule is met it opens for
    *recovery_timeout* and rejects every call with `CircuitOpenError` (or
    answers with *fallback_function*). Then it is half-open: exactly
    *half_open_max_calls* probe calls pass, however many callers arrive at
    once; if they all succeed it closes, and the first that fails opens it
    again.

    What counts: an exception that matches *expected_exception* and not
    *exclude* is a failure; any other exception counts as a success (as in the
    ``circuitbreaker`` package). A returned result for which
    *failure_predicate* is true is a failure, yet is still returned. A
    `CircuitOpenError` (from a nested breaker), an excluded exception, a
    cancellation and any other `BaseException` count as nothing, and give a
    half-open probe slot back.

    Use it as a decorator on async or sync functions, as ``await
    breaker.call(fn, *args)``, or as a `Pipeline` stage.

    Args:
        name: reported in events and errors; the decorated function's name when
            None and used as a decorator, else ``"default"``.
        failure_threshold: open after this many failures: consecutive ones
            without a *window*, the failures inside the window with one.
            Default 5, unless a rate rule is given (then no count rule).
        recovery_timeout: how long the circuit stays open before probing.
        window: `CountWindow` or `TimeWindow` for the rate rules and the
            windowed count rule; default `CountWindow(100)` when a rate rule is
            set, else none (consecutive failures).
        failure_rate_threshold: open when at least this fraction (0-1] of the
            window's calls failed.
        minimum_calls: the rate rules judge a window only once it holds this
            many calls (default 10, at most the `CountWindow` size).
        slow_call_duration: a call taking at least this long is slow.
        slow_call_rate_threshold: open when at least this fraction of the
            window's calls were slow (default 1.0 when *slow_call_duration* is
            set). A slow half-open probe counts as a failed probe.
        half_open_max_calls: probe calls let through per half-open period; all
            must succeed to close the circuit.
        expected_exception: which exceptions are failures: a type, a tuple of
            types or a predicate ``(type, exception) -> bool``.
        exclude: exception types that are never failures nor successes.
        failure_predicate: ``result -> bool``; true marks a returned result as a
            failure (a 5xx response, say).
        fallback_function: called with the call's arguments instead of raising
            `CircuitOpenError` when a call is rejected (awaited if async).
        store: a `BreakerStore` sharing the state across processes (such as
            ``seawall.resilience.redis.RedisBreakerStore``); None keeps it in
            this object.
        clock: where time is read; the system clock by default.
        events: where events go; the global `seawall.resilience.events` by default.

    Raises:
        ValueError: an option is out of range or options contradict each other.
        TypeError: *expected_exception* or *exclude* is not made of exception types.
    """

    stage: ClassVar[int] = STAGE_CIRCUIT_BREAKER

    def __init__(
        self,
        *,
        name: str | None = None,
        failure_threshold: int | None = None,
        recovery_timeout: float | timedelta = 30.0,
        window: CountWindow | TimeWindow | None = None,
        failure_rate_threshold: float | None = None,
        minimum_calls: int | None = None,
        slow_call_duration: float | timedelta | None = None,
        slow_call_rate_threshold: float | None = None,
        half_open_max_calls: int = 1,
        expected_exception: ExceptionSpec = Exception,
        exclude: type[BaseException] | tuple[type[BaseException], ...] = (),
        failure_predicate: Callable[[Any], bool] | None = None,
        fallback_function: Callable[..., Any] | None = None,
        store: BreakerStore | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be at least 1")
        self._slow_duration = (
            None
            if slow_call_duration is None
            else seconds(slow_call_duration, name="slow_call_duration")
        )
        self.rules, window = _opening_rules(
            failure_threshold=failure_threshold,
            window=window,
            failure_rate_threshold=failure_rate_threshold,
            minimum_calls=minimum_calls,
            slow=self._slow_duration is not None,
            slow_call_rate_threshold=slow_call_rate_threshold,
        )
        failure_threshold = self.rules.failure_threshold
        self.name = name or "default"
        self._named = name is not None
        self.window = window
        self.recovery_timeout = _duration(recovery_timeout, "recovery_timeout")
        self.half_open_max_calls = half_open_max_calls
        self._is_expected = _exception_matcher(expected_exception)
        self._exclude = exclude if isinstance(exclude, tuple) else (exclude,)
        _exception_matcher(self._exclude)  # validates the types
        self._failure_predicate = failure_predicate
        self.fallback_function = fallback_function
        self._store = store
        self._clock = clock or SYSTEM_CLOCK
        # The system clock's method only forwards to time.monotonic: skip that frame.
        self._now = time.monotonic if self._clock is SYSTEM_CLOCK else self._clock.monotonic
        self._hub = default_events if events is None else events

        self._threshold = failure_threshold if window is None else None
        self._ring: CountRing | TimeBuckets | None
        if isinstance(window, CountWindow):
            self._ring = CountRing(window.size)
        elif isinstance(window, TimeWindow):
            self._ring = TimeBuckets(window)
        else:
            self._ring = None
        # The decorators' inlined path: closed, local, consecutive counting, nothing to time.
        self._simple = (
            store is None and self._ring is None and failure_predicate is None
        ) and self._slow_duration is None
        self._lock = threading.RLock()
        self._state: BreakerState = _CLOSED
        self._fast = self._simple
        self._failures = 0
        self._opened_until = 0.0
        self._probes_taken = 0
        self._probe_successes = 0
        self._generation = 0
        # Shared-state cache (used only with a store).
        self._cache_expires = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose open period is over reads half-open."""
        if self._state is _OPEN and self._now() >= self._opened_until:
            if self._store is not None:
                return _HALF_OPEN
            with self._lock:
                if self._state is _OPEN and self._now() >= self._opened_until:
                    self._apply(Trigger.RECOVERY_ELAPSED)
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self._state is not _OPEN:
            return 0.0
        return max(0.0, self._opened_until - self._now())

    @property
    def opened(self) -> bool:
        """Whether calls are being rejected for the open period (``circuitbreaker`` name)."""
        return self.state is _OPEN

    @property
    def closed(self) -> bool:
        """Whether the breaker is closed (``circuitbreaker`` name)."""
        return self.state is _CLOSED

    @property
    def failure_count(self) -> int:
        """Failures counted so far: the current run, or those inside the window."""
        if self._ring is None:
            return self._failures
        return self._ring.stats(self._now()).failures

    @property
    def stats(self) -> WindowStats:
        """The counts the opening rules are judging now."""
        if self._ring is None:
            return WindowStats(self._failures, self._failures, 0)
        return self._ring.stats(self._now())

    # ------------------------------------------------------------------ manual control

    async def open(self, *, duration: float | timedelta | None = None) -> None:
        """Open the circuit now, for *duration* (default *recovery_timeout*), then probe.

        With a store, every process sharing it opens.
        """
        open_for = self.recovery_timeout if duration is None else _duration(duration, "duration")
        if self._store is not None:
            await self._shared_transition(Trigger.FORCED_OPEN, open_for=open_for)
            return
        with self._lock:
            self._apply(Trigger.FORCED_OPEN, open_for=open_for)

    async def close(self) -> None:
        """Close the circuit now and forget the counted failures (everywhere, with a store)."""
        if self._store is not None:
            await self._shared_transition(Trigger.FORCED_CLOSED)
            return
        with self._lock:
            self._apply(Trigger.FORCED_CLOSED)

    async def reset(self) -> None:
        """Return to the initial state: closed, nothing counted (the shared state removed)."""
        if self._store is not None:
            await self._store.clear(self.name)
            self._cache_expires = 0.0
        with self._lock:
            self._apply(Trigger.FORCED_CLOSED)
            self._reset_counts()

    async def refresh(self) -> BreakerState:
        """Read the shared state now instead of waiting for the cache to expire.

        Returns:
            The state after the refresh (the local state when there is no store).
        """
        if self._store is not None:
            now = self._now()
            self._adopt(await self._store.load(self.name), now)
        return self.state

    # ------------------------------------------------------------------ transitions

    def _reset_counts(self) -> None:
        self._failures = 0
        if self._ring is not None:
            self._ring.clear()

    def _apply(self, trigger: Trigger, *, open_for: float | None = None) -> bool:
        """Apply *trigger* to the local state (caller holds the lock); report the change."""
        old = self._state
        new = next_state(old, trigger)
        if new is old and trigger is not Trigger.FORCED_OPEN:
            return False
        now = self._now()
        stats = self.stats if new is _OPEN else None
        self._state = new
        self._generation += 1
        self._probes_taken = self._probe_successes = 0
        if new is _OPEN:
            self._opened_until = now + (self.recovery_timeout if open_for is None else open_for)
        if new is not _HALF_OPEN:
            self._reset_counts()
        self._fast = new is _CLOSED and self._simple
        if self._hub:
            self._report(old, new, trigger.value, stats)
        return True

    def _report(
        self,
        old: BreakerState,
        new: BreakerState,
        reason: str,
        stats: WindowStats | None,
    ) -> None:
        kind = {_OPEN: "breaker_opened", _HALF_OPEN: "breaker_half_opened"}.get(
            new, "breaker_closed"
        )
        facts: dict[str, Any] = {
            "from_state": old.value,
            "state": new.value,
            "reason": reason,
        }
        if stats is not None:
            facts.update(
                calls=stats.calls,
                failures=stats.failures,
                failure_rate=stats.failure_rate,
                slow_calls=stats.slow,
                slow_call_rate=stats.slow_call_rate,
                retry_after=self.retry_after,
            )
        self._hub.emit(kind, _POLICY, self.name, **facts)

    # ------------------------------------------------------------------ outcomes

    def _classify(self, exc: BaseException) -> int:
        if (
            not isinstance(exc, Exception)
            or isinstance(exc, _OWN_REJECTIONS)
            or (self._exclude and isinstance(exc, self._exclude))
        ):
            return _IGNORED
        return _FAILURE if self._is_expected(exc) else _SUCCESS

    def _classify_result(self, result: object) -> int:
        predicate = self._failure_predicate
        return _FAILURE if predicate is not None and predicate(result) else _SUCCESS

    def _fast_failed(self, exc: BaseException) -> None:
        """An exception on the inlined closed path (local, consecutive counting)."""
        outcome = self._classify(exc)
        if outcome == _FAILURE:
            self._settle_closed(_FAILURE, 0)
        elif outcome == _SUCCESS:
            self._failures = 0

    def _fast_failed_sync(self, exc: BaseException) -> None:
        """`_fast_failed` for sync callers, which may be on several threads at once."""
        outcome = self._classify(exc)  # user code (a predicate): run it outside the lock
        if outcome == _IGNORED:
            return
        with self._lock:
            if outcome == _FAILURE:
                self._settle_closed(_FAILURE, 0)
            else:
                self._failures = 0

    def _fast_succeeded_sync(self) -> None:
        """A success after failures on the inlined sync closed path: reset the run."""
        # The caller saw a nonzero count. Only then is the lock needed: a success
        # that reads 0 is ordered before any failure being counted meanwhile.
        with self._lock:
            self._failures = 0

    def _settle_closed(self, outcome: int, slow: int) -> Trigger | None:
        """Count one closed-state outcome; trip the local breaker or return TRIPPED for a store.

        Sync callers hold ``self._lock``: threads may share the breaker, and the
        counts are read-modify-writes. Async callers do not: every coroutine
        using the breaker runs on its event loop's one thread, and nothing
        between here and the last count awaits, so no other call interleaves.
        """
        if outcome == _IGNORED or self._state is not _CLOSED:
            return None
        ring = self._ring
        if ring is None:
            if outcome == _SUCCESS:
                self._failures = 0
                return None
            self._failures += 1
            threshold = self._threshold
            tripped = threshold is not None and self._failures >= threshold
        else:
            now = self._now()
            flags = outcome | slow
            ring.record(flags, now)
            # In a count window a clean success never raises a rate, except by
            # bringing the window up to minimum_calls; time windows also forget.
            if flags or type(ring) is TimeBuckets or ring.calls == self.rules.minimum_calls:
                tripped = should_trip(ring.stats(now), self.rules)
            else:
                tripped = False
        if not tripped:
            return None
        if self._store is not None:
            return Trigger.TRIPPED
        with self._lock:
            self._apply(Trigger.TRIPPED)
        return None

    def _settle_probe(self, outcome: int, slow: int, generation: int) -> None:
        """Judge one half-open probe (local state)."""
        with self._lock:
            if self._state is not _HALF_OPEN or generation != self._generation:
                return  # the breaker moved on (forced open or closed) while the probe ran
            if outcome == _IGNORED:
                self._probes_taken -= 1
            elif outcome == _FAILURE or slow:
                self._apply(Trigger.PROBE_FAILED)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_max_calls:
                    self._apply(Trigger.PROBES_SUCCEEDED)

    def _slow_flag(self, started: float) -> int:
        duration = self._slow_duration
        if duration is None or self._now() - started < duration:
            return 0
        return SLOW

    # ------------------------------------------------------------------ admission (local)

    def _admit(self) -> tuple[Admission, float]:
        """Admit one call on the local state: (CALL, 0), (PROBE, generation) or (REJECT, wait)."""
        if self._state is _CLOSED:
            return Admission.CALL, 0.0
        with self._lock:
            decision = admit(
                self._state,
                now=self._now(),
                opened_until=self._opened_until,
                probes_taken=self._probes_taken,
                half_open_max_calls=self.half_open_max_calls,
            )
            if decision.state is not self._state:
                self._apply(Trigger.RECOVERY_ELAPSED)
            if decision.admission is Admission.PROBE:
                self._probes_taken += 1
                return Admission.PROBE, float(self._generation)
            return decision.admission, decision.retry_after

    def _rejected(self, retry_after: float) -> None:
        if self._hub:
            self._hub.emit(
                "call_rejected",
                _POLICY,
                self.name,
                state=self._state.value,
                retry_after=retry_after,
            )

    # ------------------------------------------------------------------ running calls

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* (the rest of the pipeline) under the breaker.

        Raises:
            CircuitOpenError: the circuit is open (or every probe slot is taken)
                and there is no *fallback_function*.
        """
        if self._fast:
            # Lock-free: asyncio runs every coroutine of a loop on one thread, and
            # nothing awaits between reading and writing the count (see _settle_closed).
            try:
                result = await thunk()
            except BaseException as exc:
                self._fast_failed(exc)
                raise
            self._failures = 0
            return result
        return await self._guarded(thunk, context.args, context.kwargs)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under the breaker.

        Raises:
            CircuitOpenError: the call was rejected and there is no *fallback_function*.
        """
        context = CallContext(
            operation=getattr(fn, "__qualname__", repr(fn)), args=args, kwargs=kwargs
        )
        return await self.run(functools.partial(fn, *args, **kwargs), context)

    async def _fallback_async(
        self, retry_after: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self._rejected(retry_after)
        fallback = self.fallback_function
        if fallback is None:
            raise _open_error(self.name, retry_after)
        result = fallback(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    def _fallback_sync(
        self, retry_after: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self._rejected(retry_after)
        fallback = self.fallback_function
        if fallback is None:
            raise _open_error(self.name, retry_after)
        return fallback(*args, **kwargs)

    async def _guarded(self, thunk: Thunk[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._store is not None:
            return await self._guarded_shared(thunk, args, kwargs)
        admission, value = self._admit()
        if admission is Admission.REJECT:
            return cast("T", await self._fallback_async(value, args, kwargs))
        started = self._now() if self._slow_duration is not None else 0.0
        try:
            result = await thunk()
        except BaseException as exc:
            self._settle(admission, self._classify(exc), started, value)
            raise
        self._settle(admission, self._classify_result(result), started, value)
        return result

    def _guarded_sync(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        admission, value = self._admit()
        if admission is Admission.REJECT:
            return cast("T", self._fallback_sync(value, args, kwargs))
        started = self._now() if self._slow_duration is not None else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_sync(admission, self._classify(exc), started, value)
            raise
        self._settle_sync(admission, self._classify_result(result), started, value)
        return result

    def _settle_sync(
        self, admission: Admission, outcome: int, started: float, value: float
    ) -> None:
        # A sync function may be called from many threads: count under the lock
        # (classified outside it, as classifying may run user code).
        with self._lock:
            self._settle(admission, outcome, started, value)

    def _settle(self, admission: Admission, outcome: int, started: float, value: float) -> None:
        slow = self._slow_flag(started) if outcome != _IGNORED else 0
        if admission is Admission.PROBE:
            self._settle_probe(outcome, slow, int(value))
        else:
            self._settle_closed(outcome, slow)

    # ------------------------------------------------------------------ shared state

    def _adopt(self, shared: SharedState, now: float, reason: str = "shared_state") -> None:
        """Take *shared* as the local view; report a change of state."""
        store = cast("BreakerStore", self._store)
        self._cache_expires = now + store.refresh_interval
        with self._lock:
            if shared.generation != self._generation:
                self._generation = shared.generation
                self._reset_counts()
            old = self._state
            self._opened_until = now + shared.remaining
            if shared.state is not old:
                self._state = shared.state
                if self._hub:
                    stats = self.stats if shared.state is _OPEN else None
                    self._report(old, shared.state, reason, stats)

    def _schedule_refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        store = cast("BreakerStore", self._store)
        try:
            shared = await store.load(self.name)
        except Exception as exc:  # the store is down: keep the cached view, say so, retry later
            self._store_failed("load", exc)
            return
        self._adopt(shared, self._now())

    def _store_failed(self, operation: str, exc: Exception) -> None:
        self._cache_expires = self._now() + cast("BreakerStore", self._store).refresh_interval
        _log.warning(
            "breaker_store_failed breaker=%s operation=%s error=%s",
            self.name,
            operation,
            type(exc).__name__,
        )

    async def _shared_transition(self, trigger: Trigger, *, open_for: float | None = None) -> None:
        store = cast("BreakerStore", self._store)
        span = self.recovery_timeout if open_for is None else open_for
        try:
            shared = await store.transition(self.name, trigger, open_for=span)
        except Exception as exc:  # degrade to this process's own view until the store is back
            self._store_failed("transition", exc)
            with self._lock:
                self._apply(trigger, open_for=span)
            return
        self._adopt(shared, self._now(), trigger.value)

    async def _guarded_shared(
        self, thunk: Thunk[T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        store = cast("BreakerStore", self._store)
        now = self._now()
        if now >= self._cache_expires:
            if self._cache_expires == 0.0:
                await self._refresh_quietly()  # first call: nothing cached yet
            else:
                self._schedule_refresh()
        if self._state is _OPEN and now < self._opened_until:
            return cast("T", await self._fallback_async(self._opened_until - now, args, kwargs))
        lease: str | None = None
        granted = 0  # the generation the probe was granted in
        if self._state is not _CLOSED:
            # Half-open (or due to be): the local slot count spares the store a
            # round trip per caller; the lease in the store limits the fleet.
            if self._probes_taken >= self.half_open_max_calls:
                return cast("T", await self._fallback_async(0.0, args, kwargs))
            self._probes_taken += 1
            try:
                grant = await store.acquire_probe(self.name, max_calls=self.half_open_max_calls)
            except Exception as exc:  # the store is down: this process probes on its own
                self._store_failed("acquire_probe", exc)
                grant = ProbeGrant(SharedState(_HALF_OPEN, 0.0, self._generation), _LOCAL_LEASE)
            except BaseException:
                self._probes_taken -= 1
                raise
            if grant.lease != _LOCAL_LEASE:
                self._adopt(grant.shared, self._now(), "shared_state")
            if grant.lease is None:
                self._probes_taken -= 1
                if grant.shared.state is not _CLOSED:
                    wait = grant.shared.remaining
                    return cast("T", await self._fallback_async(wait, args, kwargs))
            lease, granted = grant.lease, grant.shared.generation
        started = self._now() if self._slow_duration is not None else 0.0
        try:
            result = await thunk()
        except BaseException as exc:
            await self._settle_shared(lease, granted, self._classify(exc), started)
            raise
        await self._settle_shared(lease, granted, self._classify_result(result), started)
        return result

    async def _settle_shared(
        self, lease: str | None, granted: int, outcome: int, started: float
    ) -> None:
        slow = self._slow_flag(started) if outcome != _IGNORED else 0
        if lease is None:
            if self._settle_closed(outcome, slow) is Trigger.TRIPPED:
                await self._shared_transition(Trigger.TRIPPED)
            return
        self._probes_taken = max(0, self._probes_taken - 1)
        failed = outcome == _FAILURE or bool(slow)
        if lease != _LOCAL_LEASE:
            store = cast("BreakerStore", self._store)
            try:
                if outcome == _IGNORED:
                    await store.release_probe(self.name, lease)
                    return
                # Settled against the lease: the store ignores the outcome of a probe
                # from a half-open period that is over (a late failure must not
                # re-open a newer period, nor a breaker closed meanwhile).
                if failed:
                    shared = await store.probe_failed(
                        self.name, lease, open_for=self.recovery_timeout
                    )
                else:
                    shared = await store.probe_succeeded(
                        self.name, lease, needed=self.half_open_max_calls
                    )
            except Exception as exc:  # judge the probe locally; the next refresh re-syncs
                self._store_failed("settle_probe", exc)
            else:
                trigger = Trigger.PROBE_FAILED if failed else Trigger.PROBES_SUCCEEDED
                # The probe moved the breaker only if the store made the very next transition.
                moved = shared.generation == granted + 1 and shared.state is next_state(
                    _HALF_OPEN, trigger
                )
                self._adopt(shared, self._now(), trigger.value if moved else "shared_state")
                return
        if outcome != _IGNORED:
            with self._lock:
                if self._generation == granted:  # else the breaker moved on while it ran
                    self._apply(Trigger.FORCED_OPEN if failed else Trigger.FORCED_CLOSED)

    # ------------------------------------------------------------------ decorating

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* (async or sync) so that every call goes through the breaker.

        Raises:
            TypeError: *fn* is sync and the breaker has a store (stores are async).
        """
        if not self._named:
            self.name = getattr(fn, "__qualname__", None) or self.name
            self._named = True
        if inspect.iscoroutinefunction(fn):
            return self._decorate_async(fn)
        if self._store is not None:
            raise TypeError(
                f"{fn!r} is not async: a breaker with a shared store decorates async functions only"
            )
        return self._decorate_sync(fn)

    def decorate(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Same as using the breaker as a decorator (the ``circuitbreaker`` method name)."""
        return self(fn)

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        breaker = self
        monotonic = self._now
        open_state = _OPEN

        # The closed path is inlined (no CallContext, no partial): it is most calls.
        # It takes no lock: one event loop runs its coroutines on one thread, and no
        # await falls between reading and writing the counts (unlike sync callers').
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            if breaker._fast:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    breaker._fast_failed(exc)
                    raise
                breaker._failures = 0
                return result
            if breaker._state is open_state and breaker._store is None:
                remaining = breaker._opened_until - monotonic()
                if remaining > 0.0:
                    if breaker.fallback_function is None and not breaker._hub:
                        raise _open_error(breaker.name, remaining)
                    return cast("T", await breaker._fallback_async(remaining, args, kwargs))
            return await breaker._guarded(functools.partial(fn, *args, **kwargs), args, kwargs)

        return wrapper

    def _decorate_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        breaker = self
        monotonic = self._now
        open_state = _OPEN

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            if breaker._fast:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    breaker._fast_failed_sync(exc)
                    raise
                if breaker._failures:  # checked here: a clean success calls nothing more
                    breaker._fast_succeeded_sync()
                return result
            if breaker._state is open_state:
                remaining = breaker._opened_until - monotonic()
                if remaining > 0.0:
                    if breaker.fallback_function is None and not breaker._hub:
                        raise _open_error(breaker.name, remaining)
                    return cast("T", breaker._fallback_sync(remaining, args, kwargs))
            return breaker._guarded_sync(fn, args, kwargs)

        return wrapper


@overload
def circuit(fn: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def circuit(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def circuit(
    *,
    failure_threshold: int | None = None,
    recovery_timeout: float | timedelta | None = None,
    expected_exception: ExceptionSpec | None = None,
    name: str | None = None,
    fallback_function: Callable[..., Any] | None = None,
    cls: type[CircuitBreaker] = CircuitBreaker,
    window: CountWindow | TimeWindow | None = None,
    failure_rate_threshold: float | None = None,
    minimum_calls: int | None = None,
    slow_call_duration: float | timedelta | None = None,
    slow_call_rate_threshold: float | None = None,
    half_open_max_calls: int = 1,
    exclude: type[BaseException] | tuple[type[BaseException], ...] = (),
    failure_predicate: Callable[[Any], bool] | None = None,
    store: BreakerStore | None = None,
    clock: Clock | None = None,
    events: EventHub | None = None,
) -> CircuitBreaker: ...


def circuit(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    failure_threshold: int | None = None,
    recovery_timeout: float | timedelta | None = None,
    expected_exception: ExceptionSpec | None = None,
    name: str | None = None,
    fallback_function: Callable[..., Any] | None = None,
    cls: type[CircuitBreaker] = CircuitBreaker,
    window: CountWindow | TimeWindow | None = None,
    failure_rate_threshold: float | None = None,
    minimum_calls: int | None = None,
    slow_call_duration: float | timedelta | None = None,
    slow_call_rate_threshold: float | None = None,
    half_open_max_calls: int = 1,
    exclude: type[BaseException] | tuple[type[BaseException], ...] = (),
    failure_predicate: Callable[[Any], bool] | None = None,
    store: BreakerStore | None = None,
    clock: Clock | None = None,
    events: EventHub | None = None,
) -> Any:
    """Put a function behind its own `CircuitBreaker`, as the ``circuitbreaker`` package does.

    ``@circuit`` alone uses the defaults (open after 5 consecutive failures of
    any `Exception`, probe after 30 seconds); ``@circuit(...)`` takes the
    `CircuitBreaker` options. The breaker is named after the function unless
    *name* is given, and works on async and sync functions, keeping their
    signatures.

    Args:
        fn: the function, when used bare as ``@circuit``.
        failure_threshold: see `CircuitBreaker` (default 5).
        recovery_timeout: seconds the circuit stays open (default 30).
        expected_exception: failing exception types or a predicate (default `Exception`).
        name: the breaker's name (default: the function's qualified name).
        fallback_function: called with the call's arguments instead of
            raising `CircuitOpenError`.
        cls: the breaker class to build (a `CircuitBreaker` subclass).
        window: see `CircuitBreaker`.
        failure_rate_threshold: see `CircuitBreaker`.
        minimum_calls: see `CircuitBreaker`.
        slow_call_duration: see `CircuitBreaker`.
        slow_call_rate_threshold: see `CircuitBreaker`.
        half_open_max_calls: see `CircuitBreaker`.
        exclude: see `CircuitBreaker`.
        failure_predicate: see `CircuitBreaker`.
        store: see `CircuitBreaker`.
        clock: see `CircuitBreaker`.
        events: see `CircuitBreaker`.

    Returns:
        The decorated function (bare use), or the breaker, which decorates.

    Raises:
        ValueError: an option is out of range.
        TypeError: an option has the wrong type.
    """
    breaker = cls(
        name=name,
        failure_threshold=failure_threshold,
        recovery_timeout=30.0 if recovery_timeout is None else recovery_timeout,
        window=window,
        failure_rate_threshold=failure_rate_threshold,
        minimum_calls=minimum_calls,
        slow_call_duration=slow_call_duration,
        slow_call_rate_threshold=slow_call_rate_threshold,
        half_open_max_calls=half_open_max_calls,
        expected_exception=Exception if expected_exception is None else expected_exception,
        exclude=exclude,
        failure_predicate=failure_predicate,
        fallback_function=fallback_function,
        store=store,
        clock=clock,
        events=events,
    )
    if fn is not None:
        if not callable(fn):
            raise TypeError(f"circuit() takes keyword options; got {fn!r}")
        return breaker(fn)
    return breaker
