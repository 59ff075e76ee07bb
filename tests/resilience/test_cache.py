"""`seawall.resilience.Cache` on the memory backend: TTL, coalescing, stale on error, events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from seawall.resilience import CallContext, EventHub, ResilienceEvent
from seawall.resilience._cache import (
    TTL_PRESETS,
    Cache,
    MemoryCacheBackend,
    freshness,
)
from seawall.testing import FakeClock


class Upstream:
    """A fake provider: counts calls, returns or raises what the test sets."""

    def __init__(self) -> None:
        self.calls = 0
        self.result: Any = "v1"
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def fetch(self, city: str = "Oslo") -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


# --- pure decision ---------------------------------------------------------------


def test_freshness_is_fresh_then_stale_then_expired() -> None:
    ages = [0.0, 59.9, 60.0, 3599.9, 3600.0]

    verdicts = [freshness(age, ttl=60, stale_ttl=3600) for age in ages]

    assert verdicts == ["fresh", "fresh", "stale", "stale", "expired"]


def test_freshness_without_stale_window_goes_straight_to_expired() -> None:
    verdict = freshness(60.0, ttl=60, stale_ttl=60)

    assert verdict == "expired"


# --- TTL and keys ----------------------------------------------------------------


async def test_second_call_within_ttl_is_served_from_the_cache() -> None:
    clock = FakeClock()
    cache = Cache(ttl=600, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(599)

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == "v1"
    assert upstream.calls == 1


async def test_call_after_ttl_calls_the_provider_again() -> None:
    clock = FakeClock()
    cache = Cache(ttl=timedelta(minutes=10), clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(600)
    upstream.result = "v2"

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == "v2"
    assert upstream.calls == 2


async def test_different_arguments_are_cached_separately() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()

    await cache.call(upstream.fetch, "Oslo")
    await cache.call(upstream.fetch, "Bergen")
    await cache.call(upstream.fetch, city="Oslo")

    assert upstream.calls == 3


async def test_cache_name_is_part_of_the_key_on_a_shared_backend() -> None:
    backend = MemoryCacheBackend()
    clock = FakeClock()
    weather = Cache(ttl=600, name="weather", backend=backend, clock=clock)
    currency = Cache(ttl=3600, name="currency", backend=backend, clock=clock)
    context = CallContext(operation="lookup", key="NOK")

    async def weather_call() -> str:
        return "rain"

    async def currency_call() -> str:
        return "0.09 EUR"

    first = await weather.run(weather_call, context)
    second = await currency.run(currency_call, context)

    assert (first, second) == ("rain", "0.09 EUR")
    assert len(backend) == 2


async def test_key_callable_replaces_the_partition() -> None:
    cache = Cache(ttl=600, key=lambda context: str(context.args[0]).lower(), clock=FakeClock())
    upstream = Upstream()

    await cache.call(upstream.fetch, "Oslo")
    await cache.call(upstream.fetch, "OSLO")

    assert upstream.calls == 1


async def test_decorated_function_is_cached_per_arguments() -> None:
    upstream = Upstream()
    cache = Cache(ttl=600, clock=FakeClock())

    @cache
    async def forecast(city: str) -> str:
        return f"{await upstream.fetch(city)} for {city}"

    results = [await forecast("Oslo"), await forecast("Oslo"), await forecast("Bergen")]

    assert results == ["v1 for Oslo", "v1 for Oslo", "v1 for Bergen"]
    assert upstream.calls == 2
    assert forecast.__name__ == "forecast"


def test_for_kind_uses_the_preset_ttl_and_names_the_cache() -> None:
    cache = Cache.for_kind("geocoding")

    assert cache.ttl == timedelta(days=7).total_seconds()
    assert cache.name == "geocoding"
    assert set(TTL_PRESETS) == {"geocoding", "currency", "weather"}


def test_for_kind_accepts_overrides() -> None:
    cache = Cache.for_kind("weather", stale_ttl=3600)

    assert (cache.ttl, cache.stale_ttl) == (600, 3600)


def test_for_kind_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="no TTL preset for 'tides'"):
        Cache.for_kind("tides")


# --- coalescing ------------------------------------------------------------------


async def test_twenty_concurrent_misses_make_one_call() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    callers = [asyncio.create_task(cache.call(upstream.fetch, "Oslo")) for _ in range(20)]
    await asyncio.sleep(0)

    upstream.gate.set()
    results = await asyncio.gather(*callers)

    assert upstream.calls == 1
    assert results == ["v1"] * 20


async def test_concurrent_waiters_get_the_callers_exception() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    upstream.error = ConnectionError("provider down")
    callers = [asyncio.create_task(cache.call(upstream.fetch, "Oslo")) for _ in range(5)]
    await asyncio.sleep(0)

    upstream.gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert upstream.calls == 1
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)


async def test_a_cancelled_waiter_does_not_cancel_the_call() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    leader = asyncio.create_task(cache.call(upstream.fetch, "Oslo"))
    waiter = asyncio.create_task(cache.call(upstream.fetch, "Oslo"))
    await asyncio.sleep(0)

    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    upstream.gate.set()
    result = await leader

    assert waiter.cancelled()
    assert result == "v1"
    assert upstream.calls == 1


async def test_a_cancelled_leader_lets_a_waiter_make_the_call() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    leader = asyncio.create_task(cache.call(upstream.fetch, "Oslo"))
    waiter = asyncio.create_task(cache.call(upstream.fetch, "Oslo"))
    await asyncio.sleep(0)

    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    upstream.gate.set()
    result = await waiter

    assert leader.cancelled()
    assert result == "v1"
    assert upstream.calls == 2


# --- serve stale on error ------------------------------------------------------------


async def test_stale_value_is_served_when_the_refresh_fails() -> None:
    clock = FakeClock()
    hub, seen = recorder()
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock, events=hub)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(120)
    upstream.error = ConnectionError("provider down")

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == "v1"
    assert upstream.calls == 2
    stale = [event for event in seen if event.kind == "cache_stale_served"]
    assert len(stale) == 1
    assert stale[0].attributes["reason"] == "ConnectionError"
    assert stale[0].attributes["age"] == 120


async def test_stale_entry_is_replaced_when_the_refresh_succeeds() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(120)
    upstream.result = "v2"

    refreshed = await cache.call(upstream.fetch, "Oslo")
    again = await cache.call(upstream.fetch, "Oslo")

    assert (refreshed, again) == ("v2", "v2")
    assert upstream.calls == 2


async def test_an_entry_past_stale_ttl_is_gone() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(3600)
    upstream.error = ConnectionError("provider down")

    with pytest.raises(ConnectionError):
        await cache.call(upstream.fetch, "Oslo")


async def test_an_entry_that_ages_out_during_the_refresh_is_not_served() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock)
    context = CallContext(operation="forecast", key="oslo")

    async def good() -> str:
        return "sun"

    async def slow_failure() -> str:
        clock.advance(700)
        raise ConnectionError("provider down")

    await cache.run(good, context)
    clock.advance(3000)

    with pytest.raises(ConnectionError):
        await cache.run(slow_failure, context)


async def test_without_stale_ttl_an_expired_entry_is_not_served_on_error() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(61)
    upstream.error = ConnectionError("provider down")

    with pytest.raises(ConnectionError):
        await cache.call(upstream.fetch, "Oslo")


async def test_errors_outside_stale_on_propagate() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, stale_on=ConnectionError, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(120)
    upstream.error = KeyError("bug in our own code")

    with pytest.raises(KeyError):
        await cache.call(upstream.fetch, "Oslo")


async def test_a_cancelled_refresh_is_never_answered_with_a_stale_value() -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock)
    upstream = Upstream()
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(120)
    upstream.gate = asyncio.Event()
    refresh = asyncio.create_task(cache.call(upstream.fetch, "Oslo"))
    await asyncio.sleep(0)

    refresh.cancel()
    outcome = await asyncio.gather(refresh, return_exceptions=True)

    assert isinstance(outcome[0], asyncio.CancelledError)


# --- what is stored ------------------------------------------------------------------


async def test_results_rejected_by_cache_if_are_returned_but_not_stored() -> None:
    cache = Cache(ttl=600, cache_if=lambda response: response["status"] < 500, clock=FakeClock())
    upstream = Upstream()
    upstream.result = {"status": 503}

    first = await cache.call(upstream.fetch, "Oslo")
    await cache.call(upstream.fetch, "Oslo")

    assert first == {"status": 503}
    assert upstream.calls == 2


async def test_exceptions_are_never_cached() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.error = ConnectionError("provider down")
    with pytest.raises(ConnectionError):
        await cache.call(upstream.fetch, "Oslo")
    upstream.error = None

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == "v1"
    assert upstream.calls == 2


async def test_invalidate_drops_one_entry() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    context = CallContext(operation="fetch", key="oslo")
    await cache.run(upstream.fetch, context)
    await cache.run(upstream.fetch, CallContext(operation="fetch", key="bergen"))

    await cache.invalidate("oslo")
    await cache.run(upstream.fetch, context)
    await cache.run(upstream.fetch, CallContext(operation="fetch", key="bergen"))

    assert upstream.calls == 3


async def test_clear_drops_only_this_caches_entries() -> None:
    backend = MemoryCacheBackend()
    clock = FakeClock()
    weather = Cache(ttl=600, name="weather", backend=backend, clock=clock)
    currency = Cache(ttl=600, name="currency", backend=backend, clock=clock)
    upstream = Upstream()
    await weather.call(upstream.fetch, "Oslo")
    await currency.call(upstream.fetch, "NOK")

    await weather.clear()

    assert len(backend) == 1
    await currency.call(upstream.fetch, "NOK")
    assert upstream.calls == 2


class SlowWrites(MemoryCacheBackend):
    """A memory backend whose writes wait for `gate`, as a remote one's may take a while."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def set(self, key: str, value: Any, *, stored_at: float, lifetime: float) -> None:
        await self.gate.wait()
        await super().set(key, value, stored_at=stored_at, lifetime=lifetime)


