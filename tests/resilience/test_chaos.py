"""`seawall.resilience.Chaos`: faults, latency and bad results at a rate, off by default."""

from __future__ import annotations

import random
import traceback
from collections.abc import Iterator
from datetime import timedelta

import pytest

from seawall.resilience import EventHub, Pipeline, ResilienceEvent
from seawall.resilience._chaos import Chaos, ChaosDecision, decide
from seawall.resilience._fallback import Fallback
from seawall.testing import FakeClock


class Provider:
    def __init__(self) -> None:
        self.calls = 0

    async def charge(self, amount: int = 100) -> object:
        self.calls += 1
        return "charged"


class ProviderDownError(Exception):
    """A custom fault for the tests."""


def draws(*values: float) -> Iterator[float]:
    return iter(values)


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


# --- pure decision ---------------------------------------------------------------


def test_decide_injects_what_each_draw_selects() -> None:
    numbers = draws(0.05, 0.5, 0.1)

    decision = decide(numbers.__next__, latency_rate=0.1, fault_rate=0.2, result_rate=0.3)

    assert decision == ChaosDecision(latency=True, outcome="result")


def test_decide_lets_a_fault_win_over_a_bad_result() -> None:
    numbers = draws(0.0)

    decision = decide(numbers.__next__, latency_rate=0, fault_rate=1, result_rate=1)

    assert decision == ChaosDecision(latency=False, outcome="fault")


def test_decide_draws_nothing_for_zero_rates() -> None:
    numbers = draws()

    decision = decide(numbers.__next__, latency_rate=0, fault_rate=0, result_rate=0)

    assert decision == ChaosDecision(latency=False, outcome=None)


# --- off by default, switchable ----------------------------------------------------


async def test_chaos_is_off_by_default() -> None:
    chaos = Chaos(fault_rate=1.0, latency_rate=1.0)
    provider = Provider()

    result = await chaos.call(provider.charge)

    assert result == "charged"
    assert provider.calls == 1


async def test_chaos_can_be_switched_on_at_runtime() -> None:
    chaos = Chaos(fault_rate=1.0)
    provider = Provider()
    await chaos.call(provider.charge)

    chaos.enabled = True

    with pytest.raises(ConnectionError, match="chaos 'default' injected"):
        await chaos.call(provider.charge)
    assert provider.calls == 1


async def test_an_enabled_callable_is_read_on_every_call() -> None:
    settings = {"chaos": False}
    chaos = Chaos(enabled=lambda: settings["chaos"], fault_rate=1.0)
    provider = Provider()
    await chaos.call(provider.charge)
    settings["chaos"] = True

    with pytest.raises(ConnectionError):
        await chaos.call(provider.charge)
    assert chaos.is_active


# --- what is injected ----------------------------------------------------------------


async def test_a_fault_factory_gives_a_fresh_exception_each_time() -> None:
    chaos = Chaos(enabled=True, fault_rate=1.0, fault=lambda: ProviderDownError("503"))
    raised: list[BaseException] = []

    for _ in range(2):
        with pytest.raises(ProviderDownError) as info:
            await chaos.call(Provider().charge)
        raised.append(info.value)

    assert raised[0] is not raised[1]


async def test_a_fault_instance_does_not_grow_its_traceback() -> None:
    fault = ProviderDownError("503")
    chaos = Chaos(enabled=True, fault_rate=1.0, fault=fault)
    depths: list[int] = []

    for _ in range(50):
        with pytest.raises(ProviderDownError):
            await chaos.call(Provider().charge)
        depths.append(len(traceback.extract_tb(fault.__traceback__)))

    assert depths[0] == depths[-1]


async def test_latency_is_slept_through_the_clock_before_the_real_call() -> None:
    clock = FakeClock()
    chaos = Chaos(enabled=True, latency_rate=1.0, latency=timedelta(milliseconds=1500), clock=clock)
    provider = Provider()

    result = await chaos.call(provider.charge)

    assert result == "charged"
    assert clock.sleeps == [1.5]
    assert provider.calls == 1


async def test_a_bad_result_replaces_the_real_call() -> None:
    chaos = Chaos(enabled=True, result_rate=1.0, result={"status": 503})
    provider = Provider()

    result = await chaos.call(provider.charge)

    assert result == {"status": 503}
    assert provider.calls == 0


async def test_a_result_factory_is_called_per_injection() -> None:
    chaos = Chaos(enabled=True, result_rate=1.0, result=lambda: {"status": 500})

    first = await chaos.call(Provider().charge)
    second = await chaos.call(Provider().charge)

    assert first == second == {"status": 500}
    assert first is not second


async def test_a_seeded_rng_makes_a_run_repeatable() -> None:
    async def pattern(seed: int) -> list[bool]:
        chaos = Chaos(enabled=True, fault_rate=0.3, rng=random.Random(seed))
        failed: list[bool] = []
        for _ in range(1000):
            try:
                await chaos.call(Provider().charge)
            except ConnectionError:
                failed.append(True)
            else:
                failed.append(False)
        return failed

    first = await pattern(42)
    second = await pattern(42)

    assert first == second
    assert 250 <= sum(first) <= 350


async def test_each_injection_is_reported() -> None:
    clock = FakeClock()
    hub, seen = recorder()
    chaos = Chaos(
        enabled=True,
        latency_rate=1.0,
        latency=2,
        fault_rate=1.0,
        name="payments",
        clock=clock,
        events=hub,
    )

    with pytest.raises(ConnectionError):
        await chaos.call(Provider().charge)

    assert [(e.kind, e.policy, e.name, e.attributes["injection"]) for e in seen] == [
        ("chaos_injected", "chaos", "payments", "latency"),
        ("chaos_injected", "chaos", "payments", "fault"),
    ]
    assert seen[0].attributes["seconds"] == 2


async def test_a_rehearsed_outage_is_absorbed_by_the_fallback() -> None:
    chaos = Chaos(enabled=True, fault_rate=1.0)
    pipeline = Pipeline([chaos, Fallback(value="queued for later")])
    provider = Provider()

    result = await pipeline.call(provider.charge, 100)

    assert result == "queued for later"
    assert provider.calls == 0
    assert pipeline.stages[-1] is chaos


async def test_the_decorator_applies_chaos_to_every_call() -> None:
    chaos = Chaos(enabled=True, result_rate=1.0, result="bad")

    @chaos
    async def charge(amount: int) -> str:
        return "charged"

    result = await charge(100)

    assert result == "bad"
    assert charge.__name__ == "charge"


# --- options ---------------------------------------------------------------------


@pytest.mark.parametrize("option", ["fault_rate", "latency_rate", "result_rate"])
def test_a_rate_outside_zero_to_one_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be between 0 and 1"):
        Chaos(**{option: 1.5}, result="bad")  # type: ignore[arg-type]  # one rate per case


def test_a_result_rate_without_a_result_is_refused() -> None:
    with pytest.raises(ValueError, match="result="):
        Chaos(result_rate=0.1)


def test_enabled_must_be_a_bool_or_a_callable() -> None:
    chaos = Chaos()

    with pytest.raises(TypeError, match="enabled"):
        chaos.enabled = "yes"  # type: ignore[assignment]  # the misuse under test


def test_a_fault_that_is_not_an_exception_is_refused() -> None:
    with pytest.raises(ValueError, match="fault must be an Exception"):
        Chaos(fault=KeyboardInterrupt())
