"""CircuitBreaker and @circuit: the pure core, the opening rules, half-open, the decorators."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from seawall.errors import BulkheadFull, CircuitOpenError, RateLimitExceeded
from seawall.resilience import (
    BreakerState,
    CircuitBreaker,
    CountWindow,
    EventHub,
    Pipeline,
    ResilienceEvent,
    TimeWindow,
    circuit,
    next_state,
)
from seawall.resilience._breaker_rules import (
    Admission,
    Trigger,
    TripRules,
    WindowStats,
    admit,
    should_trip,
)
from seawall.resilience._context import CallContext
from seawall.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class BoomError(Exception):
    pass


class OtherError(Exception):
    pass


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


async def ok() -> int:
    return 1


async def boom() -> int:
    raise BoomError("down")


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub, seen = EventHub(), list[ResilienceEvent]()
    hub.subscribe(seen.append)
    return hub, seen


def breaker(**options: Any) -> CircuitBreaker:
    options.setdefault("clock", FakeClock())
    options.setdefault("events", EventHub())
    return CircuitBreaker(name="svc", **options)


async def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(BoomError):
            await b.call(boom)


# ----------------------------------------------------------------------------- pure core


@pytest.mark.parametrize(
    ("state", "trigger", "expected"),
    [
        (CLOSED, Trigger.TRIPPED, OPEN),
        (OPEN, Trigger.RECOVERY_ELAPSED, HALF_OPEN),
        (HALF_OPEN, Trigger.PROBE_FAILED, OPEN),
        (HALF_OPEN, Trigger.PROBES_SUCCEEDED, CLOSED),
        (CLOSED, Trigger.FORCED_OPEN, OPEN),
        (HALF_OPEN, Trigger.FORCED_OPEN, OPEN),
        (OPEN, Trigger.FORCED_CLOSED, CLOSED),
        (HALF_OPEN, Trigger.FORCED_CLOSED, CLOSED),
    ],
)
def test_next_state_follows_the_transition_table(
    state: BreakerState, trigger: Trigger, expected: BreakerState
) -> None:
    result = next_state(state, trigger)

    assert result is expected


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (OPEN, Trigger.TRIPPED),
        (CLOSED, Trigger.PROBE_FAILED),
        (CLOSED, Trigger.RECOVERY_ELAPSED),
        (OPEN, Trigger.PROBES_SUCCEEDED),
        (HALF_OPEN, Trigger.TRIPPED),
    ],
)
def test_next_state_ignores_a_trigger_that_does_not_apply(
    state: BreakerState, trigger: Trigger
) -> None:
    result = next_state(state, trigger)

    assert result is state


def test_admit_lets_every_call_through_when_closed() -> None:
    decision = admit(CLOSED, now=5.0, opened_until=0.0, probes_taken=0, half_open_max_calls=1)

    assert decision.admission is Admission.CALL


def test_admit_rejects_while_open_and_says_how_long() -> None:
    decision = admit(OPEN, now=10.0, opened_until=12.5, probes_taken=0, half_open_max_calls=1)

    assert decision == (Admission.REJECT, OPEN, 2.5)


def test_admit_turns_an_expired_open_state_into_a_half_open_probe() -> None:
    decision = admit(OPEN, now=13.0, opened_until=12.5, probes_taken=5, half_open_max_calls=1)

    assert decision == (Admission.PROBE, HALF_OPEN, 0.0)


def test_admit_rejects_when_every_probe_slot_is_taken() -> None:
    decision = admit(HALF_OPEN, now=13.0, opened_until=0.0, probes_taken=2, half_open_max_calls=2)

    assert decision.admission is Admission.REJECT


@pytest.mark.parametrize(
    ("stats", "rules", "expected"),
    [
        (WindowStats(5, 5, 0), TripRules(failure_threshold=5), True),
        (WindowStats(4, 4, 0), TripRules(failure_threshold=5), False),
        (WindowStats(9, 9, 0), TripRules(None, 0.5, None, minimum_calls=10), False),
        (WindowStats(10, 5, 0), TripRules(None, 0.5, None, minimum_calls=10), True),
        (WindowStats(10, 4, 0), TripRules(None, 0.5, None, minimum_calls=10), False),
        (WindowStats(10, 0, 8), TripRules(None, None, 0.8, minimum_calls=10), True),
        (WindowStats(10, 0, 7), TripRules(None, None, 0.8, minimum_calls=10), False),
        (WindowStats(0, 0, 0), TripRules(None, 0.5, None, minimum_calls=1), False),
    ],
)
def test_should_trip_applies_counts_rates_and_minimum_calls(
    stats: WindowStats, rules: TripRules, expected: bool
) -> None:
    result = should_trip(stats, rules)

    assert result is expected


# ----------------------------------------------------------------------------- consecutive mode


async def test_breaker_opens_after_failure_threshold_consecutive_failures() -> None:
    b = breaker(failure_threshold=3)

    await fail(b, 3)

    assert b.state is OPEN
    assert b.retry_after == 30.0


async def test_a_success_resets_the_consecutive_failure_count() -> None:
    b = breaker(failure_threshold=3)

    await fail(b, 2)
    await b.call(ok)
    await fail(b, 2)

    assert b.state is CLOSED
    assert b.failure_count == 2


async def test_open_breaker_rejects_without_calling_and_names_itself() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=30, clock=clock)
    await fail(b, 1)
    clock.advance(10)
    calls = 0

    async def counted() -> int:
        nonlocal calls
        calls += 1
        return 1

    with pytest.raises(CircuitOpenError) as caught:
        await b.call(counted)

    assert calls == 0
    assert caught.value.breaker == "svc"
    assert caught.value.retry_after == pytest.approx(20.0)
    assert str(caught.value) == "circuit 'svc' is open; next probe in 20.0s"


async def test_breaker_half_opens_after_recovery_timeout_and_a_probe_success_closes_it() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=30, clock=clock)
    await fail(b, 1)

    clock.advance(30)
    half = b.state
    result = await b.call(ok)

    assert half is HALF_OPEN
    assert result == 1
    assert b.state is CLOSED


async def test_a_failed_probe_opens_the_breaker_again_for_a_full_period() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=30, clock=clock)
    await fail(b, 1)
    clock.advance(31)

    await fail(b, 1)

    assert b.state is OPEN
    assert b.retry_after == 30.0


async def test_half_open_lets_exactly_one_of_20_concurrent_callers_probe() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=5, clock=clock)
    await fail(b, 1)
    clock.advance(5)
    release = asyncio.Event()
    ran = 0

    async def probe() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(b.call(probe)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert ran == 1
    assert results.count("ok") == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 19
    assert b.state is CLOSED


async def test_half_open_max_calls_probes_must_all_succeed_to_close() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=5, half_open_max_calls=3, clock=clock)
    await fail(b, 1)
    clock.advance(5)
    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(b.call(probe)) for _ in range(10)]
    await asyncio.sleep(0)
    still_half_open = b.state
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert still_half_open is HALF_OPEN
    assert results.count("ok") == 3
    assert b.state is CLOSED


async def test_a_cancelled_probe_gives_its_slot_back_and_counts_as_nothing() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=5, clock=clock)
    await fail(b, 1)
    clock.advance(5)

    task = asyncio.create_task(b.call(asyncio.sleep, 3600))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await b.call(ok)

    assert result == 1
    assert b.state is CLOSED


async def test_a_cancelled_call_is_neither_a_success_nor_a_failure() -> None:
    b = breaker(failure_threshold=3)
    await fail(b, 2)

    task = asyncio.create_task(b.call(asyncio.sleep, 3600))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert b.failure_count == 2


# ----------------------------------------------------------------------------- what counts


async def test_only_expected_exceptions_are_failures_and_others_count_as_success() -> None:
    b = breaker(failure_threshold=2, expected_exception=BoomError)

    await fail(b, 1)
    with pytest.raises(OtherError):
        await b.call(_raise, OtherError())

    assert b.failure_count == 0
    assert b.state is CLOSED


async def test_expected_exception_accepts_a_tuple_and_a_predicate() -> None:
    by_tuple = breaker(failure_threshold=1, expected_exception=(OtherError, BoomError))
    by_predicate = breaker(
        failure_threshold=1, expected_exception=lambda kind, exc: str(exc) == "down"
    )

    await fail(by_tuple, 1)
    await fail(by_predicate, 1)

    assert by_tuple.state is OPEN
    assert by_predicate.state is OPEN


async def test_excluded_exceptions_are_neither_failures_nor_successes() -> None:
    b = breaker(failure_threshold=3, exclude=KeyError)
    await fail(b, 2)

    with pytest.raises(KeyError):
        await b.call(_raise, KeyError("x"))

    assert b.failure_count == 2


async def test_failure_predicate_counts_5xx_results_but_not_4xx_and_still_returns_them() -> None:
    b = breaker(failure_threshold=2, failure_predicate=lambda r: r.status >= 500)

    first = await b.call(_respond, 503)
    await b.call(_respond, 404)
    await b.call(_respond, 500)
    await b.call(_respond, 502)

    assert first.status == 503
    assert b.state is OPEN


async def test_a_circuit_open_error_from_a_nested_breaker_is_not_a_failure() -> None:
    inner = breaker(failure_threshold=1)
    outer = breaker(failure_threshold=1)
    await fail(inner, 1)

    with pytest.raises(CircuitOpenError):
        await outer.call(inner.call, ok)

    assert outer.state is CLOSED


# ----------------------------------------------------------------------------- sliding windows


async def test_count_window_opens_on_failure_rate_once_minimum_calls_are_seen() -> None:
    b = breaker(window=CountWindow(10), failure_rate_threshold=0.5, minimum_calls=10)

    for _ in range(4):
        await b.call(ok)
    await fail(b, 5)
    before_minimum = b.state
    await fail(b, 1)

    assert before_minimum is CLOSED
    assert b.state is OPEN


async def test_count_window_forgets_the_oldest_calls() -> None:
    b = breaker(window=CountWindow(4), failure_threshold=3)

    await fail(b, 2)
    for _ in range(3):
        await b.call(ok)
    await fail(b, 2)

    assert b.state is CLOSED
    assert b.failure_count == 2


async def test_time_window_opens_after_5_failures_in_60_seconds() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=5, window=TimeWindow(60), clock=clock)

    await fail(b, 4)
    clock.advance(61)
    await fail(b, 4)
    spread_out = b.state
    clock.advance(30)
    await fail(b, 1)

    assert spread_out is CLOSED
    assert b.state is OPEN


async def test_time_window_keeps_constant_memory_however_many_calls() -> None:
    clock = FakeClock()
    b = breaker(window=TimeWindow(10, buckets=5), failure_rate_threshold=0.9, clock=clock)

    for i in range(5000):
        await b.call(ok)
        if i % 7 == 0:
            clock.advance(0.3)
    ring = b._ring

    assert ring is not None
    assert len(ring._calls) == 5  # type: ignore[union-attr]
    assert b.stats.calls <= 5000


async def test_slow_calls_open_the_breaker_when_the_slow_rate_passes_the_threshold() -> None:
    clock = FakeClock()
    b = breaker(
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
        window=CountWindow(4),
        minimum_calls=4,
        clock=clock,
    )

    async def slow() -> int:
        await clock.sleep(3.0)
        return 1

    await b.call(ok)
    await b.call(ok)
    await b.call(slow)
    mostly_fast = b.state
    await b.call(slow)

    assert mostly_fast is CLOSED
    assert b.state is OPEN


# ----------------------------------------------------------------------------- manual, events


async def test_open_close_and_reset_move_the_breaker_by_hand() -> None:
    clock = FakeClock()
    b = breaker(clock=clock)

    await b.open(duration=120)
    opened = (b.state, b.retry_after)
    await b.close()
    closed = b.state
    await fail(b, 2)
    await b.reset()

    assert opened == (OPEN, 120.0)
    assert closed is CLOSED
    assert b.failure_count == 0


async def test_state_changes_and_rejections_are_reported_as_events() -> None:
    clock = FakeClock()
    hub, seen = recorder()
    b = breaker(failure_threshold=2, clock=clock, events=hub)

    await fail(b, 2)
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    clock.advance(30)
    await b.call(ok)

    kinds = [e.kind for e in seen]
    assert kinds == ["breaker_opened", "call_rejected", "breaker_half_opened", "breaker_closed"]
    opened = seen[0].attributes
    assert opened["from_state"] == "closed"
    assert opened["failure_rate"] == 1.0
    assert opened["failures"] == 2
    assert seen[1].attributes["retry_after"] == 30.0
    assert seen[3].attributes["from_state"] == "half_open"
    assert {e.policy for e in seen} == {"circuit_breaker"}


async def test_every_rejection_raises_a_fresh_unchained_error_with_a_short_traceback() -> None:
    b = breaker(failure_threshold=1)
    await fail(b, 1)
    guarded = b(ok)
    errors: list[CircuitOpenError] = []

    for _ in range(3):
        try:
            await guarded()
        except CircuitOpenError as exc:
            errors.append(exc)

    assert len({id(e) for e in errors}) == 3
    for error in errors:
        assert error.__context__ is None
        assert error.__cause__ is None
        depth, tb = 0, error.__traceback__
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        assert depth <= 3


async def test_memory_stays_flat_over_100000_rejections() -> None:
    b = breaker(failure_threshold=1, recovery_timeout=3600)
    await fail(b, 1)
    guarded = b(ok)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(1000):
            with contextlib.suppress(CircuitOpenError):
                await guarded()
        before = tracemalloc.get_traced_memory()[0]

        for _ in range(100_000):
            with contextlib.suppress(CircuitOpenError):
                await guarded()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    assert after - before < 16_384


def test_a_fast_built_error_reads_like_one_built_by_hand() -> None:
    from seawall.resilience._breaker import _open_error

    fast = _open_error("payments", 12.5)
    slow = CircuitOpenError(breaker="payments", retry_after=12.5)

    assert type(fast) is CircuitOpenError
    assert (str(fast), repr(fast)) == (str(slow), repr(slow))
    assert (fast.breaker, fast.retry_after) == ("payments", 12.5)


# ----------------------------------------------------------------------------- decorators


async def test_circuit_decorates_an_async_function_with_the_circuitbreaker_options() -> None:
    @circuit(failure_threshold=2, recovery_timeout=30, expected_exception=BoomError)
    async def gateway(amount: int) -> int:
        raise BoomError(str(amount))

    for _ in range(2):
        with pytest.raises(BoomError):
            await gateway(5)
    with pytest.raises(CircuitOpenError) as caught:
        await gateway(5)

    assert caught.value.breaker.endswith("gateway")
    assert gateway.__name__ == "gateway"


def test_bare_circuit_decorates_a_sync_function_with_the_same_logic() -> None:
    calls = 0

    @circuit
    def flaky() -> int:
        nonlocal calls
        calls += 1
        raise BoomError

    for _ in range(5):
        with pytest.raises(BoomError):
            flaky()
    with pytest.raises(CircuitOpenError):
        flaky()

    assert calls == 5


def test_sync_half_open_probe_success_closes_the_breaker() -> None:
    clock = FakeClock()
    b = breaker(failure_threshold=1, recovery_timeout=10, clock=clock)
    results: Iterator[BaseException | int] = iter([BoomError(), 7])

    @b
    def service() -> int:
        value = next(results)
        if isinstance(value, BaseException):
            raise value
        return value

    with pytest.raises(BoomError):
        service()
    clock.advance(10)
    result = service()

    assert result == 7
    assert b.state is CLOSED


THREADS, CALLS_PER_THREAD = 8, 2_000
TOTAL_CALLS = THREADS * CALLS_PER_THREAD


@contextlib.contextmanager
def frequent_thread_switches() -> Iterator[None]:
    # Ask for a thread switch every microsecond instead of every 5 ms, so that the
    # threads interleave as often as the interpreter allows (a GIL build switches
    # only at calls and loops; a free-threaded one runs them truly at once).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def call_from_threads(service: Callable[[int], int]) -> tuple[int, int]:
    """Call *service* CALLS_PER_THREAD times from each of THREADS threads at once.

    Returns:
        How many calls returned and how many raised BoomError.
    """
    start = threading.Barrier(THREADS)

    def worker(_: int) -> tuple[int, int]:
        returned = failed = 0
        start.wait()
        for i in range(CALLS_PER_THREAD):
            try:
                service(i)
            except BoomError:
                failed += 1
            else:
                returned += 1
        return returned, failed

    with frequent_thread_switches(), ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(worker, range(THREADS)))
    return sum(r for r, _ in outcomes), sum(f for _, f in outcomes)


def test_a_sync_function_called_from_8_threads_keeps_its_window_counts_consistent() -> None:
    b = breaker(window=CountWindow(100), failure_threshold=101)
    failing = True

    @b
    def service(i: int) -> int:
        if failing and i % 3 == 0:
            raise BoomError
        return i

    returned, failed = call_from_threads(service)
    failing = False
    for i in range(100):  # one window of successes: every failure must slide out
        service(i)

    assert (returned + failed, failed) == (
        TOTAL_CALLS,
        len(range(0, CALLS_PER_THREAD, 3)) * THREADS,
    )
    assert b.stats == WindowStats(calls=100, failures=0, slow=0)
    assert b.state is CLOSED


def test_a_sync_function_failing_in_8_threads_opens_exactly_at_the_threshold() -> None:
    b = breaker(failure_threshold=TOTAL_CALLS)

    @b
    def service(i: int) -> int:
        raise BoomError

    returned, failed = call_from_threads(service)

    assert (returned, failed) == (0, TOTAL_CALLS)
    assert b.state is OPEN


async def test_fallback_function_answers_with_the_call_arguments_instead_of_raising() -> None:
    async def cached(customer: str) -> str:
        return f"cached {customer}"

    b = breaker(failure_threshold=1, fallback_function=cached)
    await fail(b, 1)

    @b
    async def fetch(customer: str) -> str:
        return f"fresh {customer}"

    result = await fetch("c1")

    assert result == "cached c1"


def test_sync_fallback_function_is_called_when_open() -> None:
    b = breaker(failure_threshold=1, fallback_function=lambda x: -x)

    @b
    def double(x: int) -> int:
        raise BoomError

    with pytest.raises(BoomError):
        double(2)
    result = double(2)

    assert result == -2


async def test_breaker_runs_as_a_pipeline_stage() -> None:
    b = breaker(failure_threshold=1)
    pipeline = Pipeline([b])

    with pytest.raises(BoomError):
        await pipeline.call(boom)
    with pytest.raises(CircuitOpenError):
        await pipeline.run(ok, CallContext(operation="ok"))

    assert b.state is OPEN


async def test_window_mode_runs_through_the_decorator_and_the_stage() -> None:
    b = breaker(window=CountWindow(4), failure_rate_threshold=0.5, minimum_calls=2)
    guarded = b(boom)

    with pytest.raises(BoomError):
        await guarded()
    with pytest.raises(BoomError):
        await b.run(boom, CallContext())

    assert b.state is OPEN


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"half_open_max_calls": 0},
        {"failure_rate_threshold": 1.5},
        {"slow_call_rate_threshold": 0.5},
        {"window": CountWindow(5), "failure_rate_threshold": 0.5, "minimum_calls": 6},
        {"recovery_timeout": -1},
    ],
)
def test_out_of_range_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        CircuitBreaker(**options)


def test_expected_exception_must_be_exception_types_or_a_predicate() -> None:
    with pytest.raises(TypeError, match="string"):
        CircuitBreaker(expected_exception="BoomError")  # type: ignore[arg-type]


async def _raise(exc: Exception) -> int:
    raise exc


async def _respond(status: int) -> Response:
    return Response(status)


@pytest.mark.parametrize(
    "refusal",
    [
        RateLimitExceeded(limiter="crm", retry_after=1.0),
        BulkheadFull(bulkhead="crm", max_concurrent=1, max_queue=0),
    ],
)
async def test_refusals_of_inner_policies_do_not_count_as_provider_failures(
    refusal: Exception,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, name="crm")

    async def refused() -> None:
        raise refusal

    with pytest.raises(type(refusal)):
        await breaker.call(refused)

    assert breaker.state == BreakerState.CLOSED
