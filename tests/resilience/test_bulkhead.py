"""`seawall.resilience.Bulkhead`: slots, the FIFO queue, its timeout, and no leaked slot."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from seawall.errors import BulkheadFull
from seawall.resilience import CallContext, EventHub, Pipeline, ResilienceEvent
from seawall.resilience._bulkhead import Bulkhead
from seawall.testing import FakeClock


class Work:
    """Calls that block on a gate and record how many run at once, and in which order."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.most_running = 0
        self.order: list[int] = []

    async def __call__(self, number: int) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.order.append(number)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return number


async def settle() -> None:
    """Let every ready task run up to its next real wait (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


async def test_twenty_calls_three_run_five_wait_twelve_are_refused() -> None:
    work = Work()
    bulkhead = Bulkhead(max_concurrent=3, max_queue=5, queue_timeout=30.0)
    tasks = [asyncio.create_task(bulkhead.call(work, number)) for number in range(20)]

    await settle()
    refused = [task for task in tasks if task.done()]
    during = (bulkhead.in_flight, bulkhead.queued, work.running)
    work.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert during == (3, 5, 3)
    assert len(refused) == 12
    assert all(isinstance(task.exception(), BulkheadFull) for task in refused)
    assert [r for r in results if not isinstance(r, BaseException)] == list(range(8))
    assert work.most_running == 3
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_queued_calls_run_in_arrival_order() -> None:
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=4, queue_timeout=30.0)
    tasks = [asyncio.create_task(bulkhead.call(work, number)) for number in range(5)]
    await settle()

    work.gate.set()
    await asyncio.gather(*tasks)

    assert work.order == [0, 1, 2, 3, 4]


async def test_a_newcomer_does_not_overtake_the_queue() -> None:
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2, queue_timeout=30.0)
    first = asyncio.create_task(bulkhead.call(work, 0))
    queued = asyncio.create_task(bulkhead.call(work, 1))
    await settle()

    work.gate.set()
    late = asyncio.create_task(bulkhead.call(work, 2))
    await asyncio.gather(first, queued, late)

    assert work.order == [0, 1, 2]


async def test_a_queued_call_gives_up_after_the_queue_timeout() -> None:
    hub, seen = recorder()
    clock = FakeClock()
    work = Work()
    bulkhead = Bulkhead(
        max_concurrent=1, max_queue=1, queue_timeout=timedelta(seconds=2), clock=clock, events=hub
    )
    holder = asyncio.create_task(bulkhead.call(work, 0))
    await settle()

    with pytest.raises(BulkheadFull) as refused:
        await bulkhead.call(work, 1)

    assert clock.sleeps == [2.0]
    assert (bulkhead.in_flight, bulkhead.queued) == (1, 0)
    assert refused.value.bulkhead == "default"
    assert [(e.kind, e.attributes["reason"]) for e in seen] == [
        ("bulkhead_rejected", "queue_timeout")
    ]
    work.gate.set()
    await holder
    assert bulkhead.in_flight == 0


async def test_the_call_deadline_shortens_the_queue_wait() -> None:
    clock = FakeClock()
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=1, queue_timeout=10.0, clock=clock)
    holder = asyncio.create_task(bulkhead.call(work, 0))
    await settle()
    context = CallContext(operation="late", deadline=clock.monotonic() + 0.5)

    with pytest.raises(BulkheadFull):
        await bulkhead.run(lambda: work(1), context)

    assert clock.sleeps == [0.5]
    work.gate.set()
    await holder


async def test_a_full_bulkhead_without_a_queue_refuses_at_once() -> None:
    hub, seen = recorder()
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, name="geo", events=hub)
    holder = asyncio.create_task(bulkhead.call(work, 0))
    await settle()

    with pytest.raises(BulkheadFull) as refused:
        await bulkhead.call(work, 1)

    assert (refused.value.max_concurrent, refused.value.max_queue) == (1, 0)
    assert "bulkhead 'geo' is full" in str(refused.value)
    assert seen[0].attributes == {"reason": "full", "in_flight": 1, "queued": 0}
    work.gate.set()
    await holder


async def test_a_call_cancelled_while_queued_leaves_no_slot_behind() -> None:
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2, queue_timeout=30.0)
    holder = asyncio.create_task(bulkhead.call(work, 0))
    cancelled = asyncio.create_task(bulkhead.call(work, 1))
    survivor = asyncio.create_task(bulkhead.call(work, 2))
    await settle()

    cancelled.cancel()
    await settle()
    queued_after_cancel = bulkhead.queued
    work.gate.set()
    await asyncio.gather(holder, survivor)

    assert cancelled.cancelled()
    assert queued_after_cancel == 1
    assert work.order == [0, 2]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_a_slot_handed_to_a_call_cancelled_before_it_runs_is_passed_on() -> None:
    work = Work()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2, queue_timeout=30.0)
    waiters: list[asyncio.Task[int]] = []

    async def holder() -> None:
        try:
            await bulkhead.run(lambda: work(0), CallContext())
        finally:
            # The release has just handed the slot to the first waiter, which has not run yet.
            waiters[0].cancel()

    holding = asyncio.create_task(holder())
    waiters += [asyncio.create_task(bulkhead.call(work, n)) for n in (1, 2)]
    await settle()

    work.gate.set()
    await holding
    results = await asyncio.gather(*waiters, return_exceptions=True)

    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] == 2
    assert work.order == [0, 2]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_a_slot_is_released_on_failure_and_on_cancellation() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    async def fail() -> None:
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError):
        await bulkhead.call(fail)
    work = Work()
    running = asyncio.create_task(bulkhead.call(work, 0))
    await settle()
    running.cancel()
    await settle()

    assert running.cancelled()
    assert bulkhead.in_flight == 0


async def test_decorated_function_runs_in_the_bulkhead() -> None:
    bulkhead = Bulkhead(max_concurrent=2)

    @bulkhead
    async def double(value: int, *, times: int = 2) -> int:
        return value * times

    result = await double(21)

    assert result == 42
    assert bulkhead.in_flight == 0


async def test_bulkhead_runs_as_a_pipeline_stage() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    async def answer() -> int:
        return 42

    result = await Pipeline([bulkhead]).call(answer)

    assert result == 42


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_concurrent": 0}, ValueError),
        ({"max_queue": -1}, ValueError),
        ({"queue_timeout": 0}, ValueError),
        ({"max_concurrent": 2.5}, TypeError),
    ],
)
def test_bulkhead_refuses_options_out_of_range(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Bulkhead(**options)  # type: ignore[arg-type]
