"""The tenacity-compatible `retry` decorator, and `before_sleep_log` for it.

``@retry(wait=..., stop=..., retry=...)`` takes tenacity's strategies (the
``wait_*``, ``stop_*`` and ``retry_if_*`` of ``_waits``) and applies them in a
hand-written loop rather than around tenacity, as `Retry` does for pipelines: a
successful first attempt costs one clock read. The loop behind each decorated
function is built once, at decoration.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

from seawall.errors import RetryError
from seawall.resilience._clock import SYSTEM_CLOCK, Clock
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import operation_name
from seawall.resilience._retry import failure_reason
from seawall.resilience._waits import (
    Outcome,
    RetryAction,
    RetryCallState,
    RetryFn,
    StopFn,
    WaitFn,
    _checks_results,
    retry_base,
    retry_if_exception_type,
    stop_after_attempt,
    stop_base,
    wait_base,
    wait_exponential_jitter,
)

__all__ = ["before_sleep_log", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

# The same policy name as `Retry`'s: observers see one kind of retry.
_POLICY = "retry"

_DEFAULT_STOP = stop_after_attempt(3)
_DEFAULT_WAIT = wait_exponential_jitter(initial=0.1, max=10.0, jitter=0.1)
_DEFAULT_RETRY = retry_if_exception_type()


class _Retrying:
    """The retry loop behind one function decorated with `retry` (built once, at decoration)."""

    __slots__ = (
        "_sleep",
        "before_sleep",
        "checks_results",
        "clock",
        "hub",
        "name",
        "reraise",
        "retry",
        "retry_error_callback",
        "stop",
        "wait",
    )

    def __init__(
        self,
        *,
        wait: WaitFn,
        stop: StopFn,
        retry: RetryFn,
        reraise: bool,
        before_sleep: Callable[[RetryCallState], Any] | None,
        retry_error_callback: Callable[[RetryCallState], Any] | None,
        sleep: Callable[[float], Any] | None,
        clock: Clock,
        hub: EventHub,
        name: str,
    ) -> None:
        self.wait = wait
        self.stop = stop
        self.retry = retry
        self.checks_results = _checks_results(retry)
        self.reraise = reraise
        self.before_sleep = before_sleep
        self.retry_error_callback = retry_error_callback
        self._sleep = sleep
        self.clock = clock
        self.hub = hub
        self.name = name

    def _next_sleep(self, state: RetryCallState) -> float | None:
        # tenacity's order: the wait first, so stop_before_delay can see it.
        delay = float(self.wait(state))
        state.upcoming_sleep = delay
        if self.stop(state):
            return None
        state.next_action = RetryAction(delay)
        if self.hub:
            outcome = cast("Outcome", state.outcome)
            self.hub.emit(
                "retry_scheduled",
                _POLICY,
                self.name,
                attempt=state.attempt_number,
                delay_s=delay,
                reason=failure_reason(
                    outcome.exception(), None if outcome.failed else outcome.result()
                ),
                operation=self.name,
            )
        return delay

    def _exhausted(self, state: RetryCallState) -> Callable[[RetryCallState], Any] | None:
        if self.hub:
            self.hub.emit(
                "retries_exhausted",
                _POLICY,
                self.name,
                attempts=state.attempt_number,
                reason="stop",
                operation=self.name,
            )
        return self.retry_error_callback

    def _raise_retry_error(self, state: RetryCallState) -> Any:
        outcome = cast("Outcome", state.outcome)
        exception = outcome.exception()
        if self.reraise and exception is not None:
            raise exception
        raise RetryError(
            name=self.name,
            attempts=state.attempt_number,
            last_exception=exception,
            last_result=None if exception is not None else outcome.result(),
        ) from exception

    def _next_attempt(self, state: RetryCallState, delay: float) -> None:
        state.idle_for += delay
        state.last_sleep = delay
        state.attempt_number += 1
        state.outcome = None
        state.outcome_timestamp = None
        state.next_action = None
        if self.hub:
            self.hub.emit(
                "attempt", _POLICY, self.name, attempt=state.attempt_number, operation=self.name
            )

    async def again_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float,
        outcome: Outcome,
    ) -> Any:
        """Carry on after the first attempt's *outcome* (async functions)."""
        clock = self.clock
        state = RetryCallState(start_time=start, fn=fn, args=args, kwargs=kwargs)
        while True:
            state.outcome = outcome
            state.outcome_timestamp = clock.monotonic()
            if not self.retry(state):
                return outcome.result()
            delay = self._next_sleep(state)
            if delay is None:
                callback = self._exhausted(state)
                if callback is not None:
                    value = callback(state)
                    return await value if inspect.isawaitable(value) else value
                return self._raise_retry_error(state)
            if self.before_sleep is not None:
                done = self.before_sleep(state)
                if inspect.isawaitable(done):
                    await done
            if self._sleep is None:
                await clock.sleep(delay)
            else:
                slept = self._sleep(delay)
                if inspect.isawaitable(slept):
                    await slept
            self._next_attempt(state, delay)
            try:
                value = await fn(*args, **kwargs)
            except Exception as exc:
                outcome = Outcome(state.attempt_number, exception=exc)
            else:
                outcome = Outcome(state.attempt_number, value=value)

    def again_sync(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float,
        outcome: Outcome,
    ) -> Any:
        """Carry on after the first attempt's *outcome* (plain functions)."""
        clock = self.clock
        sleep = self._sleep or time.sleep
        state = RetryCallState(start_time=start, fn=fn, args=args, kwargs=kwargs)
        while True:
            state.outcome = outcome
            state.outcome_timestamp = clock.monotonic()
            if not self.retry(state):
                return outcome.result()
            delay = self._next_sleep(state)
            if delay is None:
                callback = self._exhausted(state)
                if callback is not None:
                    return callback(state)
                return self._raise_retry_error(state)
            if self.before_sleep is not None:
                self.before_sleep(state)
            sleep(delay)
            self._next_attempt(state, delay)
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                outcome = Outcome(state.attempt_number, exception=exc)
            else:
                outcome = Outcome(state.attempt_number, value=value)


