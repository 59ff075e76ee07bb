"""`Cache` on `RedisCacheBackend`, against the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from seawall.resilience._cache import Cache
from seawall.resilience._redis_cache import JsonSerializer, PickleSerializer, RedisCacheBackend
from seawall.testing import FakeClock
from tests.conftest import REDIS_URL

NO_RETRY = Retry(NoBackoff(), retries=0)


@pytest.fixture
def backend(redis: Redis, redis_prefix: str) -> RedisCacheBackend:
    """A backend under the test's own prefix (cleaned up by the `redis` fixture)."""
    return RedisCacheBackend(redis, prefix=redis_prefix)


class Upstream:
    def __init__(self, result: object) -> None:
        self.calls = 0
        self.result = result
        self.error: Exception | None = None

    async def fetch(self, city: str) -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Forecast:
    city: str
    celsius: float


async def test_a_second_process_reads_what_the_first_one_cached(
    backend: RedisCacheBackend,
) -> None:
    clock = FakeClock()
    upstream = Upstream({"city": "Oslo", "celsius": [4.5, 6.0]})
    first = Cache(ttl=600, name="weather", backend=backend, clock=clock)
    second = Cache(ttl=600, name="weather", backend=backend, clock=clock)
    await first.call(upstream.fetch, "Oslo")

    result = await second.call(upstream.fetch, "Oslo")

    assert result == {"city": "Oslo", "celsius": [4.5, 6.0]}
    assert upstream.calls == 1


async def test_entries_are_stored_with_a_redis_expiry_of_stale_ttl(
    redis: Redis, backend: RedisCacheBackend
) -> None:
    cache = Cache(ttl=60, stale_ttl=3600, name="weather", backend=backend, clock=FakeClock())
    await cache.call(Upstream("sun").fetch, "Oslo")

    keys = [key async for key in redis.scan_iter(match=f"{backend._prefix}weather:*")]
    expiry_ms = await redis.pttl(keys[0])

    assert len(keys) == 1
    assert 3_000_000 < expiry_ms <= 3_600_000


async def test_freshness_uses_wall_time_and_stale_is_served_on_error(
    backend: RedisCacheBackend,
) -> None:
    clock = FakeClock()
    cache = Cache(ttl=60, stale_ttl=3600, name="weather", backend=backend, clock=clock)
    upstream = Upstream("sun")
    await cache.call(upstream.fetch, "Oslo")
    clock.advance(120)
    upstream.error = ConnectionError("provider down")

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == "sun"
    assert upstream.calls == 2


async def test_a_value_json_cannot_encode_is_refused_with_advice(
    backend: RedisCacheBackend,
) -> None:
    cache = Cache(ttl=60, backend=backend, clock=FakeClock())

    with pytest.raises(TypeError, match="PickleSerializer"):
        await cache.call(Upstream(Forecast("Oslo", 4.5)).fetch, "Oslo")


async def test_the_pickle_serializer_round_trips_objects(redis: Redis) -> None:
    prefix = f"seawall-test:{uuid.uuid4().hex}:"
    backend = RedisCacheBackend(redis, prefix=prefix, serializer=PickleSerializer())
    cache = Cache(ttl=60, backend=backend, clock=FakeClock())
    upstream = Upstream(Forecast("Oslo", 4.5))
    await cache.call(upstream.fetch, "Oslo")

    result = await cache.call(upstream.fetch, "Oslo")

    assert result == Forecast("Oslo", 4.5)
    assert upstream.calls == 1
    await cache.clear()


async def test_invalidate_and_clear_remove_keys_from_redis(
    redis: Redis, backend: RedisCacheBackend
) -> None:
    clock = FakeClock()
    weather = Cache(ttl=600, name="weather[eu]", backend=backend, clock=clock)
    currency = Cache(ttl=600, name="currency", backend=backend, clock=clock)
    upstream = Upstream("x")
    for city in ("Oslo", "Bergen", "Tromsø"):
        await weather.call(upstream.fetch, city)
    await currency.call(upstream.fetch, "NOK")

    await weather.invalidate("Upstream.fetch:('Oslo',):[]")
    after_invalidate = [key async for key in redis.scan_iter(match=backend._prefix + "*")]
    await weather.clear()
    after_clear = [key async for key in redis.scan_iter(match=backend._prefix + "*")]

    assert len(after_invalidate) == 3
    assert after_clear == [f"{backend._prefix}currency:Upstream.fetch:('NOK',):[]".encode()]


def test_a_client_that_decodes_responses_is_refused() -> None:
    client = Redis.from_url(REDIS_URL, decode_responses=True)

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCacheBackend(client)


async def test_an_unreachable_redis_counts_as_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    client = Redis(host="127.0.0.1", port=1, retry=NO_RETRY, socket_connect_timeout=1)
    cache = Cache(ttl=60, backend=RedisCacheBackend(client), clock=FakeClock())
    upstream = Upstream("sun")

    with caplog.at_level(logging.WARNING, logger="seawall.resilience"):
        results = [await cache.call(upstream.fetch, "Oslo") for _ in range(2)]

    assert results == ["sun", "sun"]
    assert upstream.calls == 2
    assert "cache_backend_failed" in caplog.text
    await client.aclose()


async def test_fail_open_false_raises_the_redis_error() -> None:
    client = Redis(host="127.0.0.1", port=1, retry=NO_RETRY, socket_connect_timeout=1)
    backend = RedisCacheBackend(client, fail_open=False)
    cache = Cache(ttl=60, backend=backend, clock=FakeClock())

    with pytest.raises(RedisError):
        await cache.call(Upstream("sun").fetch, "Oslo")
    await client.aclose()


def test_json_serializer_round_trips_plain_data() -> None:
    serializer = JsonSerializer()
    value = {"rates": {"EUR": 0.086}, "ok": True, "items": [1, "two", None]}

    decoded = serializer.loads(serializer.dumps(value))

    assert decoded == value
