"""`seawall.resilience._deadlines.within`: asyncio.timeout's semantics, shared timers.

These use real, tiny deadlines (10 ms) against work that would never finish:
bounded waits, never timing asserts.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from seawall.resilience import _deadlines
from seawall.resilience._deadlines import DeadlineExpired, within

TINY = 0.01


async def forever() -> None:
    await asyncio.Event().wait()


async def quick() -> str:
    return "done"


async def test_work_that_finishes_in_time_returns_its_value() -> None:
    result = await within(5, quick)

    assert result == "done"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_work_past_its_deadline_is_cancelled_and_reported() -> None:
    cleaned_up = False

    async def slow() -> None:
        nonlocal cleaned_up
        try:
            await forever()
        finally:
            cleaned_up = True

    with pytest.raises(DeadlineExpired) as caught:
        await within(TINY, slow)

    assert cleaned_up
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_work_that_swallows_the_cancellation_keeps_its_result_and_no_cancel_leaks() -> None:
    async def stubborn() -> str:
        try:
            await forever()
        except asyncio.CancelledError:
            return "kept"
        return "unreachable"

    result = await within(TINY, stubborn)
    await asyncio.sleep(0)  # a leaked cancel request would land here

    assert result == "kept"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_timeout_error_of_the_work_passes_through() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("the provider said so")

    with pytest.raises(TimeoutError, match="provider") as caught:
        await within(5, own_timeout)

    assert not isinstance(caught.value, DeadlineExpired)


async def test_an_outer_cancellation_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await forever()

    task = asyncio.create_task(within(5, waits))
    await started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_cancellation_racing_the_deadline_wins() -> None:
    async def body() -> None:
        await within(TINY, forever)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    await asyncio.sleep(TINY * 3)  # the deadline has fired by now, or fires with the cancel

    task.cancel()

    with pytest.raises((asyncio.CancelledError, DeadlineExpired)):
        await task
    assert task.cancelled() or isinstance(task.exception(), DeadlineExpired)


async def test_nested_deadlines_report_the_one_that_expired() -> None:
    async def inner() -> str:
        try:
            await within(TINY, forever)
        except DeadlineExpired:
            return "inner expired"
        return "unreachable"

    result = await within(5, inner)

    assert result == "inner expired"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_many_concurrent_deadlines_share_a_few_timers() -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    async def waits() -> str:
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(within(30, waits)) for _ in range(1000)]
    await asyncio.sleep(0)
    buckets = len(_deadlines._wheels[loop].buckets)
    gate.set()
    results = await asyncio.gather(*tasks)

    assert results == ["ok"] * 1000
    # One timer per 5 ms tick, not one per call: the 1000 deadlines fall in as many
    # ticks as creating the tasks took (a few; more on a loaded machine), never 1000.
    assert buckets <= 100


def test_a_finished_event_loop_is_not_kept_alive() -> None:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(within(5, quick))
    loop.close()
    alive = weakref.ref(loop)

    del loop
    gc.collect()

    assert alive() is None