class _RetryDecorator:
    """What ``retry(...)`` returns: applies the same options to any function."""

    __slots__ = ("_options",)

    def __init__(self, **options: Any) -> None:
        self._options = options

    def retry_with(self, **changes: Any) -> _RetryDecorator:
        """The same decorator with some options changed (tenacity's ``retry_with``)."""
        if "events" in changes:
            changes["hub"] = changes.pop("events") or default_events
        if "clock" in changes:
            changes["clock"] = changes["clock"] or SYSTEM_CLOCK
        return _RetryDecorator(**{**self._options, **changes})

    def _attach(
        self, wrapper: Callable[..., Any], fn: Callable[..., Any], engine: _Retrying
    ) -> None:
        # tenacity exposes these on decorated functions; tests use retry_with to drop the waits.
        def retry_with(**changes: Any) -> Callable[..., Any]:
            return self.retry_with(**changes)(fn)

        wrapper.retry = engine  # type: ignore[attr-defined]  # tenacity's attribute
        wrapper.retry_with = retry_with  # type: ignore[attr-defined]  # tenacity's attribute

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate *fn* (async or plain), keeping its signature."""
        name = self._options["name"] or operation_name(fn)
        engine = _Retrying(**{**self._options, "name": name})
        clock = engine.clock
        hub = engine.hub
        checks_results = engine.checks_results

        if inspect.iscoroutinefunction(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = clock.monotonic()
                if hub:
                    hub.emit("attempt", _POLICY, name, attempt=1, operation=name)
                try:
                    result = await afn(*args, **kwargs)
                except Exception as exc:
                    return await engine.again_async(
                        afn, args, kwargs, start, Outcome(1, exception=exc)
                    )
                if checks_results:
                    return await engine.again_async(
                        afn, args, kwargs, start, Outcome(1, value=result)
                    )
                return result

            self._attach(async_wrapper, fn, engine)
            return cast("Callable[P, T]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            start = clock.monotonic()
            if hub:
                hub.emit("attempt", _POLICY, name, attempt=1, operation=name)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                return cast(
                    "T", engine.again_sync(fn, args, kwargs, start, Outcome(1, exception=exc))
                )
            if checks_results:
                return cast(
                    "T", engine.again_sync(fn, args, kwargs, start, Outcome(1, value=result))
                )
            return result

        self._attach(wrapper, fn, engine)
        return wrapper


@overload
def retry(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retry(
    *,
    wait: WaitFn = ...,
    stop: StopFn = ...,
    retry: RetryFn = ...,
    reraise: bool = ...,
    before_sleep: Callable[[RetryCallState], Any] | None = ...,
    retry_error_callback: Callable[[RetryCallState], Any] | None = ...,
    sleep: Callable[[float], Any] | None = ...,
    clock: Clock | None = ...,
    events: EventHub | None = ...,
    name: str | None = ...,
) -> _RetryDecorator: ...


def retry(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    wait: WaitFn = _DEFAULT_WAIT,
    stop: StopFn = _DEFAULT_STOP,
    retry: RetryFn = _DEFAULT_RETRY,
    reraise: bool = False,
    before_sleep: Callable[[RetryCallState], Any] | None = None,
    retry_error_callback: Callable[[RetryCallState], Any] | None = None,
    sleep: Callable[[float], Any] | None = None,
    clock: Clock | None = None,
    events: EventHub | None = None,
    name: str | None = None,
) -> Any:
    """Retry a function, async or plain, with tenacity's options (``@retry`` or ``@retry(...)``).

    ``@retry(wait=wait_exponential(multiplier=1, min=1, max=60), stop=stop_after_attempt(5))``
    works as in tenacity. Without a *retry* predicate every `Exception` is
    retried, as in tenacity. Unlike tenacity, the defaults are bounded: 3
    attempts, waiting ``wait_exponential_jitter(initial=0.1, max=10, jitter=0.1)``.
    A cancelled call (or KeyboardInterrupt) is never retried.

    Args:
        fn: the function, when used bare as ``@retry``.
        wait: seconds to wait before each retry (``wait_*``; add them with ``+``).
        stop: when to give up (``stop_*``; combine with ``|`` and ``&``).
        retry: which outcomes to retry (``retry_if_*``; combine with ``|`` and ``&``).
        reraise: on giving up, raise the last exception itself instead of `RetryError`.
        before_sleep: called with the `RetryCallState` before each wait (may be async
            for async functions); e.g. `before_sleep_log`.
        retry_error_callback: called with the state on giving up; its value is returned.
        sleep: how to wait. For plain functions it defaults to `time.sleep`; for
            async functions to ``clock.sleep`` (it may return an awaitable). Tests
            pass a recording function so nothing really sleeps.
        clock: where elapsed time is read (and async sleeps happen).
        events: the event hub (the global one by default).
        name: reported in events and errors (the function's qualified name by default).

    Returns:
        The decorated function (bare use) or a decorator.

    Raises:
        TypeError: a strategy was passed positionally.
        seawall.errors.RetryError: from the decorated function, when it gives up
            (unless *reraise* or *retry_error_callback*).
    """
    decorator = _RetryDecorator(
        wait=wait,
        stop=stop,
        retry=retry,
        reraise=reraise,
        before_sleep=before_sleep,
        retry_error_callback=retry_error_callback,
        sleep=sleep,
        clock=clock or SYSTEM_CLOCK,
        hub=events if events is not None else default_events,
        name=name,
    )
    if fn is None:
        return decorator
    if isinstance(fn, wait_base | stop_base | retry_base):
        raise TypeError("pass retry strategies by keyword: retry(stop=..., wait=...)")
    return decorator(fn)


def before_sleep_log(
    logger: Any, log_level: int, exc_info: bool = False
) -> Callable[[RetryCallState], None]:
    """A ``before_sleep`` callback logging each retry, as tenacity's does.

    Args:
        logger: a `logging.Logger` (or anything with ``log(level, msg, *args, exc_info=)``).
        log_level: the level, e.g. ``logging.WARNING``.
        exc_info: attach the exception's traceback.
    """

    def log_it(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        if outcome is None:
            return
        exception = outcome.exception()
        if exception is not None:
            verb, value = "raised", f"{type(exception).__name__}: {exception}"
            info: Any = exception if exc_info else False
        else:
            verb, value, info = "returned", repr(outcome.result()), False
        fn = retry_state.fn
        target = operation_name(fn) if fn is not None else "<call>"
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.log(
            log_level,
            "Retrying %s in %s seconds as it %s %s.",
            target,
            delay,
            verb,
            value,
            exc_info=info,
        )

    return log_it
