"""A quiet NatsBus consumer against nats-py's own ``fetch`` loop: publish -> handler, in one run.

Usage: .venv/bin/python bench/nats_consumer.py [--messages 30] [--nats nats://127.0.0.1:4222]

Messages are published one at a time, each after the previous one was handled,
with pauses between them (50 to 950 ms) so that the consumer is idle when each
arrives. Both publish through `NatsBus.publish`; two consumers of 100 slots
take turns, each on a stream of its own:

- baseline: `NatsBus`'s consumer loop before stop 20 of issue #5, on the bus's
  own connection: take every free slot, ``PullSubscription.fetch(slots,
  timeout=1)``, a task per message;
- seawall: `NatsBus.subscribe` (its own pull requests, `_PullConsumer`).

Prints the publish -> handler latency (p50, max, how many over 10 ms) of each.
Whether the baseline holds messages back depends on where the publishes fall in
its one-second fetch cycles: it did in three of five runs (2026-12-07).
Needs NATS with JetStream on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
import nats.aio.msg
import nats.js.errors
import uvloop
from nats.js import api

from seawall.messaging import Delivery, Message, NatsBus

SLOTS = 100


class Arrivals:
    """When each message (by its key) reached a handler."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def expect(self, key: str) -> asyncio.Future[float]:
        future = self._waiting[key] = asyncio.get_running_loop().create_future()
        return future

    def note(self, key: str) -> None:
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())


async def fetch_loop(sub: nats.js.JetStreamContext.PullSubscription, arrivals: Arrivals) -> None:
    """The baseline: every free slot, one ``fetch``, a handler task per message."""
    slots = asyncio.Semaphore(SLOTS)
    running: set[asyncio.Task[None]] = set()

    async def handle(msg: nats.aio.msg.Msg) -> None:
        try:
            arrivals.note(msg.data.decode())
            await msg.ack()
        finally:
            slots.release()

    while True:
        await slots.acquire()
        wanted = 1
        while wanted < SLOTS and not slots.locked():
            await slots.acquire()
            wanted += 1
        try:
            messages = await sub.fetch(wanted, timeout=1.0)
        except TimeoutError:
            messages = []
        for _ in range(wanted - len(messages)):
            slots.release()
        for msg in messages:
            task = asyncio.create_task(handle(msg))
            running.add(task)
            task.add_done_callback(running.discard)


async def measure(
    publish: Callable[[str], Awaitable[object]], arrivals: Arrivals, count: int
) -> list[float]:
    latencies = []
    for index in range(count):
        key = str(uuid.uuid4())
        arrived = arrivals.expect(key)
        start = time.perf_counter()
        await publish(key)
        latencies.append(await arrived - start)
        await asyncio.sleep(0.05 + (index * 0.137) % 0.9)
    return latencies


async def delete_streams(url: str, *names: str) -> None:
    nc = await nats.connect(url, name="seawall-bench-admin")
    try:
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def baseline(url: str, count: int) -> list[float]:
    tag = f"SWBENCH_FETCH_{uuid.uuid4().hex[:6].upper()}"
    prefix = tag.lower()
    bus = NatsBus(url, stream=tag, subject_prefix=prefix, name="seawall-bench-fetch")
    await bus.start()  # publishes as seawall does; consumed below by the old loop
    config = api.ConsumerConfig(
        durable_name="bench",
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=1000,
        filter_subject=f"{prefix}.>",
    )
    arrivals = Arrivals()
    sub = await bus.jetstream.pull_subscribe(
        f"{prefix}.>", durable="bench", stream=tag, config=config
    )
    task = asyncio.create_task(fetch_loop(sub, arrivals))

    async def publish(key: str) -> None:
        await bus.publish(Message(id=key, subject=f"{prefix}.x.y", body=key.encode()))

    try:
        await asyncio.sleep(1.5)  # the loop is waiting in a fetch
        return await measure(publish, arrivals, count)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()
        await delete_streams(url, bus.stream, bus.dlq_stream)


async def seawall(url: str, count: int) -> list[float]:
    tag = f"SWBENCH_BUS_{uuid.uuid4().hex[:6].upper()}"
    prefix = tag.lower()
    bus = NatsBus(url, stream=tag, subject_prefix=prefix, name="seawall-bench-consumer")
    await bus.start()
    arrivals = Arrivals()

    async def handler(delivery: Delivery) -> None:
        arrivals.note(delivery.body.decode())
        await delivery.ack()

    async def publish(key: str) -> None:
        await bus.publish(Message(id=key, subject=f"{prefix}.x.y", body=key.encode()))

    try:
        await bus.subscribe("bench", [f"{prefix}.>"], handler, concurrency=SLOTS)
        await asyncio.sleep(1.5)
        return await measure(publish, arrivals, count)
    finally:
        await bus.close()
        await delete_streams(url, bus.stream, bus.dlq_stream)


def show(label: str, latencies: list[float]) -> float:
    ms = sorted(value * 1e3 for value in latencies)
    slow = sum(value > 10 for value in ms)
    print(
        f"  {label:<44} p50 {statistics.median(ms):6.1f} ms  max {ms[-1]:6.1f} ms  "
        f"over 10 ms: {slow} of {len(ms)}"
    )
    return ms[-1]


async def main(options: argparse.Namespace) -> None:
    print(f"{options.messages} messages, one at a time, to an idle consumer with {SLOTS} slots")
    base = show(
        "fetch(free slots, timeout=1) loop (baseline)",
        await baseline(options.nats, options.messages),
    )
    ours = show(
        "NatsBus.subscribe (its own pull requests)", await seawall(options.nats, options.messages)
    )
    print(f"  worst case, seawall / baseline: {ours:.1f} / {base:.1f} ms = {ours / base:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    uvloop.run(main(parser.parse_args()))
