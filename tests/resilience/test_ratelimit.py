"""`seawall.resilience.RateLimit` in memory: parse(), the three algorithms, keys, modes, bounds."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import RateLimitExceeded
from seawall.resilience import CallContext, EventHub, Pipeline, ResilienceEvent
from seawall.resilience._ratelimit import Algorithm, Rate, RateLimit, parse
from seawall.testing import FakeClock


async def ok() -> str:
    return "ok"


async def fetch(customer: str) -> str:
    return f"fetched {customer}"


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


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


# --- parse() ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/minute", (Rate(100, 60.0),)),
        ("10 per second", (Rate(10, 1.0),)),
        ("1000/hour", (Rate(1000, 3600.0),)),
        ("5/10 seconds", (Rate(5, 10.0),)),
        ("100/day", (Rate(100, 86_400.0),)),
        ("2 per 5 minutes", (Rate(2, 300.0),)),
        ("10per second", (Rate(10, 1.0),)),
        ("3/Second", (Rate(3, 1.0),)),
        ("1/month", (Rate(1, 30 * 86_400.0),)),
        ("10/second;1000/hour", (Rate(10, 1.0), Rate(1000, 3600.0))),
        (
            "10/second, 1000/hour | 5000/day",
            (Rate(10, 1.0), Rate(1000, 3600.0), Rate(5000, 86_400.0)),
        ),
    ],
)
def test_parse_reads_the_limits_library_notation(text: str, expected: tuple[Rate, ...]) -> None:
    rates = parse(text)

    assert rates == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty rate limit ''"),
        ("100", "cannot read rate limit '100'"),
        ("ten/second", "cannot read rate limit 'ten/second'"),
        ("100/fortnight", "unknown unit 'fortnight' in rate limit '100/fortnight'"),
        ("10/second;5/lightyear", "unknown unit 'lightyear' in rate limit '5/lightyear' in"),
        ("0/second", "rate limit '0/second' allows no calls"),
        ("5/0 seconds", "rate limit '5/0 seconds' has an empty period"),
        ("10/second;", "empty part in rate limit '10/second;'"),
    ],
)
def test_parse_names_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("|", r"\|")) as raised:
        parse(text)

    assert message in str(raised.value)


def test_rate_refuses_an_empty_amount_or_period() -> None:
    with pytest.raises(ValueError, match="amount"):
        Rate(0, 1.0)

    with pytest.raises(ValueError, match="period"):
        Rate(1, 0.0)


def test_rate_limit_refuses_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'leaky'"):
        RateLimit("1/second", algorithm="leaky")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="unknown mode 'block'"):
        RateLimit("1/second", mode="block")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="max_keys"):
        RateLimit("1/second", max_keys=0)


def test_rate_limit_accepts_rates_text_or_both() -> None:
    limiter = RateLimit(["10/second", Rate(100, 60.0)], max_wait=timedelta(seconds=2))

    assert limiter.rates == (Rate(10, 1.0), Rate(100, 60.0))


# --- admission patterns, per algorithm ---------------------------------------------


async def test_token_bucket_admits_a_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimit("5/second", algorithm="token_bucket", clock=clock)

    burst = await outcomes(limiter, "k", 6)
    clock.advance(0.2)
    refill = await outcomes(limiter, "k", 2)
    clock.advance(1.0)
    full = await outcomes(limiter, "k", 6)

    assert burst == [0.0] * 5 + [pytest.approx(0.2)]
    assert refill == [0.0, pytest.approx(0.2)]
    assert full == [0.0] * 5 + [pytest.approx(0.2)]


async def test_token_bucket_with_a_third_of_a_second_interval_admits_exactly_three() -> None:
    clock = FakeClock()
    limiter = RateLimit("3/second", clock=clock)

    first = await outcomes(limiter, "k", 4)

    assert first == [0.0, 0.0, 0.0, pytest.approx(1 / 3)]


async def test_moving_window_admits_the_amount_in_any_period() -> None:
    clock = FakeClock()
    limiter = RateLimit("5/second", algorithm="moving_window", clock=clock)

    burst = await outcomes(limiter, "k", 6)
    clock.advance(0.5)
    half = await outcomes(limiter, "k", 1)
    clock.advance(0.5)
    renewed = await outcomes(limiter, "k", 6)

    assert burst == [0.0] * 5 + [pytest.approx(1.0)]
    assert half == [pytest.approx(0.5)]
    assert renewed == [0.0] * 5 + [pytest.approx(1.0)]


async def test_moving_window_frees_slots_one_by_one_as_they_age() -> None:
    clock = FakeClock()
    limiter = RateLimit("2/second", algorithm="moving_window", clock=clock)
    await limiter.acquire("k")
    clock.advance(0.3)
    await limiter.acquire("k")

    refused = await outcomes(limiter, "k", 1)
    clock.advance(0.7)
    after_first_ages = await outcomes(limiter, "k", 2)

    assert refused == [pytest.approx(0.7)]
    assert after_first_ages == [0.0, pytest.approx(0.3)]


async def test_sliding_window_counter_weights_the_previous_window() -> None:
    clock = FakeClock(start=1000.0)  # at the start of a one-second window
    limiter = RateLimit("5/second", algorithm="sliding_window_counter", clock=clock)

    burst = await outcomes(limiter, "k", 6)
    clock.advance(1.2)  # the previous window (5 calls) still weighs 0.8 -> estimate 4
    later = await outcomes(limiter, "k", 2)

    assert burst == [0.0] * 5 + [pytest.approx(1.2)]
    assert later == [0.0, pytest.approx(0.2)]


async def test_several_rates_must_all_pass() -> None:
    clock = FakeClock()
    limiter = RateLimit("2/second;3/minute", clock=clock)

    first = await outcomes(limiter, "k", 3)
    clock.advance(1.0)
    second = await outcomes(limiter, "k", 2)

    assert first == [0.0, 0.0, pytest.approx(0.5)]
    assert second == [0.0, pytest.approx(19.0)]  # the minute's bucket refills one call per 20 s


@pytest.mark.parametrize(
    ("algorithm", "first", "second"),
    [
        ("moving_window", [0.0, 0.0, 1.0], [0.0, 59.0]),  # 3 in any minute
        ("sliding_window_counter", [0.0, 0.0, 1.5], [0.0, 38.5]),  # minute window 960-1020 s
    ],
)
async def test_several_rates_must_all_pass_in_the_window_algorithms(
    algorithm: Algorithm, first: list[float], second: list[float]
) -> None:
    clock = FakeClock(start=1000.0)
    limiter = RateLimit("2/second;3/minute", algorithm=algorithm, clock=clock)

    before = await outcomes(limiter, "k", 3)
    clock.advance(first[-1])
    after = await outcomes(limiter, "k", 2)

    assert before == [pytest.approx(value) for value in first]
    assert after == [pytest.approx(value) for value in second]


@pytest.mark.parametrize("algorithm", ["token_bucket", "moving_window", "sliding_window_counter"])
async def test_a_refused_call_does_not_use_up_the_budget(algorithm: Algorithm) -> None:
    clock = FakeClock()
    limiter = RateLimit("2/second", algorithm=algorithm, clock=clock)
    await outcomes(limiter, "k", 2)

    await outcomes(limiter, "k", 100)
    clock.advance(2.0)
    after = await outcomes(limiter, "k", 3)

    assert after[:2] == [0.0, 0.0]
    assert after[2] > 0


# --- keys ------------------------------------------------------------------------


async def test_all_calls_of_an_operation_share_one_budget_by_default() -> None:
    limiter = RateLimit("2/minute", clock=FakeClock())

    await limiter.call(fetch, "alice")
    await limiter.call(fetch, "bob")
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.call(fetch, "carol")

    assert refused.value.key == "fetch"


async def test_a_context_key_is_the_partition() -> None:
    limiter = RateLimit("1/minute", clock=FakeClock())
    tenant_a = CallContext(operation="op", key="tenant-a")
    tenant_b = CallContext(operation="op", key="tenant-b")

    results = [await limiter.run(ok, tenant_a), await limiter.run(ok, tenant_b)]
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.run(ok, tenant_a)

    assert results == ["ok", "ok"]
    assert refused.value.key == "tenant-a"


async def test_a_key_function_gives_each_argument_its_own_budget() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/minute", key=lambda context: context.partition(), clock=clock)

    first = await limiter.call(fetch, "alice")
    other = await limiter.call(fetch, "bob")
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.call(fetch, "alice")

    assert (first, other) == ("fetched alice", "fetched bob")
    assert refused.value.retry_after == pytest.approx(60.0)


async def test_errors_name_the_operation_not_the_arguments_of_the_default_partition() -> None:
    limiter = RateLimit("1/minute", name="crm", clock=FakeClock())
    await limiter.call(fetch, "token-s3cr3t")

    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.call(fetch, "token-s3cr3t")

    assert refused.value.limiter == "crm"
    assert refused.value.key == "fetch"
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize(
    ("algorithm", "rate"),
    [
        ("token_bucket", "10/second"),
        ("token_bucket", "10/second;100/minute"),
        ("moving_window", "10/second"),
        ("sliding_window_counter", "10/second"),
        ("sliding_window_counter", "10/second;100/minute"),
    ],
)
async def test_memory_holds_at_most_max_keys_partitions(algorithm: Algorithm, rate: str) -> None:
    clock = FakeClock()
    limiter = RateLimit(rate, algorithm=algorithm, max_keys=100, clock=clock)

    for index in range(10_000):
        await limiter.acquire(f"tenant-{index}")

    assert 0 < limiter.keys_in_memory <= 100


async def test_idle_partitions_are_forgotten_first_when_memory_is_full() -> None:
    clock = FakeClock()
    limiter = RateLimit("2/hour", max_keys=10, clock=clock)
    await outcomes(limiter, "busy", 2)  # exhausted for the next half hour
    for index in range(8):
        await limiter.acquire(f"light-{index}")

    for index in range(50):
        await limiter.acquire(f"new-{index}")
    busy = await outcomes(limiter, "busy", 1)

    assert limiter.keys_in_memory <= 10
    assert busy == [pytest.approx(1800.0)]


async def test_partitions_idle_past_their_period_are_dropped_lazily() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/second", max_keys=100, clock=clock)
    for index in range(100):
        await limiter.acquire(f"tenant-{index}")

    clock.advance(1.0)
    await limiter.acquire("newcomer")

    assert limiter.keys_in_memory == 1


# --- modes -----------------------------------------------------------------------


async def test_wait_mode_sleeps_until_the_slot_frees() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/second", mode="wait", clock=clock)

    results = [await limiter.call(ok), await limiter.call(ok), await limiter.call(ok)]

    assert results == ["ok", "ok", "ok"]
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]


class StillClock(FakeClock):
    """Records sleeps without moving time, so concurrent waiters all decide at one instant."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


