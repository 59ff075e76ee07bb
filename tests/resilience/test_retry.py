"""`retry` (the tenacity-compatible decorator) and `Retry` (the pipeline policy), on a FakeClock."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from seawall.errors import (
    BulkheadFull,
    CircuitOpenError,
    RateLimitExceeded,
    RetryError,
    TimeoutExceeded,
)
from seawall.resilience import (
    CallContext,
    EventHub,
    Pipeline,
    ResilienceEvent,
    Retry,
    RetryBudget,
    before_sleep_log,
    is_transient,
    parse_retry_after,
    retry,
    retryable_status,
)
from seawall.resilience._retry import retry_after_of
from seawall.resilience._timeout import Timeout
from seawall.resilience._waits import (
    RetryCallState,
    compute_delay,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)
from seawall.testing import FakeClock

# Fri, 15 Jan 2027 08:00:00 GMT is the FakeClock's wall time 1_800_000_000.
WALL_START = 1_800_000_000.0


class Flaky:
    """Fails with the given exceptions (or returns the given values) in turn, then returns "ok"."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def step(self) -> Any:
        self.calls += 1
        if not self.outcomes:
            return "ok"
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def __call__(self) -> Any:
        return self.step()


@dataclass
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


def kinds(seen: list[ResilienceEvent]) -> list[str]:
    return [event.kind for event in seen]


# --- the decorator: tenacity's options -----------------------------------------------------------


async def test_retry_decorator_takes_tenacity_options_and_waits_exponentially() -> None:
    clock = FakeClock()
    flaky = Flaky(ValueError("1"), ValueError("2"), ValueError("3"))

    @retry(
        wait=wait_exponential(multiplier=1, min=1, max=60), stop=stop_after_attempt(5), clock=clock
    )
    async def fetch_with_retry(url: str) -> str:
        return f"{url}:{await flaky()}"

    result = await fetch_with_retry("https://example.test")

    assert result == "https://example.test:ok"
    assert clock.sleeps == [1, 2, 4]


async def test_retry_decorator_raises_retry_error_with_the_last_exception_when_it_stops() -> None:
    clock = FakeClock()
    last = ConnectionError("still down")
    flaky = Flaky(ValueError("first"), last)

    @retry(stop=stop_after_attempt(2), wait=wait_fixed(1), clock=clock)
    async def call() -> Any:
        return await flaky()

    with pytest.raises(RetryError) as caught:
        await call()

    assert caught.value.attempts == 2
    assert caught.value.last_exception is last
    assert caught.value.__cause__ is last
    assert flaky.calls == 2


async def test_retry_decorator_with_reraise_raises_the_last_exception_itself() -> None:
    flaky = Flaky(ValueError("first"), KeyError("last"))

    @retry(stop=stop_after_attempt(2), wait=wait_fixed(1), reraise=True, clock=FakeClock())
    async def call() -> Any:
        return await flaky()

    with pytest.raises(KeyError, match="last"):
        await call()


async def test_retry_decorator_without_a_predicate_retries_any_exception() -> None:
    flaky = Flaky(KeyError(), ZeroDivisionError(), RuntimeError())

    @retry(stop=stop_after_attempt(4), wait=wait_fixed(0), clock=FakeClock())
    async def call() -> Any:
        return await flaky()

    result = await call()

    assert result == "ok"
    assert flaky.calls == 4


async def test_retry_decorator_never_retries_a_cancelled_call() -> None:
    flaky = Flaky(asyncio.CancelledError())

    @retry(stop=stop_after_attempt(5), wait=wait_fixed(1), clock=FakeClock())
    async def call() -> Any:
        return await flaky()

    with pytest.raises(asyncio.CancelledError):
        await call()

    assert flaky.calls == 1


async def test_retry_decorator_raises_an_exception_its_predicate_does_not_retry_at_once() -> None:
    clock = FakeClock()
    flaky = Flaky(TypeError("bug"))

    @retry(retry=retry_if_exception_type(ConnectionError), stop=stop_after_attempt(5), clock=clock)
    async def call() -> Any:
        return await flaky()

    with pytest.raises(TypeError, match="bug"):
        await call()

    assert flaky.calls == 1
    assert clock.sleeps == []


