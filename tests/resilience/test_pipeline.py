"""`seawall.resilience.Pipeline`: order, context, decorator; and the event hub."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from seawall.observability import PrometheusSubscriber, StructlogSubscriber
from seawall.resilience import CallContext, EventHub, Pipeline, ResilienceEvent
from seawall.resilience._context import (
    STAGE_ATTEMPT_TIMEOUT,
    STAGE_CIRCUIT_BREAKER,
    STAGE_FALLBACK,
    STAGE_RETRY,
    STAGE_TOTAL_TIMEOUT,
    Thunk,
)


class Recorder:
    """A policy that records the order in which it was entered."""

    stage: ClassVar[int] = 0

    def __init__(self, name: str, stage: int, trail: list[str]) -> None:
        self.name = name
        self.stage = stage  # type: ignore[misc]  # per-instance stage for the test
        self.trail = trail

    async def run(self, thunk: Thunk[Any], context: CallContext) -> Any:
        self.trail.append(self.name)
        return await thunk()


class Split:
    """A policy standing at two positions, as a Timeout does."""

    def __init__(self, trail: list[str]) -> None:
        self.outer = Recorder("split-total", STAGE_TOTAL_TIMEOUT, trail)
        self.inner = Recorder("split-attempt", STAGE_ATTEMPT_TIMEOUT, trail)

    def pipeline_stages(self) -> tuple[Recorder, Recorder]:
        return (self.outer, self.inner)


async def add(a: int, b: int = 0) -> int:
    return a + b


async def test_policies_run_in_the_canonical_order() -> None:
    trail: list[str] = []
    pipeline = Pipeline(
        [
            Recorder("breaker", STAGE_CIRCUIT_BREAKER, trail),
            Recorder("fallback", STAGE_FALLBACK, trail),
            Recorder("retry", STAGE_RETRY, trail),
        ]
    )

    result = await pipeline.call(add, 1, b=2)

    assert result == 3
    assert trail == ["fallback", "retry", "breaker"]


async def test_ordered_false_keeps_the_given_order() -> None:
    trail: list[str] = []
    pipeline = Pipeline(
        [Recorder("breaker", STAGE_CIRCUIT_BREAKER, trail), Recorder("retry", STAGE_RETRY, trail)],
        ordered=False,
    )

    await pipeline.call(add, 1)

    assert trail == ["breaker", "retry"]


async def test_a_policy_can_stand_at_two_positions() -> None:
    trail: list[str] = []
    pipeline = Pipeline([Split(trail), Recorder("retry", STAGE_RETRY, trail)])

    await pipeline.call(add, 1)

    assert trail == ["split-total", "retry", "split-attempt"]


async def test_every_stage_sees_the_same_context() -> None:
    seen: list[CallContext] = []

    class Peek(Recorder):
        async def run(self, thunk: Thunk[Any], context: CallContext) -> Any:
            seen.append(context)
            return await thunk()

    pipeline = Pipeline([Peek("a", 1, []), Peek("b", 2, [])])

    await pipeline.call(add, 4, b=5)

    assert seen[0] is seen[1]
    assert seen[0].operation == "add"
    assert (seen[0].args, seen[0].kwargs) == ((4,), {"b": 5})
    assert seen[0].partition() == "add:(4,):[('b', 5)]"


async def test_decorated_function_keeps_its_name_and_runs_through_the_pipeline() -> None:
    trail: list[str] = []
    pipeline = Pipeline([Recorder("only", 1, trail)])

    @pipeline
    async def multiply(a: int, b: int) -> int:
        return a * b

    result = await multiply(6, 7)

    assert result == 42
    assert multiply.__name__ == "multiply"
    assert trail == ["only"]


async def test_a_thunk_can_be_run_again_for_a_new_attempt() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    class TwoTries(Recorder):
        async def run(self, thunk: Thunk[Any], context: CallContext) -> Any:
            try:
                return await thunk()
            except ConnectionError:
                return await thunk()

    result = await Pipeline([TwoTries("retry", STAGE_RETRY, [])]).call(flaky)

    assert result == "ok"
    assert calls == 2


def test_something_that_is_not_a_policy_is_refused() -> None:
    with pytest.raises(TypeError, match="not a resilience policy"):
        Pipeline([object()])


def test_an_empty_hub_is_falsy_and_builds_no_event() -> None:
    hub = EventHub()

    hub.emit("attempt", "retry", "x", attempt=1)

    assert not hub


def test_subscribers_receive_events_until_they_unsubscribe() -> None:
    hub = EventHub()
    got: list[ResilienceEvent] = []
    unsubscribe = hub.subscribe(got.append)

    hub.emit("breaker_opened", "circuit_breaker", "payments", failures=5)
    unsubscribe()
    hub.emit("breaker_closed", "circuit_breaker", "payments")

    assert got == [
        ResilienceEvent("breaker_opened", "circuit_breaker", "payments", {"failures": 5})
    ]
    assert not hub


def test_a_failing_subscriber_does_not_break_the_others(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub()
    got: list[str] = []

    def broken(event: ResilienceEvent) -> None:
        raise RuntimeError("observer bug")

    hub.subscribe(broken)
    hub.subscribe(lambda event: got.append(event.kind))

    hub.emit("rate_limited", "rate_limit", "crm")

    assert got == ["rate_limited"]
    assert "observer bug" in caplog.text


def test_prometheus_subscriber_counts_events_and_tracks_breaker_state() -> None:
    registry = CollectorRegistry()
    subscriber = PrometheusSubscriber(registry)

    for kind in ("breaker_opened", "call_rejected", "call_rejected", "breaker_half_opened"):
        subscriber(ResilienceEvent(kind, "circuit_breaker", "payments"))

    labels = {"policy": "circuit_breaker", "name": "payments", "kind": "call_rejected"}
    rejected = registry.get_sample_value("seawall_resilience_events_total", labels)
    state = registry.get_sample_value("seawall_breaker_state", {"name": "payments"})
    assert rejected == 2
    assert state == 1


def test_structlog_subscriber_logs_the_event_kind_and_facts() -> None:
    import structlog.testing

    with structlog.testing.capture_logs() as logs:
        StructlogSubscriber()(ResilienceEvent("retry_scheduled", "retry", "crm", {"delay_s": 0.5}))

    assert logs == [
        {
            "event": "retry_scheduled",
            "policy": "retry",
            "name": "crm",
            "delay_s": 0.5,
            "log_level": "info",
        }
    ]


async def test_pipeline_calls_can_run_concurrently() -> None:
    pipeline = Pipeline([Recorder("only", 1, [])])

    results = await asyncio.gather(*(pipeline.call(add, n) for n in range(50)))

    assert results == list(range(50))


def test_importing_resilience_loads_no_database_web_bus_or_redis_client() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, seawall.resilience; "
        "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'nats', 'redis') if m in sys.modules))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == "[]"