async def test_wait_mode_gives_concurrent_waiters_slots_one_interval_apart() -> None:
    clock = StillClock()
    limiter = RateLimit("1/second", mode="wait", clock=clock)

    results = await asyncio.gather(*(limiter.call(ok) for _ in range(3)))

    assert results == ["ok", "ok", "ok"]
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(2.0)]


class ParkingClock(FakeClock):
    """Time stands still and, while `parked`, every sleep lasts until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = True
        self.alarms: list[asyncio.Event] = []
        self._asleep = asyncio.Semaphore(0)

    async def sleep(self, seconds: float) -> None:
        if not self.parked:
            await super().sleep(seconds)
            return
        self.sleeps.append(seconds)
        alarm = asyncio.Event()
        self.alarms.append(alarm)
        self._asleep.release()
        await alarm.wait()

    async def park(self, limiter: RateLimit, key: str, count: int) -> list[asyncio.Task[None]]:
        """Start *count* waiters one after the other, each asleep on its reserved slot."""
        tasks: list[asyncio.Task[None]] = []
        async with asyncio.timeout(5):
            for _ in range(count):
                tasks.append(asyncio.create_task(limiter.acquire(key)))
                await self._asleep.acquire()
        return tasks


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel *tasks* in the order given and wait until each has finished."""
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)


