"""`RateLimit` on `RedisRateLimitStorage` against the real Redis: atomic, one round trip, shared."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from seawall.errors import RateLimitExceeded
from seawall.resilience._ratelimit import Algorithm, RateLimit
from seawall.resilience._redis_ratelimit import RedisRateLimitStorage, RedisReservation
from seawall.testing import FakeClock
from tests.conftest import REDIS_URL, connect_redis, delete_prefix, need_service
from tests.resilience.test_cache_redis import NO_RETRY
from tests.resilience.test_ratelimit import CANCEL_ORDERS, REFUNDS, ParkingClock, cancel

ALGORITHMS: list[Algorithm] = ["token_bucket", "moving_window", "sliding_window_counter"]


class CountingRedis(redis.asyncio.Redis):
    """A client that counts the commands it sends (each one is a round trip here)."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.commands: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        # redis-py leaves execute_command unannotated.
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture
async def client(prefix: str) -> AsyncIterator[CountingRedis]:
    connection = cast("CountingRedis", await connect_redis(CountingRedis))
    connection.commands.clear()  # the connection check's PING is not the test's
    yield connection
    await delete_prefix(connection, prefix)
    await connection.aclose()


async def outcomes(limiter: RateLimit, key: str, count: int) -> list[float]:
    """0.0 for each admitted call, retry_after for each refused one."""
    result: list[float] = []
    for _ in range(count):
        try:
            await limiter.acquire(key)
        except RateLimitExceeded as exc:
            result.append(exc.retry_after)
        else:
            result.append(0.0)
    return result


@pytest.mark.parametrize(
    ("algorithm", "retry_after", "later"),
    [
        ("token_bucket", 0.2, [0.0, 0.2]),
        ("moving_window", 1.0, [0.0] * 5 + [1.0]),
        ("sliding_window_counter", 1.2, [0.0, 0.2]),
    ],
)
async def test_each_algorithm_admits_the_same_pattern_as_in_memory(
    client: CountingRedis, prefix: str, algorithm: Algorithm, retry_after: float, later: list[float]
) -> None:
    clock = FakeClock(wall_start=1_800_000_000.0)
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit("5/second", algorithm=algorithm, storage=storage, clock=clock)

    burst = await outcomes(limiter, "k", 6)
    clock.advance(retry_after)
    after = await outcomes(limiter, "k", len(later))

    assert burst == [0.0] * 5 + [pytest.approx(retry_after, abs=2e-6)]
    assert after == [pytest.approx(value, abs=2e-6) for value in later]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_server_time_is_used_when_no_clock_is_given(
    client: CountingRedis, prefix: str, algorithm: Algorithm
) -> None:
    limiter = RateLimit(
        "3/hour", algorithm=algorithm, storage=RedisRateLimitStorage(client, prefix=prefix)
    )

    result = await outcomes(limiter, "k", 4)

    assert result[:3] == [0.0, 0.0, 0.0]
    assert 0 < result[3] <= 2 * 3600.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_fifty_concurrent_decisions_on_one_key_admit_exactly_the_limit(
    client: CountingRedis, prefix: str, algorithm: Algorithm
) -> None:
    clock = FakeClock()
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit("10/second", algorithm=algorithm, storage=storage, clock=clock)

    result = await asyncio.gather(*(outcomes(limiter, "hot", 1) for _ in range(50)))

    admitted = sum(1 for [value] in result if value == 0.0)
    assert admitted == 10


async def test_each_decision_is_one_round_trip(client: CountingRedis, prefix: str) -> None:
    limiter = RateLimit(
        "10/second;100/minute", storage=RedisRateLimitStorage(client, prefix=prefix)
    )
    await limiter.acquire("warm")  # loads the script once if the server did not have it
    client.commands.clear()

    await outcomes(limiter, "k", 25)

    assert client.commands == ["EVALSHA"] * 25


async def test_partitions_are_independent_and_long_keys_are_hashed(
    client: CountingRedis, prefix: str
) -> None:
    clock = FakeClock()
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit("1/minute", storage=storage, clock=clock)
    long_key = "tenant-" + "x" * 500

    result = [*await outcomes(limiter, "a", 2), *await outcomes(limiter, long_key, 2)]
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]

    assert result == [0.0, pytest.approx(60.0), 0.0, pytest.approx(60.0)]
    assert len(keys) == 2
    assert all(len(key) < 200 for key in keys)


async def test_keys_expire_once_they_no_longer_limit(client: CountingRedis, prefix: str) -> None:
    limiter = RateLimit("5/second", storage=RedisRateLimitStorage(client, prefix=prefix))

    await limiter.acquire("k")
    [key] = [key async for key in client.scan_iter(match=f"{prefix}*")]
    ttl = await client.pttl(key)

    assert 0 < ttl <= 1_000