async def test_retry_decorator_retries_results_and_reports_the_last_one() -> None:
    flaky = Flaky(None, None, None)

    @retry(
        retry=retry_if_result(lambda value: value is None),
        stop=stop_after_attempt(3),
        wait=wait_fixed(1),
        clock=FakeClock(),
    )
    async def call() -> Any:
        return await flaky()

    with pytest.raises(RetryError) as caught:
        await call()

    assert caught.value.last_exception is None
    assert caught.value.last_result is None
    assert caught.value.attempts == 3


async def test_stops_combined_with_or_end_on_whichever_comes_first() -> None:
    clock = FakeClock()
    flaky = Flaky(*[ConnectionRefusedError()] * 10)

    @retry(stop=stop_after_attempt(10) | stop_after_delay(30), wait=wait_fixed(12), clock=clock)
    async def call() -> Any:
        return await flaky()

    with pytest.raises(RetryError):
        await call()

    assert clock.sleeps == [12, 12, 12]
    assert flaky.calls == 4


async def test_before_sleep_sees_the_attempt_its_outcome_and_the_upcoming_sleep() -> None:
    flaky = Flaky(ValueError("boom"))
    seen: list[tuple[int, float, str]] = []

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None
        assert state.next_action is not None
        seen.append(
            (state.attempt_number, state.next_action.sleep, repr(state.outcome.exception()))
        )

    @retry(wait=wait_fixed(3), before_sleep=before_sleep, clock=FakeClock())
    async def call() -> Any:
        return await flaky()

    await call()

    assert seen == [(1, 3.0, "ValueError('boom')")]


async def test_an_async_before_sleep_is_awaited() -> None:
    flaky = Flaky(ValueError())
    seen: list[int] = []

    async def before_sleep(state: RetryCallState) -> None:
        seen.append(state.attempt_number)

    @retry(wait=wait_fixed(1), before_sleep=before_sleep, clock=FakeClock())
    async def call() -> Any:
        return await flaky()

    await call()

    assert seen == [1]


async def test_retry_error_callback_value_is_returned_when_retries_stop() -> None:
    flaky = Flaky(ValueError(), ValueError())

    @retry(
        stop=stop_after_attempt(2),
        wait=wait_fixed(1),
        retry_error_callback=lambda state: f"gave up after {state.attempt_number}",
        clock=FakeClock(),
    )
    async def call() -> Any:
        return await flaky()

    result = await call()

    assert result == "gave up after 2"


async def test_retry_decorator_accepts_an_async_sleep_function() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    flaky = Flaky(ValueError())

    @retry(wait=wait_fixed(7), sleep=sleep)
    async def call() -> Any:
        return await flaky()

    await call()

    assert slept == [7]


async def test_retry_decorator_reports_attempts_retries_and_exhaustion() -> None:
    hub, seen = recorder()
    flaky = Flaky(ValueError(), ValueError())

    @retry(stop=stop_after_attempt(2), wait=wait_fixed(1), clock=FakeClock(), events=hub, name="gh")
    async def call() -> Any:
        return await flaky()

    with pytest.raises(RetryError):
        await call()

    assert kinds(seen) == ["attempt", "retry_scheduled", "attempt", "retries_exhausted"]
    assert seen[1].attributes["reason"] == "ValueError"
    assert {event.name for event in seen} == {"gh"}


def test_retry_decorator_works_on_plain_functions_with_an_injected_sleep() -> None:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    flaky = Flaky(*[ValueError()] * 5)

    @retry(stop=stop_after_delay(10), wait=wait_fixed(4), sleep=sleep, clock=clock)
    def call(x: int) -> str:
        return f"{x}:{flaky.step()}"

    with pytest.raises(RetryError):
        call(1)

    assert slept == [4, 4, 4]
    assert flaky.calls == 4


