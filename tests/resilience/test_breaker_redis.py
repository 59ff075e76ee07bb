"""RedisBreakerStore: one breaker state for many processes, on the real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from redis.asyncio import Redis

from seawall.errors import CircuitOpenError
from seawall.resilience import (
    BreakerState,
    CircuitBreaker,
    EventHub,
    ProbeGrant,
    SharedState,
)
from seawall.resilience._breaker_rules import Trigger
from seawall.resilience._redis_breaker import RedisBreakerStore
from seawall.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class BoomError(Exception):
    pass


@pytest.fixture
def store(redis: Redis, redis_prefix: str) -> RedisBreakerStore:
    return RedisBreakerStore(redis, prefix=redis_prefix, refresh_interval=0.5)


class CountingStore:
    """A `BreakerStore` that forwards to Redis and counts the round trips."""

    def __init__(self, inner: RedisBreakerStore) -> None:
        self.inner = inner
        self.refresh_interval = inner.refresh_interval
        self.trips = 0

    async def load(self, name: str) -> SharedState:
        self.trips += 1
        return await self.inner.load(name)

    async def transition(self, name: str, trigger: Trigger, *, open_for: float) -> SharedState:
        self.trips += 1
        return await self.inner.transition(name, trigger, open_for=open_for)

    async def acquire_probe(self, name: str, *, max_calls: int) -> ProbeGrant:
        self.trips += 1
        return await self.inner.acquire_probe(name, max_calls=max_calls)

    async def probe_succeeded(self, name: str, lease: str, *, needed: int) -> SharedState:
        self.trips += 1
        return await self.inner.probe_succeeded(name, lease, needed=needed)

    async def probe_failed(self, name: str, lease: str, *, open_for: float) -> SharedState:
        self.trips += 1
        return await self.inner.probe_failed(name, lease, open_for=open_for)

    async def release_probe(self, name: str, lease: str) -> None:
        self.trips += 1
        await self.inner.release_probe(name, lease)

    async def clear(self, name: str) -> None:
        self.trips += 1
        await self.inner.clear(name)


def member(store: Any, **options: Any) -> CircuitBreaker:
    """One process's breaker: its own clock (for the cache), the shared store."""
    options.setdefault("failure_threshold", 2)
    options.setdefault("recovery_timeout", 60)
    options.setdefault("clock", FakeClock())
    options.setdefault("events", EventHub())
    return CircuitBreaker(name="payments", store=store, **options)


async def boom() -> int:
    raise BoomError


async def ok() -> int:
    return 1


async def test_when_one_process_opens_the_breaker_every_process_fails_fast(
    store: RedisBreakerStore,
) -> None:
    a, b = member(store), member(store)
    called = 0

    async def gateway() -> int:
        nonlocal called
        called += 1
        return 1

    for _ in range(2):
        with pytest.raises(BoomError):
            await a.call(boom)
    with pytest.raises(CircuitOpenError) as caught:
        await b.call(gateway)

    assert called == 0
    assert caught.value.breaker == "payments"
    assert 55 < caught.value.retry_after <= 60
    assert (await store.load("payments")).state is OPEN


async def test_rejecting_while_open_makes_no_redis_round_trip(store: RedisBreakerStore) -> None:
    counting = CountingStore(store)
    clock = FakeClock()
    b = member(counting, clock=clock)
    await member(store).open()
    with pytest.raises(CircuitOpenError):
        await b.call(ok)  # the first call primes the cache
    trips = counting.trips

    for _ in range(1000):
        with pytest.raises(CircuitOpenError):
            await b.call(ok)

    assert counting.trips == trips == 1


async def test_a_stale_cache_is_refreshed_in_the_background_not_on_the_call_path(
    store: RedisBreakerStore,
) -> None:
    clock = FakeClock()
    b = member(store, clock=clock)
    await b.call(ok)
    await member(store).open()

    clock.advance(1.0)
    first = await b.call(ok)  # served from the stale cache, refresh scheduled
    refresh = b._refreshing
    assert refresh is not None
    await refresh

    assert first == 1
    assert b.state is OPEN
    with pytest.raises(CircuitOpenError):
        await b.call(ok)


async def test_the_probe_lease_lets_one_probe_through_across_the_fleet(
    store: RedisBreakerStore,
) -> None:
    a, b = member(store), member(store)
    await a.open(duration=0)
    await b.refresh()
    release = asyncio.Event()
    ran = 0

    async def probe() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(m.call(probe)) for m in (a, b) for _ in range(10)]
    pending = set(tasks)
    async with asyncio.timeout(10):  # every caller but the probe is answered (Redis I/O)
        while len(pending) > 1:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert ran == 1
    assert results.count("ok") == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 19
    assert (await store.load("payments")).state is CLOSED
    assert await b.refresh() is CLOSED


async def test_a_failed_probe_reopens_the_breaker_for_the_fleet(store: RedisBreakerStore) -> None:
    a, b = member(store), member(store)
    await a.open(duration=0)

    with pytest.raises(BoomError):
        await b.call(boom)

    assert b.state is OPEN
    assert await a.refresh() is OPEN
    assert 55 < a.retry_after <= 60


def hanging_probe(outcome: BaseException | None) -> tuple[Any, asyncio.Event, asyncio.Event]:
    """A probe that waits to be released, then raises *outcome* (or returns "ok")."""
    started, release = asyncio.Event(), asyncio.Event()

    async def probe() -> str:
        started.set()
        await release.wait()
        if outcome is not None:
            raise outcome
        return "ok"

    return probe, started, release