# After a burst of two on "2/second": the first slot free again, by algorithm.
REFUNDS = pytest.mark.parametrize(
    ("algorithm", "rate", "first_slot"),
    [
        ("token_bucket", "2/second", 0.5),
        ("token_bucket", "2/second;100/minute", 0.5),
        ("moving_window", "2/second", 1.0),
        ("moving_window", "2/second;100/minute", 1.0),
    ],
)
CANCEL_ORDERS = pytest.mark.parametrize("order", ["first_reserved_first", "last_reserved_first"])


@REFUNDS
@CANCEL_ORDERS
async def test_waiters_cancelled_in_their_sleep_give_their_slots_back(
    algorithm: Algorithm, rate: str, first_slot: float, order: str
) -> None:
    clock = ParkingClock()
    limiter = RateLimit(rate, algorithm=algorithm, mode="wait", clock=clock)
    await outcomes(limiter, "k", 2)
    waiters = await clock.park(limiter, "k", 10)
    clock.parked = False

    await cancel(waiters if order == "first_reserved_first" else waiters[::-1])
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(first_slot)
    assert limiter._core._holds == {}


@pytest.mark.parametrize(
    ("algorithm", "fourth_slot"), [("token_bucket", 2.0), ("moving_window", 2.0)]
)
async def test_a_cancelled_waiter_never_gives_back_a_slot_that_a_later_waiter_holds(
    algorithm: Algorithm, fourth_slot: float
) -> None:
    clock = ParkingClock()
    limiter = RateLimit("2/second", algorithm=algorithm, mode="wait", clock=clock)
    await outcomes(limiter, "k", 2)
    first, *later = await clock.park(limiter, "k", 3)
    clock.parked = False

    await cancel([first])
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(fourth_slot)
    await cancel(later)


