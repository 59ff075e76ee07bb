"""The consecutive-failures breaker, driven by hypothesis, agrees with a ten-line model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from seawall.errors import CircuitOpenError
from seawall.resilience import BreakerState, CircuitBreaker, EventHub
from seawall.testing import FakeClock

THRESHOLD = 3
RECOVERY = 10.0


class BoomError(Exception):
    pass


@dataclass
class Model:
    """The reference: what a consecutive-failures breaker should do, nothing more."""

    state: str = "closed"
    failures: int = 0
    until: float = 0.0

    def effective(self, now: float) -> str:
        if self.state == "open" and now >= self.until:
            self.state = "half_open"
        return self.state

    def outcome(self, failed: bool, now: float) -> None:
        if self.state == "half_open":
            self.state, self.failures = ("open", 0) if failed else ("closed", 0)
            self.until = now + RECOVERY
        elif failed:
            self.failures += 1
            if self.failures >= THRESHOLD:
                self.state, self.failures, self.until = "open", 0, now + RECOVERY
        else:
            self.failures = 0

    def admitted(self, callers: int, now: float) -> int:
        state = self.effective(now)
        if state == "open":
            return 0
        return 1 if state == "half_open" else callers


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.model = Model()
        self.breaker = CircuitBreaker(
            name="model",
            failure_threshold=THRESHOLD,
            recovery_timeout=RECOVERY,
            clock=self.clock,
            events=EventHub(),
        )

    def teardown(self) -> None:
        self.loop.close()

    def _calls(self, callers: int, failed: bool) -> tuple[int, int]:
        started = 0
        gate = asyncio.Event()

        async def service() -> int:
            nonlocal started
            started += 1
            await gate.wait()
            if failed:
                raise BoomError
            return 1

        async def run_all() -> list[object]:
            tasks = [asyncio.create_task(self.breaker.call(service)) for _ in range(callers)]
            await asyncio.sleep(0)
            gate.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = self.loop.run_until_complete(run_all())
        rejected = sum(isinstance(r, CircuitOpenError) for r in results)
        return started, rejected

    @rule(failed=st.booleans())
    def one_call(self, failed: bool) -> None:
        now = self.clock.monotonic()
        expected = self.model.admitted(1, now)

        started, rejected = self._calls(1, failed)

        assert (started, rejected) == (expected, 1 - expected)
        if expected:
            self.model.outcome(failed, now)

    @rule(callers=st.integers(2, 20), failed=st.booleans())
    def concurrent_calls(self, callers: int, failed: bool) -> None:
        now = self.clock.monotonic()
        expected = self.model.admitted(callers, now)

        started, rejected = self._calls(callers, failed)

        assert (started, rejected) == (expected, callers - expected)
        for _ in range(expected):
            self.model.outcome(failed, now)
            if self.model.state != "closed":
                break  # late outcomes after the breaker opened count for nothing

    @rule(seconds=st.floats(0.0, 2 * RECOVERY, allow_nan=False))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.model.state == "closed")
    @rule()
    def force_open(self) -> None:
        self.loop.run_until_complete(self.breaker.open())
        self.model.state, self.model.failures = "open", 0
        self.model.until = self.clock.monotonic() + RECOVERY

    @invariant()
    def states_agree(self) -> None:
        now = self.clock.monotonic()
        expected = self.model.effective(now)

        actual = self.breaker.state

        assert actual is BreakerState(expected)
        if expected == "open":
            assert self.breaker.retry_after == self.model.until - now
        if expected == "closed":
            assert self.breaker.failure_count == self.model.failures


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_breaker_matches_the_model = BreakerMachine.TestCase