async def test_a_load_whose_key_is_invalidated_returns_its_result_but_does_not_store_it() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    oslo = CallContext(operation="fetch", key="oslo")
    callers = [asyncio.create_task(cache.run(upstream.fetch, oslo)) for _ in range(2)]
    await asyncio.sleep(0)

    await cache.invalidate("oslo")
    upstream.gate.set()
    results = await asyncio.gather(*callers)
    upstream.result = "v2"
    after = [await cache.run(upstream.fetch, oslo) for _ in range(2)]

    assert results == ["v1", "v1"]
    assert after == ["v2", "v2"]
    assert upstream.calls == 2
    assert cache._generations == {}


async def test_a_load_in_flight_during_clear_does_not_store_its_result() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    loads = [
        asyncio.create_task(cache.run(upstream.fetch, CallContext(operation="fetch", key=city)))
        for city in ("oslo", "bergen")
    ]
    await asyncio.sleep(0)

    await cache.clear()
    upstream.gate.set()
    results = await asyncio.gather(*loads)
    upstream.gate = None
    await cache.run(upstream.fetch, CallContext(operation="fetch", key="oslo"))

    assert results == ["v1", "v1"]
    assert upstream.calls == 3
    assert cache._generations == {}


async def test_invalidating_another_key_lets_a_load_store_its_result() -> None:
    cache = Cache(ttl=600, clock=FakeClock())
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    oslo = CallContext(operation="fetch", key="oslo")
    load = asyncio.create_task(cache.run(upstream.fetch, oslo))
    await asyncio.sleep(0)

    await cache.invalidate("bergen")
    upstream.gate.set()
    await load
    await cache.run(upstream.fetch, oslo)

    assert upstream.calls == 1