async def test_a_late_probe_failure_does_not_reopen_a_newer_half_open_period(
    store: RedisBreakerStore,
) -> None:
    a, b = member(store), member(store)
    await a.open(duration=0)
    late, late_started, release_late = hanging_probe(BoomError())
    current, current_started, release_current = hanging_probe(None)
    old_probe = asyncio.create_task(a.call(late))
    await late_started.wait()
    await b.open(duration=0)  # the breaker moves on: a new open period, then a new probe
    new_probe = asyncio.create_task(b.call(current))
    await current_started.wait()
    before = await store.load("payments")

    release_late.set()
    with pytest.raises(BoomError):
        await old_probe
    after_late_failure = await store.load("payments")
    release_current.set()
    result = await new_probe

    assert before.state is HALF_OPEN
    assert after_late_failure == before
    assert result == "ok"
    assert (await store.load("payments")).state is CLOSED


async def test_a_late_probe_failure_leaves_a_breaker_closed_meanwhile_closed(
    store: RedisBreakerStore,
) -> None:
    a, b = member(store), member(store)
    await a.open(duration=0)
    late, started, release = hanging_probe(BoomError())
    probe = asyncio.create_task(a.call(late))
    await started.wait()
    await b.close()
    before = await store.load("payments")

    release.set()
    with pytest.raises(BoomError):
        await probe

    assert before.state is CLOSED
    assert await store.load("payments") == before
    assert a.state is CLOSED


async def test_the_store_ignores_a_failure_whose_lease_expired_after_the_breaker_moved_on(
    store: RedisBreakerStore, redis: Redis
) -> None:
    await store.transition("payments", Trigger.FORCED_OPEN, open_for=0)
    old = await store.acquire_probe("payments", max_calls=1)
    await redis.delete(*store._keys("payments", 1)[1:])  # the lease expires (PX) ...
    await store.transition("payments", Trigger.FORCED_OPEN, open_for=0)
    new = await store.acquire_probe("payments", max_calls=1)  # ... and a newer period probes
    assert old.lease is not None
    assert new.lease is not None

    after_failure = await store.probe_failed("payments", old.lease, open_for=60)
    after_success = await store.probe_succeeded("payments", old.lease, needed=1)

    assert new.shared.state is HALF_OPEN
    assert after_failure == after_success == new.shared
    assert await store.load("payments") == new.shared


async def test_a_probe_that_outlived_its_lease_still_fails_its_own_half_open_period(
    store: RedisBreakerStore, redis: Redis
) -> None:
    await store.transition("payments", Trigger.FORCED_OPEN, open_for=0)
    grant = await store.acquire_probe("payments", max_calls=1)
    await redis.delete(*store._keys("payments", 1)[1:])  # the lease expires (PX)
    assert grant.lease is not None

    shared = await store.probe_failed("payments", grant.lease, open_for=60)

    assert shared.state is OPEN
    assert shared.generation == grant.shared.generation + 1
    assert 55 < shared.remaining <= 60


async def test_a_cancelled_probe_releases_its_lease(store: RedisBreakerStore) -> None:
    a, b = member(store), member(store)
    await a.open(duration=0)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(a.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await b.call(ok)

    assert result == 1
    assert await b.refresh() is CLOSED


async def test_reset_and_close_apply_to_every_process(store: RedisBreakerStore) -> None:
    a, b = member(store), member(store)
    await a.open()

    await b.close()
    closed = await a.refresh()
    await a.open()
    await b.reset()

    assert closed is CLOSED
    assert await a.refresh() is CLOSED
    assert await store.load("payments") == SharedState(CLOSED, 0.0, 0)


async def test_state_changes_seen_through_the_store_are_reported(store: RedisBreakerStore) -> None:
    hub = EventHub()
    seen: list[str] = []
    hub.subscribe(lambda e: seen.append(e.kind))
    watcher = member(store, events=hub)
    await watcher.refresh()

    await member(store).open()
    await watcher.refresh()

    assert seen == ["breaker_opened"]


async def test_an_unreachable_store_degrades_to_a_local_breaker() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    b = member(RedisBreakerStore(client), failure_threshold=2)
    try:
        first = await b.call(ok)
        for _ in range(2):
            with pytest.raises(BoomError):
                await b.call(boom)
        with pytest.raises(CircuitOpenError):
            await b.call(ok)
    finally:
        await client.aclose()

    assert first == 1
    assert b.state is OPEN


def test_a_sync_function_cannot_use_a_shared_store(store: RedisBreakerStore) -> None:
    b = member(store)

    with pytest.raises(TypeError, match="async"):
        b(lambda: 1)


PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from redis.asyncio import Redis
    from seawall.errors import CircuitOpenError
    from seawall.resilience import CircuitBreaker
    from seawall.resilience._redis_breaker import RedisBreakerStore

    async def main(role, prefix):
        redis = Redis.from_url("redis://127.0.0.1:6379/0")
        store = RedisBreakerStore(redis, prefix=prefix)
        breaker = CircuitBreaker(name="gateway", failure_threshold=2, store=store)
        called = False

        @breaker
        async def gateway():
            nonlocal called
            called = True
            if role == "A":
                raise RuntimeError("provider down")
            return "answered"

        outcomes = []
        for _ in range(2 if role == "A" else 1):
            try:
                outcomes.append(await gateway())
            except CircuitOpenError as exc:
                outcomes.append(f"rejected:{exc.breaker}")
            except RuntimeError:
                outcomes.append("failed")
        await redis.aclose()
        print(role, "called" if called else "not-called", *outcomes, breaker.state.value)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_two_os_processes_share_one_breaker_through_redis(store: RedisBreakerStore) -> None:
    def run(role: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", PROCESS, role, store.prefix],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    a = run("A")
    b = run("B")

    assert a == "A called failed failed open"
    assert b == "B not-called rejected:gateway open"
