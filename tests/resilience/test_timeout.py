"""`Timeout`: per-attempt and total limits that cancel the work cleanly.

A few tests need a real cancellation: they use a tiny real limit (0.01 s)
against an event that never fires. That is a bounded wait, not a timing assert.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta

import pytest

from seawall.errors import TimeoutExceeded
from seawall.resilience import CallContext, EventHub, Pipeline, ResilienceEvent
from seawall.resilience._context import STAGE_ATTEMPT_TIMEOUT, STAGE_TOTAL_TIMEOUT
from seawall.resilience._timeout import AttemptTimeout, Timeout, TotalTimeout
from seawall.testing import FakeClock

TINY = 0.01


async def forever(cleaned: list[str] | None = None) -> str:
    try:
        await asyncio.Event().wait()
    finally:
        if cleaned is not None:
            cleaned.append("finally ran")
    return "never"


async def quick(value: str = "done") -> str:
    return value


def test_timeout_needs_at_least_one_limit() -> None:
    with pytest.raises(ValueError, match="per_attempt, total"):
        Timeout(per_attempt=None, total=None)


@pytest.mark.parametrize("options", [{"per_attempt": 0}, {"per_attempt": -1}, {"total": 0}])
def test_timeout_refuses_non_positive_limits(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Timeout(**options)  # type: ignore[arg-type]


def test_timeout_accepts_timedeltas_and_defaults_to_ten_seconds_per_attempt() -> None:
    default = Timeout()
    both = Timeout(per_attempt=timedelta(seconds=2), total=timedelta(minutes=1))

    limits = [(default.per_attempt, default.total), (both.per_attempt, both.total)]

    assert limits == [(10.0, None), (2.0, 60.0)]


async def test_a_call_within_the_limit_returns_its_value() -> None:
    timeout = Timeout(per_attempt=5, total=10)

    result = await timeout.call(quick, "hello")

    assert result == "hello"


async def test_a_slow_attempt_is_cancelled_and_reported_as_timeout_exceeded() -> None:
    cleaned: list[str] = []
    timeout = Timeout(per_attempt=TINY, name="crm")

    with pytest.raises(TimeoutExceeded) as caught:
        await timeout.call(forever, cleaned)

    assert (caught.value.timeout, caught.value.seconds, caught.value.scope) == (
        "crm",
        TINY,
        "attempt",
    )
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert cleaned == ["finally ran"]


async def test_a_slow_call_under_a_total_limit_reports_the_total_scope() -> None:
    timeout = Timeout(per_attempt=None, total=TINY)

    with pytest.raises(TimeoutExceeded) as caught:
        await timeout.call(forever)

    assert caught.value.scope == "total"


async def test_the_total_limit_wins_when_it_is_shorter_than_the_attempt_limit() -> None:
    timeout = Timeout(per_attempt=30, total=TINY)

    with pytest.raises(TimeoutExceeded) as caught:
        await timeout.call(forever)

    assert caught.value.scope == "total"


async def test_a_timeout_error_raised_by_the_work_itself_is_not_renamed() -> None:
    async def raises_its_own() -> None:
        raise TimeoutError("upstream said so")

    timeout = Timeout(per_attempt=5, total=10)

    with pytest.raises(TimeoutError, match="upstream said so") as caught:
        await timeout.call(raises_its_own)

    assert not isinstance(caught.value, TimeoutExceeded)


async def test_an_outer_cancellation_propagates_as_cancelled_error() -> None:
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(Timeout(per_attempt=30, total=60).call(waits))
    await started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_total_part_publishes_the_deadline_and_restores_it_afterwards() -> None:
    clock = FakeClock(start=100.0)
    context = CallContext(operation="op")
    seen: list[float | None] = []

    async def thunk() -> str:
        seen.append(context.deadline)
        return "ok"

    await Timeout(per_attempt=None, total=7, clock=clock).run(thunk, context)

    assert seen == [107.0]
    assert context.deadline is None


async def test_the_total_part_keeps_an_earlier_outer_deadline() -> None:
    clock = FakeClock(start=100.0)
    context = CallContext(operation="op", deadline=103.0)
    seen: list[float | None] = []

    async def thunk() -> str:
        seen.append(context.deadline)
        return "ok"

    await Timeout(per_attempt=None, total=7, clock=clock).run(thunk, context)

    assert seen == [103.0]
    assert context.deadline == 103.0


def test_pipeline_stages_put_the_total_outside_and_the_attempt_inside() -> None:
    both = Timeout(per_attempt=1, total=5).pipeline_stages()
    attempt_only = Timeout(per_attempt=1).pipeline_stages()

    assert [type(stage) for stage in both] == [TotalTimeout, AttemptTimeout]
    assert [stage.stage for stage in both] == [STAGE_TOTAL_TIMEOUT, STAGE_ATTEMPT_TIMEOUT]
    assert [type(stage) for stage in attempt_only] == [AttemptTimeout]


def test_a_pipeline_splits_the_timeout_into_its_two_positions() -> None:
    pipeline = Pipeline([Timeout(per_attempt=1, total=5)])

    names = [type(stage).__name__ for stage in pipeline.stages]

    assert names == ["TotalTimeout", "AttemptTimeout"]


async def test_timeout_as_a_decorator_keeps_the_function_and_limits_it() -> None:
    @Timeout(per_attempt=TINY)
    async def slow(label: str) -> str:
        """Slow."""
        return await forever()

    with pytest.raises(TimeoutExceeded):
        await slow("x")

    assert slow.__name__ == "slow"
    assert list(inspect.signature(slow).parameters) == ["label"]


async def test_timing_out_is_reported_as_an_event() -> None:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)

    with pytest.raises(TimeoutExceeded):
        await Timeout(per_attempt=TINY, name="geo", events=hub).call(forever)

    assert [(e.kind, e.policy, e.name) for e in seen] == [("timed_out", "timeout", "geo")]
    assert seen[0].attributes["scope"] == "attempt"
    assert seen[0].attributes["operation"] == "forever"


def test_timeout_describes_itself() -> None:
    text = repr(Timeout(per_attempt=2, total=9, name="pay"))

    assert text == "Timeout('pay', per_attempt=2.0, total=9.0)"