async def test_an_entry_invalidated_while_it_is_written_is_dropped_once_written() -> None:
    backend = SlowWrites()
    cache = Cache(ttl=600, backend=backend, clock=FakeClock())
    upstream = Upstream()
    oslo = CallContext(operation="fetch", key="oslo")
    load = asyncio.create_task(cache.run(upstream.fetch, oslo))
    await asyncio.sleep(0)

    await cache.invalidate("oslo")
    backend.gate.set()
    result = await load

    assert result == "v1"
    assert len(backend) == 0


async def test_memory_backend_evicts_the_least_recently_used_entry() -> None:
    cache = Cache(ttl=600, max_entries=2, clock=FakeClock())
    upstream = Upstream()
    await cache.call(upstream.fetch, "a")
    await cache.call(upstream.fetch, "b")
    await cache.call(upstream.fetch, "a")  # a is now the most recently used

    await cache.call(upstream.fetch, "c")  # evicts b
    await cache.call(upstream.fetch, "a")
    await cache.call(upstream.fetch, "b")

    assert upstream.calls == 4
    assert isinstance(cache.backend, MemoryCacheBackend)
    assert len(cache.backend) == 2


# --- events ----------------------------------------------------------------------


async def test_miss_then_hit_are_reported() -> None:
    clock = FakeClock()
    hub, seen = recorder()
    cache = Cache(ttl=600, name="weather", clock=clock, events=hub)
    context = CallContext(operation="forecast", key="oslo")

    async def forecast() -> str:
        return "sun"

    await cache.run(forecast, context)
    clock.advance(5)
    await cache.run(forecast, context)

    assert [(event.kind, event.policy, event.name) for event in seen] == [
        ("cache_miss", "cache", "weather"),
        ("cache_hit", "cache", "weather"),
    ]
    assert seen[1].attributes == {"key": "oslo", "age": 5}


# --- options ---------------------------------------------------------------------


def test_stale_ttl_shorter_than_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="at least ttl"):
        Cache(ttl=600, stale_ttl=60)


def test_stale_on_refuses_base_exceptions() -> None:
    with pytest.raises(ValueError, match="Exception subclasses"):
        Cache(stale_on=(asyncio.CancelledError,))  # type: ignore[arg-type]  # the misuse under test


def test_max_entries_with_an_explicit_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Cache(backend=MemoryCacheBackend(), max_entries=10)


def test_a_non_positive_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        Cache(ttl=0)


def test_the_cache_module_does_not_load_redis() -> None:
    code = "import sys, seawall.resilience._cache; print('redis' in sys.modules)"

    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "False"


async def test_events_name_the_operation_not_the_arguments() -> None:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    cache = Cache(ttl=60, events=hub, clock=FakeClock())

    async def lookup(token: str) -> str:
        return "value"

    await cache.call(lookup, "tok_s3cr3t")
    await cache.call(lookup, "tok_s3cr3t")

    assert [event.kind for event in seen] == ["cache_miss", "cache_hit"]
    assert all("s3cr3t" not in str(event.attributes) for event in seen)