def test_retry_decorator_on_plain_functions_returns_after_a_retry() -> None:
    flaky = Flaky(KeyError())

    @retry(wait=wait_fixed(2), sleep=lambda seconds: None)
    def call() -> Any:
        return flaky.step()

    result = call()

    assert result == "ok"


def test_retry_decorator_on_plain_functions_retries_results_and_uses_the_callback() -> None:
    flaky = Flaky(0, 0, 0)

    @retry(
        retry=retry_if_result(lambda value: value == 0),
        stop=stop_after_attempt(2),
        sleep=lambda seconds: None,
        retry_error_callback=lambda state: "fallback",
    )
    def call() -> Any:
        return flaky.step()

    result = call()

    assert result == "fallback"


def test_bare_retry_decorates_plain_and_async_functions_keeping_their_signature() -> None:
    @retry
    def plain(a: int, b: str = "x") -> str:
        """Plain."""
        return f"{a}{b}"

    @retry
    async def coroutine(a: int) -> int:
        return a

    result = plain(1)

    assert result == "1x"
    assert inspect.signature(plain) == inspect.signature(plain.__wrapped__)  # type: ignore[attr-defined]
    assert plain.__name__ == "plain"
    assert plain.__doc__ == "Plain."
    assert inspect.iscoroutinefunction(coroutine)


async def test_bare_retry_returns_the_value_of_an_async_function() -> None:
    @retry
    async def coroutine(a: int) -> int:
        return a * 2

    result = await coroutine(21)

    assert result == 42


def test_retry_refuses_a_strategy_passed_positionally() -> None:
    with pytest.raises(TypeError, match="keyword"):
        retry(stop_after_attempt(3))


async def test_before_sleep_log_logs_like_tenacity(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.retry")
    flaky = Flaky(ValueError("boom"))

    @retry(
        wait=wait_fixed(2),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        clock=FakeClock(),
    )
    async def fetch() -> Any:
        return await flaky()

    with caplog.at_level(logging.WARNING, logger="test.retry"):
        await fetch()

    assert "in 2.0 seconds as it raised ValueError: boom" in caplog.text


def test_retry_with_builds_the_same_retry_with_some_options_changed() -> None:
    slept: list[float] = []
    flaky = Flaky(KeyError(), KeyError(), KeyError())

    @retry(stop=stop_after_attempt(2), wait=wait_fixed(30), sleep=slept.append)
    def call() -> Any:
        return flaky.step()

    faster = call.retry_with(stop=stop_after_attempt(4), wait=wait_fixed(0))  # type: ignore[attr-defined]
    result = faster()

    assert result == "ok"
    assert slept == [0, 0, 0]


def test_retry_decorator_on_plain_functions_can_reraise() -> None:
    flaky = Flaky(KeyError("a"), KeyError("b"))

    @retry(stop=stop_after_attempt(2), reraise=True, sleep=lambda seconds: None)
    def call() -> Any:
        return flaky.step()

    with pytest.raises(KeyError, match="b"):
        call()


async def test_before_sleep_log_describes_a_retried_value(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.retry")
    flaky = Flaky(None)

    @retry(
        retry=retry_if_result(lambda value: value is None),
        wait=wait_fixed(1),
        before_sleep=before_sleep_log(logger, logging.INFO),
        clock=FakeClock(),
    )
    async def fetch() -> Any:
        return await flaky()

    with caplog.at_level(logging.INFO, logger="test.retry"):
        await fetch()

    assert "as it returned None" in caplog.text


# --- the pure decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exception",
    [
        TimeoutError(),
        TimeoutExceeded(timeout="t", seconds=1),
        ConnectionResetError(),
        OSError("network unreachable"),
        type("Flagged", (Exception,), {"transient": True})(),
    ],
)
def test_the_transient_family_is_retried_by_default(exception: BaseException) -> None:
    transient = is_transient(exception)

    assert transient is True


@pytest.mark.parametrize(
    "exception",
    [
        ValueError(),
        KeyError(),
        CircuitOpenError(breaker="b", retry_after=1),
        BulkheadFull(bulkhead="b", max_concurrent=1, max_queue=0),
        RetryError(name="r", attempts=3),
        RateLimitExceeded(limiter="l", retry_after=1),
        type("Flagged", (Exception,), {"transient": False})(),
    ],
)
def test_refusals_and_bugs_are_not_transient(exception: BaseException) -> None:
    transient = is_transient(exception)

    assert transient is False


@pytest.mark.parametrize(
    ("result", "expected"),
    [(Response(429), True), (Response(503), True), (Response(500), False), (Response(404), False)],
)
def test_retryable_status_covers_429_502_503_504(result: Response, expected: bool) -> None:
    decision = retryable_status(result)

    assert decision is expected
    assert retryable_status("not a response") is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(value: str, expected: float | None) -> None:
    delay = parse_retry_after(value, now=WALL_START)

    assert delay == expected


def test_retry_after_is_read_from_an_attribute_or_headers() -> None:
    class LimitedError(Exception):
        retry_after = 4.0

    class HttpError(Exception):
        response = Response(503, {"retry-after": "9"})

    delays = [
        retry_after_of(LimitedError(), None, now=WALL_START),
        retry_after_of(None, Response(429, {"Retry-After": "7"}), now=WALL_START),
        retry_after_of(HttpError(), None, now=WALL_START),
        retry_after_of(ValueError(), None, now=WALL_START),
    ]

    assert delays == [4.0, 7.0, 9.0, None]


def test_retry_after_attributes_may_be_timedeltas_or_header_strings() -> None:
    class SlowDownError(Exception):
        retry_after = timedelta(seconds=3)

    class DateError(Exception):
        retry_after = "Fri, 15 Jan 2027 08:01:00 GMT"

    delays = [
        retry_after_of(SlowDownError(), None, now=WALL_START),
        retry_after_of(DateError(), None, now=WALL_START),
    ]

    assert delays == [3.0, 60.0]


def test_budget_allows_ratio_times_calls_plus_the_reserve() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0, window=10, clock=FakeClock())
    for _ in range(10):
        budget.record_call()

    granted = [budget.try_retry() for _ in range(3)]

    assert granted == [True, True, False]


