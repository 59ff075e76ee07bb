"""`Stopper` and `Signal`: how seawall's background loops sleep and wake."""

from __future__ import annotations

import asyncio
import threading
import time

from seawall.messaging import _wakeup
from seawall.messaging._stopping import Signal, Stopper


async def test_a_pause_sleeps_its_seconds_when_nothing_wakes_it() -> None:
    started = time.perf_counter()

    await Stopper().pause(0.05, wake=Signal())

    assert time.perf_counter() - started >= 0.045


async def test_a_pause_ends_when_a_stop_is_requested() -> None:
    stopper = Stopper()
    pausing = asyncio.create_task(stopper.pause(60))
    await asyncio.sleep(0)

    stopper.stop()

    await asyncio.wait_for(pausing, 1)
    assert stopper.stopping
    await asyncio.wait_for(stopper.pause(60), 1)  # stopped: no more sleeping


async def test_a_pause_ends_when_its_wake_signal_is_set_and_at_once_while_it_is() -> None:
    stopper, wake = Stopper(), Signal()
    pausing = asyncio.create_task(stopper.pause(60, wake=wake))
    await asyncio.sleep(0)

    wake.set()

    await asyncio.wait_for(pausing, 1)
    await asyncio.wait_for(stopper.pause(60, wake=wake), 1)
    wake.clear()
    assert not wake.is_set()
    assert not stopper.stopping


async def test_a_pause_makes_no_task_and_leaves_no_waiter_behind() -> None:
    # With asyncio.Event it took a task per event waited on, then cancelled them.
    stopper, wake = Stopper(), Signal()
    tasks_before = len(asyncio.all_tasks())
    pausing = asyncio.create_task(stopper.pause(60, wake=wake))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks_before + 1  # the pausing task alone

    wake.set()
    await pausing

    assert not wake._waiters
    assert not stopper._signal._waiters


async def test_a_cancelled_pause_leaves_no_waiter_behind() -> None:
    stopper, wake = Stopper(), Signal()
    pausing = asyncio.create_task(stopper.pause(60, wake=wake))
    await asyncio.sleep(0)

    pausing.cancel()
    await asyncio.gather(pausing, return_exceptions=True)

    assert pausing.cancelled()
    assert not wake._waiters
    wake.set()  # nobody left to wake: no error


async def test_a_signal_wakes_every_waiter() -> None:
    signal = Signal()
    waiting = [asyncio.create_task(signal.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)

    signal.set()

    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    await asyncio.wait_for(signal.wait(), 1)  # set: returns at once


async def test_an_outbox_commit_in_another_thread_wakes_a_signal_registered_here() -> None:
    wake = Signal()
    _wakeup.register(wake)
    try:
        pausing = asyncio.create_task(Stopper().pause(60, wake=wake))
        await asyncio.sleep(0)
        other = threading.Thread(target=_wakeup.notify)
        other.start()
        await asyncio.wait_for(pausing, 5)
        other.join()
    finally:
        _wakeup.unregister(wake)
    assert wake.is_set()