async def test_a_slot_used_by_a_later_waiter_keeps_earlier_cancelled_slots_taken() -> None:
    clock = ParkingClock()
    limiter = RateLimit("1/second", mode="wait", clock=clock)
    await limiter.acquire("k")
    first, second = await clock.park(limiter, "k", 2)
    clock.parked = False

    await cancel([first])
    clock.alarms[1].set()
    await second
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(3.0)
    assert limiter._core._holds == {}


async def test_a_waiter_whose_slot_time_has_come_keeps_it_when_cancelled() -> None:
    clock = ParkingClock()
    limiter = RateLimit("1/second", mode="wait", clock=clock)
    await limiter.acquire("k")
    [waiter] = await clock.park(limiter, "k", 1)
    clock.advance(1.0)
    clock.parked = False

    await cancel([waiter])
    await limiter.acquire("k")

    assert clock.sleeps[-1] == pytest.approx(1.0)


async def test_wait_mode_raises_at_once_when_the_wait_would_pass_max_wait() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/minute", mode="wait", max_wait=5.0, clock=clock)
    await limiter.call(ok)

    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.call(ok)

    assert refused.value.retry_after == pytest.approx(60.0)
    assert clock.sleeps == []


async def test_wait_mode_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/second", mode="wait", clock=clock)
    await limiter.acquire("k")

    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("k", deadline=clock.monotonic() + 0.5)

    assert clock.sleeps == []