def test_budget_forgets_calls_and_retries_older_than_the_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.1, window=10, clock=clock)
    for _ in range(4):
        budget.record_call()
    assert budget.available() == 3

    clock.advance(10.5)

    assert budget.available() == 1


def test_budget_slides_bucket_by_bucket() -> None:
    clock = FakeClock(start=0.0)
    budget = RetryBudget(ratio=1, min_retries_per_second=0, window=10, buckets=10, clock=clock)
    budget.record_call()
    assert budget.available() == 1
    clock.advance(5)
    budget.record_call()
    budget.record_call()
    assert budget.available() == 3

    clock.advance(5.5)

    assert budget.available() == 2


def test_budget_places_counted_calls_in_the_window_every_flush_every_calls() -> None:
    clock = FakeClock(start=0.0)
    budget = RetryBudget(ratio=1, min_retries_per_second=0, window=10, flush_every=2, clock=clock)
    budget.record_call()
    budget.record_call()

    clock.advance(10.5)

    assert budget.available() == 0


def test_budget_rejects_nonsense_options() -> None:
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=-1)

    with pytest.raises(ValueError, match="window"):
        RetryBudget(window=0)


# --- the Retry policy -------------------------------------------------------------------------


async def test_policy_retries_transient_errors_with_full_jitter() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionError(), TimeoutError())
    policy = Retry(max_attempts=3, base_delay=1, max_delay=10, clock=clock, rng=random.Random(42))
    reference = random.Random(42)

    result = await policy.call(flaky)

    assert result == "ok"
    assert clock.sleeps == [
        compute_delay(1, jitter="full", base=1, cap=10, rng=reference),
        compute_delay(2, jitter="full", base=1, cap=10, rng=reference),
    ]


