"""`seawall.resilience.Fallback`: values and handlers on chosen errors, and "cached or default"."""

from __future__ import annotations

import asyncio

import pytest

from seawall.errors import CircuitOpenError
from seawall.resilience import CallContext, EventHub, Pipeline, ResilienceEvent
from seawall.resilience._cache import Cache
from seawall.resilience._fallback import Fallback
from seawall.testing import FakeClock

DEFAULT = {"rates": {}, "source": "default"}


class Provider:
    def __init__(self) -> None:
        self.calls = 0
        self.result: object = {"rates": {"EUR": 0.086}, "source": "live"}
        self.error: Exception | None = None

    async def rates(self, base: str = "NOK") -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def recorder() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


async def test_a_successful_call_returns_its_result_and_reports_nothing() -> None:
    hub, seen = recorder()
    fallback = Fallback(value=DEFAULT, events=hub)

    result = await fallback.call(Provider().rates)

    assert result == {"rates": {"EUR": 0.086}, "source": "live"}
    assert seen == []


async def test_a_failure_returns_the_value_and_reports_the_reason() -> None:
    hub, seen = recorder()
    fallback = Fallback(value=DEFAULT, name="currency", events=hub)
    provider = Provider()
    provider.error = ConnectionError("refused")

    result = await fallback.call(provider.rates)

    assert result is DEFAULT
    assert [(e.kind, e.policy, e.name) for e in seen] == [("fallback_used", "fallback", "currency")]
    assert seen[0].attributes["reason"] == "ConnectionError"


async def test_none_is_a_valid_fallback_value() -> None:
    fallback = Fallback(value=None)
    provider = Provider()
    provider.error = ConnectionError("refused")

    result = await fallback.call(provider.rates)

    assert result is None


async def test_an_open_circuit_falls_back_by_default() -> None:
    fallback = Fallback(value=DEFAULT)

    async def guarded() -> object:
        raise CircuitOpenError(breaker="currency", retry_after=12.0)

    result = await fallback.call(guarded)

    assert result is DEFAULT


async def test_errors_outside_on_propagate() -> None:
    fallback = Fallback(value=DEFAULT, on=(ConnectionError, CircuitOpenError))
    provider = Provider()
    provider.error = KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await fallback.call(provider.rates)


async def test_a_sync_handler_gets_the_error_and_the_context() -> None:
    seen: list[tuple[str, str]] = []

    def handler(error: Exception | None, context: CallContext) -> str:
        seen.append((type(error).__name__, context.operation))
        return "from handler"

    fallback = Fallback(handler=handler)
    provider = Provider()
    provider.error = TimeoutError()

    result = await fallback.call(provider.rates)

    assert result == "from handler"
    assert seen == [("TimeoutError", "Provider.rates")]


async def test_an_async_handler_is_awaited() -> None:
    async def handler(error: Exception | None, context: CallContext) -> str:
        await asyncio.sleep(0)
        return f"degraded after {type(error).__name__}"

    fallback = Fallback(handler=handler)
    provider = Provider()
    provider.error = ConnectionError()

    result = await fallback.call(provider.rates)

    assert result == "degraded after ConnectionError"


async def test_a_rejected_result_is_replaced_and_the_handler_gets_none() -> None:
    errors: list[Exception | None] = []

    def handler(error: Exception | None, context: CallContext) -> object:
        errors.append(error)
        return DEFAULT

    hub, seen = recorder()
    fallback = Fallback(
        handler=handler, result_predicate=lambda r: r["source"] != "live", events=hub
    )
    provider = Provider()
    provider.result = {"rates": {}, "source": "maintenance page"}

    result = await fallback.call(provider.rates)

    assert result is DEFAULT
    assert errors == [None]
    assert seen[0].attributes["reason"] == "result"


async def test_a_cancelled_call_is_never_replaced() -> None:
    started = asyncio.Event()
    fallback = Fallback(value=DEFAULT)

    async def slow() -> object:
        started.set()
        await asyncio.Event().wait()
        return None

    task = asyncio.create_task(fallback.call(slow))
    await started.wait()

    task.cancel()
    outcome = await asyncio.gather(task, return_exceptions=True)

    assert isinstance(outcome[0], asyncio.CancelledError)


async def test_the_decorator_keeps_the_function_and_falls_back() -> None:
    provider = Provider()
    provider.error = ConnectionError()

    @Fallback(value=DEFAULT)
    async def rates(base: str) -> object:
        return await provider.rates(base)

    result = await rates("NOK")

    assert result is DEFAULT
    assert rates.__name__ == "rates"


async def test_cached_or_default_in_one_line() -> None:
    clock = FakeClock()
    provider = Provider()
    pipeline = Pipeline([Fallback(value=DEFAULT), Cache(ttl=60, stale_ttl=3600, clock=clock)])
    provider.error = ConnectionError("down before anything was cached")
    before_any_success = await pipeline.call(provider.rates, "NOK")
    provider.error = None
    live = await pipeline.call(provider.rates, "NOK")
    provider.error = ConnectionError("down again")
    clock.advance(120)

    stale = await pipeline.call(provider.rates, "NOK")
    clock.advance(3600)
    too_old = await pipeline.call(provider.rates, "NOK")

    assert before_any_success is DEFAULT
    assert live == {"rates": {"EUR": 0.086}, "source": "live"}
    assert stale == live
    assert too_old is DEFAULT


def test_exactly_one_of_value_and_handler_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Fallback()
    with pytest.raises(ValueError, match="exactly one"):
        Fallback(value=1, handler=lambda error, context: 2)


def test_on_refuses_base_exceptions() -> None:
    with pytest.raises(ValueError, match="Exception subclasses"):
        Fallback(value=1, on=(BaseException,))  # type: ignore[arg-type]  # the misuse under test


def test_a_handler_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="callable"):
        Fallback(handler="default")  # type: ignore[arg-type]  # the misuse under test