async def test_wait_mode_with_the_counter_sleeps_and_asks_again() -> None:
    clock = FakeClock(start=1000.0)
    limiter = RateLimit("2/second", algorithm="sliding_window_counter", mode="wait", clock=clock)
    await outcomes(limiter, "k", 2)

    await limiter.acquire("k")

    assert clock.sleeps == [pytest.approx(1.5)]


async def test_raise_mode_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimit("1/second", clock=clock)
    await limiter.call(ok)

    with pytest.raises(RateLimitExceeded):
        await limiter.call(ok)

    assert clock.sleeps == []


# --- events, decorator, pipeline ---------------------------------------------------------


async def test_rate_limited_events_carry_key_retry_after_and_mode() -> None:
    hub, seen = recorder()
    clock = FakeClock()
    raising = RateLimit("1/second", name="sms", clock=clock, events=hub)
    waiting = RateLimit("1/second", name="mail", mode="wait", clock=clock, events=hub)
    await raising.acquire("k")
    await waiting.acquire("k")

    with pytest.raises(RateLimitExceeded):
        await raising.acquire("k")
    await waiting.acquire("k")

    assert [(e.kind, e.policy, e.name) for e in seen] == [
        ("rate_limited", "rate_limit", "sms"),
        ("rate_limited", "rate_limit", "mail"),
    ]
    assert seen[0].attributes == {"key": "k", "retry_after": pytest.approx(1.0), "mode": "raise"}
    assert seen[1].attributes == {"key": "k", "retry_after": pytest.approx(1.0), "mode": "wait"}


async def test_decorated_function_is_rate_limited() -> None:
    limiter = RateLimit("1/minute", key=lambda context: "all", clock=FakeClock())

    @limiter
    async def send(text: str, *, urgent: bool = False) -> str:
        return text.upper() if urgent else text

    first = await send("hi", urgent=True)
    with pytest.raises(RateLimitExceeded):
        await send("again")

    assert first == "HI"


async def test_rate_limit_runs_as_a_pipeline_stage() -> None:
    limiter = RateLimit("1/minute", clock=FakeClock())
    pipeline = Pipeline([limiter])

    first = await pipeline.call(ok)
    with pytest.raises(RateLimitExceeded):
        await pipeline.call(ok)

    assert first == "ok"


# --- the cores against simple models ---------------------------------------------------

# Powers of two and eighths of a second keep every float exact, so the model and
# the core can be compared without tolerance at the boundaries.
amounts = st.sampled_from([1, 2, 4, 8])
periods = st.sampled_from([1.0, 2.0, 4.0])
steps = st.lists(st.tuples(st.integers(0, 16), st.integers(1, 5)), min_size=1, max_size=40)


@given(amount=amounts, period=periods, steps=steps)
def test_token_bucket_matches_a_bucket_of_tokens(
    amount: int, period: float, steps: list[tuple[int, int]]
) -> None:
    core = RateLimit(Rate(amount, period))._core
    tokens, last, now = float(amount), 0.0, 0.0
    for eighths, hits in steps:
        now += eighths / 8
        for _ in range(hits):
            tokens = min(amount, tokens + (now - last) * amount / period)
            last = now
            expected = 0.0 if tokens >= 1 else -(1 - tokens) * period / amount
            if tokens >= 1:
                tokens -= 1

            assert core.decide("k", now, 0.0) == pytest.approx(expected)


@given(amount=amounts, period=periods, steps=steps)
def test_moving_window_never_admits_more_than_the_amount_in_any_period(
    amount: int, period: float, steps: list[tuple[int, int]]
) -> None:
    core = RateLimit(Rate(amount, period), algorithm="moving_window")._core
    admitted: list[float] = []
    now = 0.0
    for eighths, hits in steps:
        now += eighths / 8
        for _ in range(hits):
            recent = [t for t in admitted if t > now - period]
            expected = 0.0 if len(recent) < amount else -(recent[-amount] + period - now)
            if expected == 0.0:
                admitted.append(now)

            assert core.decide("k", now, 0.0) == pytest.approx(expected)