async def test_policy_decorrelated_jitter_grows_from_the_previous_sleep() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionRefusedError(), ConnectionRefusedError(), ConnectionRefusedError())
    policy = Retry(
        max_attempts=4,
        jitter="decorrelated",
        base_delay=1,
        max_delay=100,
        clock=clock,
        rng=random.Random(1),
    )
    reference = random.Random(1)

    await policy.call(flaky)

    first = compute_delay(1, jitter="decorrelated", base=1, cap=100, rng=reference)
    second = compute_delay(2, jitter="decorrelated", base=1, cap=100, previous=first, rng=reference)
    assert clock.sleeps[:2] == [first, second]


async def test_policy_does_not_retry_errors_outside_the_transient_family() -> None:
    clock = FakeClock()
    flaky = Flaky(ValueError("bad request"))
    policy = Retry(clock=clock)

    with pytest.raises(ValueError, match="bad request"):
        await policy.call(flaky)

    assert flaky.calls == 1
    assert clock.sleeps == []


async def test_policy_never_retries_an_open_circuit_by_default() -> None:
    flaky = Flaky(CircuitOpenError(breaker="pay", retry_after=3))
    policy = Retry(clock=FakeClock())

    with pytest.raises(CircuitOpenError):
        await policy.call(flaky)

    assert flaky.calls == 1


async def test_policy_retries_chosen_exception_types() -> None:
    flaky = Flaky(KeyError(), KeyError())
    policy = Retry(retry_on=(KeyError,), clock=FakeClock())

    result = await policy.call(flaky)

    assert result == "ok"


async def test_policy_re_raises_the_last_exception_with_a_note_when_attempts_run_out() -> None:
    hub, seen = recorder()
    last = ConnectionError("third")
    flaky = Flaky(ConnectionError("first"), ConnectionError("second"), last)
    policy = Retry(max_attempts=3, clock=FakeClock(), events=hub, name="crm")

    with pytest.raises(ConnectionError) as caught:
        await policy.call(flaky)

    assert caught.value is last
    assert "gave up after 3 (max_attempts)" in caught.value.__notes__[0]
    assert kinds(seen) == [
        "attempt",
        "retry_scheduled",
        "attempt",
        "retry_scheduled",
        "attempt",
        "retries_exhausted",
    ]
    assert seen[-1].attributes["reason"] == "max_attempts"


async def test_policy_retries_exceptions_chosen_by_a_predicate() -> None:
    flaky = Flaky(ValueError("retry me"), ValueError("retry me"))
    policy = Retry(retry_on=lambda exc: "retry me" in str(exc), clock=FakeClock())

    result = await policy.call(flaky)

    assert result == "ok"
    assert flaky.calls == 3


async def test_policy_retries_5xx_and_429_responses_and_returns_the_good_one() -> None:
    flaky = Flaky(Response(503), Response(429), Response(200))
    policy = Retry(max_attempts=3, clock=FakeClock())

    result = await policy.call(flaky)

    assert result == Response(200)


async def test_policy_returns_the_last_bad_response_when_attempts_run_out() -> None:
    flaky = Flaky(Response(502), Response(504))
    policy = Retry(max_attempts=2, clock=FakeClock())

    result = await policy.call(flaky)

    assert result == Response(504)


async def test_policy_does_not_retry_client_errors() -> None:
    flaky = Flaky(Response(404))
    policy = Retry(clock=FakeClock())

    result = await policy.call(flaky)

    assert result == Response(404)
    assert flaky.calls == 1


async def test_policy_waits_as_long_as_retry_after_asks() -> None:
    clock = FakeClock()
    flaky = Flaky(Response(429, {"Retry-After": "12"}))
    policy = Retry(base_delay=0.1, max_delay=1, clock=clock)

    await policy.call(flaky)

    assert clock.sleeps == [12.0]


async def test_policy_honours_retry_after_http_dates_on_the_wall_clock() -> None:
    clock = FakeClock(wall_start=WALL_START)
    flaky = Flaky(Response(503, {"Retry-After": "Fri, 15 Jan 2027 08:00:20 GMT"}))
    policy = Retry(base_delay=0.1, max_delay=1, clock=clock)

    await policy.call(flaky)

    assert clock.sleeps == [20.0]