async def test_wait_mode_reserves_a_slot_in_redis(client: CountingRedis, prefix: str) -> None:
    clock = FakeClock()
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit("1/second", mode="wait", storage=storage, clock=clock)
    await limiter.acquire("k")
    client.commands.clear()

    await limiter.acquire("k")

    assert clock.sleeps == [pytest.approx(1.0, abs=2e-6)]
    assert client.commands == ["EVALSHA"]


@REFUNDS
@CANCEL_ORDERS
async def test_waiters_cancelled_in_their_sleep_give_their_slots_back_in_redis(
    client: CountingRedis,
    prefix: str,
    algorithm: Algorithm,
    rate: str,
    first_slot: float,
    order: str,
) -> None:
    clock = ParkingClock()
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit(rate, algorithm=algorithm, mode="wait", storage=storage, clock=clock)
    await outcomes(limiter, "k", 2)
    waiters = await clock.park(limiter, "k", 10)
    clock.parked = False

    await cancel(waiters if order == "first_reserved_first" else waiters[::-1])
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(first_slot, abs=2e-6)


@pytest.mark.parametrize("algorithm", ["token_bucket", "moving_window"])
async def test_a_cancelled_waiter_never_gives_back_a_slot_that_a_later_waiter_holds_in_redis(
    client: CountingRedis, prefix: str, algorithm: Algorithm
) -> None:
    clock = ParkingClock()
    storage = RedisRateLimitStorage(client, prefix=prefix, clock=clock)
    limiter = RateLimit("2/second", algorithm=algorithm, mode="wait", storage=storage, clock=clock)
    await outcomes(limiter, "k", 2)
    first, *later = await clock.park(limiter, "k", 3)
    clock.parked = False

    await cancel([first])
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(2.0, abs=2e-6)
    await cancel(later)


class RefundsToNowhere:
    """Decides on the real Redis but sends refunds to an address where no Redis listens."""

    def __init__(self, real: RedisRateLimitStorage, nowhere: RedisRateLimitStorage) -> None:
        self.real = real
        self.nowhere = nowhere

    async def acquire(self, *args: Any) -> float:
        return await self.real.acquire(*args)

    async def reserve(self, *args: Any) -> tuple[float, RedisReservation | None]:
        return await self.real.reserve(*args)

    async def refund(self, reservation: RedisReservation) -> bool:
        return await self.nowhere.refund(reservation)


async def test_a_refund_that_fails_is_logged_and_the_cancellation_still_wins(
    client: CountingRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ParkingClock()
    unreachable = redis.asyncio.Redis(
        host="127.0.0.1", port=1, retry=NO_RETRY, socket_connect_timeout=1
    )
    storage = RefundsToNowhere(
        RedisRateLimitStorage(client, prefix=prefix, clock=clock),
        RedisRateLimitStorage(unreachable, prefix=prefix, clock=clock),
    )
    limiter = RateLimit("1/second", mode="wait", storage=storage, clock=clock, name="sms")
    await limiter.acquire("k")
    [waiter] = await clock.park(limiter, "k", 1)

    with caplog.at_level(logging.WARNING, logger="seawall.resilience"):
        await cancel([waiter])

    assert "rate_limit_refund_failed limiter=sms error=ConnectionError" in caplog.text
    await unreachable.aclose()


WORKER = textwrap.dedent(
    """
    import asyncio, sys

    import redis.asyncio

    from seawall.errors import RateLimitExceeded
    from seawall.resilience._ratelimit import RateLimit
    from seawall.resilience._redis_ratelimit import RedisRateLimitStorage, RedisReservation


    async def main(url: str, prefix: str, algorithm: str) -> None:
        client = redis.asyncio.Redis.from_url(url)
        # A barrier: the last process to arrive lets both go, so their calls overlap.
        if await client.incr(prefix + "barrier") == 2:
            await client.rpush(prefix + "go", "1", "1")
        await client.blpop([prefix + "go"], timeout=30)
        storage = RedisRateLimitStorage(client, prefix=prefix)
        limiter = RateLimit("10/hour", algorithm=algorithm, storage=storage, name="shared")

        async def one() -> int:
            try:
                await limiter.acquire("provider")
            except RateLimitExceeded:
                return 0
            return 1

        admitted = sum(await asyncio.gather(*(one() for _ in range(25))))
        await client.aclose()
        print(admitted)


    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_two_processes_share_one_limit_through_redis(tmp_path: Path, prefix: str) -> None:
    algorithm = "token_bucket"  # the other scripts' atomicity is shown by the 50 concurrent calls
    sync = redis.Redis.from_url(REDIS_URL)
    try:
        sync.ping()
    except (OSError, redis.RedisError) as exc:
        need_service("Redis", f"{REDIS_URL}: {type(exc).__name__}: {exc}")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    workers = [
        subprocess.Popen(
            [sys.executable, str(script), REDIS_URL, prefix, algorithm],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=60) for worker in workers]
    for key in sync.scan_iter(match=f"{prefix}*"):
        sync.delete(key)
    sync.close()

    assert [worker.returncode for worker in workers] == [0, 0], outputs
    counts = [int(out.strip()) for out, _ in outputs]
    assert sum(counts) == 10
