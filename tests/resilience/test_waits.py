"""The tenacity-compatible strategies and the backoff arithmetic, tested as pure functions."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.resilience._waits import (
    Outcome,
    RetryCallState,
    compute_delay,
    retry_always,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_if_not_result,
    retry_if_result,
    retry_never,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_decorrelated_jitter,
    wait_equal_jitter,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)


def failed(attempt: int, exception: BaseException, *, elapsed: float = 0.0) -> RetryCallState:
    return RetryCallState(
        attempt_number=attempt,
        start_time=100.0,
        outcome=Outcome(attempt, exception=exception),
        outcome_timestamp=100.0 + elapsed,
    )


def returned(attempt: int, value: object) -> RetryCallState:
    return RetryCallState(
        attempt_number=attempt,
        start_time=100.0,
        outcome=Outcome(attempt, value=value),
        outcome_timestamp=100.0,
    )


def at(attempt: int, *, elapsed: float = 0.0) -> RetryCallState:
    return failed(attempt, ValueError("boom"), elapsed=elapsed)


# --- waits --------------------------------------------------------------------------------------


def test_wait_exponential_follows_tenacity_formula_within_min_and_max() -> None:
    wait = wait_exponential(multiplier=1, min=1, max=60)

    delays = [wait(at(n)) for n in range(1, 9)]

    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]


def test_wait_exponential_raises_small_waits_to_min() -> None:
    wait = wait_exponential(multiplier=0.5, min=3, max=10)

    delays = [wait(at(n)) for n in range(1, 5)]

    assert delays == [3, 3, 3, 4]


def test_wait_exponential_returns_max_when_the_power_overflows() -> None:
    wait = wait_exponential(multiplier=1, max=42)

    delay = wait(at(5000))

    assert delay == 42


def test_wait_fixed_accepts_a_timedelta() -> None:
    wait = wait_fixed(timedelta(milliseconds=250))

    delay = wait(at(3))

    assert delay == 0.25


def test_wait_none_waits_nothing() -> None:
    wait = wait_none()

    delay = wait(at(7))

    assert delay == 0


def test_wait_random_stays_in_range_and_repeats_with_the_same_seed() -> None:
    first = wait_random(1, 3, rng=random.Random(7))
    second = wait_random(1, 3, rng=random.Random(7))

    delays = [first(at(n)) for n in range(1, 50)]

    assert all(1 <= d <= 3 for d in delays)
    assert delays == [second(at(n)) for n in range(1, 50)]


def test_wait_random_exponential_is_full_jitter_under_the_exponential() -> None:
    wait = wait_random_exponential(multiplier=1, max=60, rng=random.Random(1))

    delays = [(n, wait(at(n))) for n in range(1, 10) for _ in range(20)]

    assert all(0 <= d <= min(60, 2 ** (n - 1)) for n, d in delays)
    assert wait_full_jitter is wait_random_exponential


def test_wait_exponential_jitter_adds_at_most_jitter_and_stops_at_max() -> None:
    wait = wait_exponential_jitter(initial=1, max=10, jitter=0.5, rng=random.Random(2))

    delays = [wait(at(n)) for n in range(1, 7)]

    assert [1 <= delays[0] <= 1.5, 2 <= delays[1] <= 2.5, 4 <= delays[2] <= 4.5] == [True] * 3
    assert delays[4:] == [10, 10]


def test_wait_incrementing_grows_linearly_up_to_max() -> None:
    wait = wait_incrementing(start=1, increment=2, max=6)

    delays = [wait(at(n)) for n in range(1, 6)]

    assert delays == [1, 3, 5, 6, 6]


def test_wait_chain_uses_one_strategy_per_attempt_then_the_last() -> None:
    wait = wait_chain(wait_fixed(1), wait_fixed(2), wait_fixed(5))

    delays = [wait(at(n)) for n in range(1, 6)]

    assert delays == [1, 2, 5, 5, 5]


def test_waits_add_up_with_plus_and_with_sum() -> None:
    plus = wait_fixed(1) + wait_fixed(2)
    summed: Any = sum([wait_fixed(1), wait_fixed(2), wait_fixed(3)])

    delays = (plus(at(1)), summed(at(1)))

    assert delays == (3, 6)


def test_waits_accept_plain_callables_as_tenacity_does() -> None:
    wait = wait_fixed(1) + (lambda state: state.attempt_number * 10.0)

    delay = wait(at(2))

    assert delay == 21


def test_wait_equal_jitter_keeps_at_least_half_the_exponential() -> None:
    wait = wait_equal_jitter(base=1, max=100, rng=random.Random(3))

    delays = [(n, wait(at(n))) for n in range(1, 8) for _ in range(10)]

    assert all(2 ** (n - 1) / 2 <= d <= 2 ** (n - 1) for n, d in delays)


def test_wait_decorrelated_jitter_grows_from_the_last_sleep() -> None:
    wait = wait_decorrelated_jitter(base=1, max=100, rng=random.Random(4))
    state = at(3)
    state.last_sleep = 10.0

    delays = [wait(state) for _ in range(50)]

    assert all(1 <= d <= 30 for d in delays)
    assert max(delays) > 3


# --- compute_delay --------------------------------------------------------------------------------


def test_compute_delay_without_jitter_doubles_from_base_up_to_cap() -> None:
    delays = [compute_delay(n, jitter="none", base=0.5, cap=5) for n in range(1, 7)]

    assert delays == [0.5, 1, 2, 4, 5, 5]


def test_compute_delay_is_deterministic_for_a_seeded_rng() -> None:
    first = [compute_delay(n, base=1, cap=30, rng=random.Random(9)) for n in range(1, 6)]

    second = [compute_delay(n, base=1, cap=30, rng=random.Random(9)) for n in range(1, 6)]

    assert first == second


def test_compute_delay_decorrelated_starts_from_base_and_uses_previous() -> None:
    rng = random.Random(5)

    first = compute_delay(1, jitter="decorrelated", base=2, cap=100, rng=rng)
    later = compute_delay(4, jitter="decorrelated", base=2, cap=100, previous=20, rng=rng)

    assert 2 <= first <= 6
    assert 2 <= later <= 60


def test_compute_delay_raises_the_delay_to_floor() -> None:
    delay = compute_delay(1, jitter="full", base=0.001, cap=10, floor=0.5, rng=random.Random(0))

    assert delay == 0.5


def test_compute_delay_survives_huge_attempt_numbers() -> None:
    delay = compute_delay(100_000, jitter="none", base=1, cap=60)

    assert delay == 60


def test_compute_delay_refuses_attempt_zero_and_unknown_jitter() -> None:
    with pytest.raises(ValueError, match="from 1"):
        compute_delay(0, base=1, cap=2)

    with pytest.raises(ValueError, match="jitter"):
        compute_delay(1, jitter="wild", base=1, cap=2)  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    base=st.floats(min_value=0.001, max_value=10),
    extra=st.floats(min_value=0, max_value=100),
    previous=st.floats(min_value=0, max_value=200),
    jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_compute_delay_always_lies_between_zero_and_cap(
    attempt: int, base: float, extra: float, previous: float, jitter: str, seed: int
) -> None:
    cap = base + extra

    delay = compute_delay(
        attempt,
        jitter=jitter,  # type: ignore[arg-type]
        base=base,
        cap=cap,
        previous=previous,
        rng=random.Random(seed),
    )

    assert 0 <= delay <= cap


# --- stops --------------------------------------------------------------------------------------


def test_stop_after_attempt_stops_at_the_last_allowed_attempt() -> None:
    stop = stop_after_attempt(3)

    decisions = [stop(at(n)) for n in range(1, 5)]

    assert decisions == [False, False, True, True]


def test_stop_after_delay_compares_time_since_the_first_attempt() -> None:
    stop = stop_after_delay(timedelta(seconds=30))

    decisions = [stop(at(2, elapsed=29.9)), stop(at(2, elapsed=30))]

    assert decisions == [False, True]


def test_stop_before_delay_counts_the_upcoming_sleep() -> None:
    stop = stop_before_delay(10)
    state = at(2, elapsed=8)
    state.upcoming_sleep = 2.5

    decision = stop(state)

    assert decision is True


def test_stops_combine_with_or_and_and() -> None:
    either = stop_after_attempt(5) | stop_after_delay(30)
    both = stop_after_attempt(5) & stop_after_delay(30)

    decisions = [either(at(2, elapsed=31)), both(at(2, elapsed=31)), both(at(5, elapsed=31))]

    assert decisions == [True, False, True]


def test_stop_never_never_stops() -> None:
    decision = stop_never(at(10**6, elapsed=10**9))

    assert decision is False


# --- retry predicates ---------------------------------------------------------------------------


def test_retry_if_exception_type_defaults_to_any_exception_and_ignores_results() -> None:
    predicate = retry_if_exception_type()

    decisions = [predicate(failed(1, KeyError("k"))), predicate(returned(1, None))]

    assert decisions == [True, False]
    assert predicate.checks_results is False


def test_retry_if_exception_type_accepts_a_tuple() -> None:
    predicate = retry_if_exception_type((KeyError, TimeoutError))

    decisions = [predicate(failed(1, e)) for e in (KeyError(), TimeoutError(), ValueError())]

    assert decisions == [True, True, False]


def test_retry_if_not_exception_type_retries_everything_else() -> None:
    predicate = retry_if_not_exception_type(ValueError)

    decisions = [predicate(failed(1, ValueError())), predicate(failed(1, KeyError()))]

    assert decisions == [False, True]


def test_retry_if_exception_applies_the_predicate_to_the_exception() -> None:
    predicate = retry_if_exception(lambda exc: "again" in str(exc))

    decisions = [predicate(failed(1, ValueError("again"))), predicate(failed(1, ValueError("no")))]

    assert decisions == [True, False]


def test_retry_if_result_and_its_negation_look_at_values_only() -> None:
    is_none = retry_if_result(lambda value: value is None)
    not_ok = retry_if_not_result(lambda value: value == "ok")

    decisions = [
        is_none(returned(1, None)),
        is_none(returned(1, 3)),
        is_none(failed(1, ValueError())),
        not_ok(returned(1, "ok")),
        not_ok(returned(1, "bad")),
    ]

    assert decisions == [True, False, False, False, True]


def test_predicates_combine_and_know_whether_they_read_results() -> None:
    either = retry_if_exception_type(KeyError) | retry_if_result(lambda value: value is None)
    both = retry_if_exception_type(KeyError) & retry_if_exception(lambda exc: True)

    decisions = [
        either(failed(1, KeyError())),
        either(returned(1, None)),
        both(failed(1, KeyError())),
    ]

    assert decisions == [True, True, True]
    assert (either.checks_results, both.checks_results) == (True, False)


def test_a_plain_callable_in_a_combination_counts_as_reading_results() -> None:
    combined = retry_if_exception_type(KeyError) | (lambda state: state.attempt_number < 2)

    decision = combined(returned(1, "value"))

    assert decision is True
    assert combined.checks_results is True


def test_retry_always_and_retry_never() -> None:
    decisions = [retry_always(returned(1, 1)), retry_never(failed(1, KeyError()))]

    assert decisions == [True, False]


def test_outcome_result_re_raises_the_attempts_exception() -> None:
    outcome = Outcome(2, exception=KeyError("k"))

    with pytest.raises(KeyError):
        outcome.result()

    assert outcome.failed
    assert isinstance(outcome.exception(), KeyError)


def test_state_reports_seconds_since_start_once_there_is_an_outcome() -> None:
    state = RetryCallState(start_time=10.0)

    before = state.seconds_since_start
    state.outcome_timestamp = 12.5

    assert (before, state.seconds_since_start) == (None, 2.5)