async def test_policy_honours_retry_after_of_an_exception() -> None:
    clock = FakeClock()
    flaky = Flaky(RateLimitExceeded(limiter="api", retry_after=5))
    policy = Retry(retry_on=(RateLimitExceeded,), base_delay=0.1, clock=clock)

    await policy.call(flaky)

    assert clock.sleeps == [5.0]


async def test_policy_gives_up_rather_than_wait_past_max_retry_after() -> None:
    clock = FakeClock()
    hub, seen = recorder()
    flaky = Flaky(Response(503, {"Retry-After": "3600"}))
    policy = Retry(max_retry_after=60, clock=clock, events=hub)

    result = await policy.call(flaky)

    assert result == Response(503, {"Retry-After": "3600"})
    assert clock.sleeps == []
    assert seen[-1].attributes["reason"] == "retry_after_too_long"


async def test_policy_gives_up_when_the_next_wait_would_pass_max_total_time() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionRefusedError(), ConnectionRefusedError(), ConnectionRefusedError())
    policy = Retry(max_attempts=10, jitter="none", base_delay=4, max_total_time=10, clock=clock)

    with pytest.raises(ConnectionRefusedError):
        await policy.call(flaky)

    assert clock.sleeps == [4]
    assert flaky.calls == 2


async def test_policy_never_sleeps_past_the_context_deadline() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionRefusedError(), ConnectionRefusedError())
    policy = Retry(max_attempts=5, jitter="none", base_delay=2, clock=clock)
    context = CallContext(operation="op", deadline=clock.monotonic() + 5)

    with pytest.raises(ConnectionRefusedError):
        await policy.run(flaky, context)

    assert clock.sleeps == [2]


async def test_policy_under_a_total_timeout_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionRefusedError(), ConnectionRefusedError(), ConnectionRefusedError())
    pipeline = Pipeline(
        [
            Retry(max_attempts=5, jitter="none", base_delay=3, clock=clock),
            Timeout(per_attempt=None, total=5, clock=clock),
        ]
    )

    with pytest.raises(ConnectionRefusedError):
        await pipeline.call(flaky)

    assert clock.sleeps == [3]


async def test_policy_never_retries_a_non_idempotent_call() -> None:
    clock = FakeClock()
    flaky = Flaky(ConnectionError())
    policy = Retry(clock=clock)

    with pytest.raises(ConnectionError):
        await policy.run(flaky, CallContext(operation="POST /payments", idempotent=False))

    assert flaky.calls == 1
    assert clock.sleeps == []


async def test_policy_retries_a_non_idempotent_call_that_carries_an_idempotency_key() -> None:
    flaky = Flaky(ConnectionError())
    policy = Retry(clock=FakeClock())
    context = CallContext(operation="POST /payments", idempotent=False, idempotency_key="k-1")

    result = await policy.run(flaky, context)

    assert result == "ok"
    assert flaky.calls == 2


async def test_policy_never_retries_a_cancelled_call() -> None:
    flaky = Flaky(asyncio.CancelledError())
    policy = Retry(retry_on=(BaseException,), clock=FakeClock())

    with pytest.raises(asyncio.CancelledError):
        await policy.call(flaky)

    assert flaky.calls == 1


async def test_cancelling_a_call_while_it_waits_to_retry_stops_it() -> None:
    started = asyncio.Event()

    class StuckClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            started.set()
            await asyncio.Event().wait()

    flaky = Flaky(ConnectionRefusedError())
    task = asyncio.create_task(Retry(clock=StuckClock()).call(flaky))
    await started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert flaky.calls == 1


async def test_policy_sets_the_attempt_number_on_the_context() -> None:
    context = CallContext(operation="op")
    seen: list[int] = []

    async def thunk() -> str:
        seen.append(context.attempt)
        if len(seen) < 3:
            raise TimeoutError
        return "done"

    await Retry(clock=FakeClock()).run(thunk, context)

    assert seen == [1, 2, 3]


async def test_policy_stops_retrying_when_the_budget_is_spent() -> None:
    hub, seen = recorder()
    clock = FakeClock()
    budget = RetryBudget(ratio=0, min_retries_per_second=0.1, window=10, clock=clock)
    policy = Retry(max_attempts=5, budget=budget, clock=clock, events=hub)
    flaky = Flaky(*[ConnectionRefusedError()] * 10)

    with pytest.raises(ConnectionRefusedError):
        await policy.call(flaky)

    assert flaky.calls == 2
    assert kinds(seen)[-2:] == ["retry_budget_exhausted", "retries_exhausted"]


async def test_two_policies_can_share_one_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0, min_retries_per_second=0.1, window=10, clock=clock)
    first = Retry(budget=budget, clock=clock)
    second = Retry(budget=budget, clock=clock)
    await first.call(Flaky(ConnectionRefusedError()))
    flaky = Flaky(ConnectionRefusedError())

    with pytest.raises(ConnectionRefusedError):
        await second.call(flaky)

    assert first.budget is second.budget is budget
    assert flaky.calls == 1


async def test_policy_without_budget_retries_freely() -> None:
    policy = Retry(max_attempts=3, budget=False, clock=FakeClock())

    results = [
        await policy.call(Flaky(ConnectionRefusedError(), ConnectionRefusedError()))
        for _ in range(30)
    ]

    assert results == ["ok"] * 30
    assert policy.budget is None


async def test_policy_reports_attempts_only_when_someone_listens() -> None:
    hub, seen = recorder()
    policy = Retry(clock=FakeClock(), events=hub, name="maps")

    await policy.call(Flaky(ConnectionError()))

    assert kinds(seen) == ["attempt", "retry_scheduled", "attempt"]
    scheduled = seen[1]
    assert scheduled.policy == "retry"
    assert scheduled.name == "maps"
    assert scheduled.attributes["attempt"] == 1
    assert scheduled.attributes["reason"] == "ConnectionError"
    assert scheduled.attributes["delay_s"] >= 0


async def test_policy_reports_a_status_as_the_reason_for_a_retried_response() -> None:
    hub, seen = recorder()
    policy = Retry(clock=FakeClock(), events=hub)

    await policy.call(Flaky(Response(503)))

    assert seen[1].attributes["reason"] == "status 503"


async def test_policy_as_a_decorator_keeps_the_signature() -> None:
    flaky = Flaky(ConnectionRefusedError())

    @Retry(clock=FakeClock())
    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch it."""
        return f"{url}:{await flaky()}"

    result = await fetch("u")

    assert result == "u:ok"
    assert fetch.__name__ == "fetch"
    assert list(inspect.signature(fetch).parameters) == ["url", "timeout"]


async def test_policy_result_predicate_can_be_replaced_or_disabled() -> None:
    custom = Retry(retry_on_result=lambda value: value == "again", clock=FakeClock())
    disabled = Retry(retry_on_result=None, clock=FakeClock())

    results = [await custom.call(Flaky("again")), await disabled.call(Flaky(Response(503)))]

    assert results == ["ok", Response(503)]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"jitter": "wild"}, ValueError),
        ({"min_delay": 5, "max_delay": 1}, ValueError),
        ({"base_delay": -1}, ValueError),
        ({"max_total_time": 0}, ValueError),
        ({"retry_on": 3}, TypeError),
        ({"budget": "yes"}, TypeError),
    ],
)
def test_policy_rejects_nonsense_options(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Retry(**options)


def test_policy_sits_at_the_retry_stage_and_describes_itself() -> None:
    policy = Retry(name="crm")

    text = repr(policy)

    assert Retry.stage == 400
    assert text.startswith("Retry('crm', max_attempts=3")


async def test_a_retried_per_attempt_timeout_gets_a_fresh_attempt() -> None:
    never = asyncio.Event()
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()
        return "ok"

    pipeline = Pipeline([Retry(clock=FakeClock()), Timeout(per_attempt=0.01)])

    result = await pipeline.call(hangs_once)

    assert result == "ok"
    assert calls == 2
