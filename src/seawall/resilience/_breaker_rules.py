"""The circuit breaker's pure core: its states, the transition table and the decisions.

`next_state` is a transition table, `admit` decides whether a call may pass and
`should_trip` whether the recorded outcomes (`WindowStats`) meet the opening
rules (`TripRules`). Nothing here reads a clock, takes a lock or does I/O:
`CircuitBreaker` is the thin shell around these functions, and the Lua scripts
of `RedisBreakerStore` write out the same `TRANSITIONS` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, NamedTuple

__all__ = [
    "TRANSITIONS",
    "Admission",
    "BreakerState",
    "Decision",
    "Trigger",
    "TripRules",
    "WindowStats",
    "admit",
    "next_state",
    "should_trip",
]


class BreakerState(StrEnum):
    """Where a circuit breaker stands. A `StrEnum`, so ``state == "open"`` also works."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Trigger(StrEnum):
    """What can move a breaker from one state to another."""

    TRIPPED = "tripped"
    """The opening rule was met while closed."""
    RECOVERY_ELAPSED = "recovery_elapsed"
    """The open period is over: the next call may probe."""
    PROBE_FAILED = "probe_failed"
    """A half-open probe failed (or was slow under a slow-call rule)."""
    PROBES_SUCCEEDED = "probes_succeeded"
    """Every half-open probe succeeded."""
    FORCED_OPEN = "forced_open"
    """`CircuitBreaker.open` was called."""
    FORCED_CLOSED = "forced_closed"
    """`CircuitBreaker.close` or `CircuitBreaker.reset` was called."""


_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN

TRANSITIONS: Final[dict[tuple[BreakerState, Trigger], BreakerState]] = {
    (_CLOSED, Trigger.TRIPPED): _OPEN,
    (_OPEN, Trigger.RECOVERY_ELAPSED): _HALF_OPEN,
    (_HALF_OPEN, Trigger.PROBE_FAILED): _OPEN,
    (_HALF_OPEN, Trigger.PROBES_SUCCEEDED): _CLOSED,
    **{(state, Trigger.FORCED_OPEN): _OPEN for state in BreakerState},
    **{(state, Trigger.FORCED_CLOSED): _CLOSED for state in BreakerState},
}
"""The whole state machine: (state, trigger) -> next state. Missing pairs change nothing."""


def next_state(state: BreakerState, trigger: Trigger) -> BreakerState:
    """Return the state a breaker in *state* moves to on *trigger*.

    A trigger that does not apply in *state* (a late failure arriving while
    the circuit is already open, say) leaves the state unchanged.
    """
    return TRANSITIONS.get((state, trigger), state)


class Admission(Enum):
    """What `admit` decided for one call."""

    CALL = "call"
    """Closed: run the call and count its outcome."""
    PROBE = "probe"
    """Half-open: run the call as a probe (it takes a probe slot)."""
    REJECT = "reject"
    """Open, or half-open with every probe slot taken: fail fast."""


class Decision(NamedTuple):
    """The result of `admit`: the admission and the state the breaker is now in."""

    admission: Admission
    state: BreakerState
    retry_after: float


def admit(
    state: BreakerState,
    *,
    now: float,
    opened_until: float,
    probes_taken: int,
    half_open_max_calls: int,
) -> Decision:
    """Decide whether a call may pass.

    An open breaker whose open period is over becomes half-open here (lazily,
    when a call arrives), and the call takes a probe slot if one is free.

    Args:
        state: the breaker's current state.
        now: the current monotonic time.
        opened_until: when the open period ends (ignored unless open).
        probes_taken: probe slots already taken in this half-open period.
        half_open_max_calls: probe slots per half-open period.

    Returns:
        The admission, the (possibly new) state, and for a rejection the
        seconds until a probe may be let through (0 when half-open).
    """
    if state is _CLOSED:
        return Decision(Admission.CALL, state, 0.0)
    if state is _OPEN:
        if now < opened_until:
            return Decision(Admission.REJECT, state, opened_until - now)
        state, probes_taken = _HALF_OPEN, 0
    if probes_taken < half_open_max_calls:
        return Decision(Admission.PROBE, state, 0.0)
    return Decision(Admission.REJECT, state, 0.0)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Counts of the calls a breaker is judging.

    Attributes:
        calls: calls recorded (in the window, or the current run of failures).
        failures: of which failed.
        slow: of which were slow.
    """

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures as a fraction of calls (0.0 with no calls)."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls as a fraction of calls (0.0 with no calls)."""
        return self.slow / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class TripRules:
    """When a closed breaker opens (see `should_trip`).

    Attributes:
        failure_threshold: open at this many failures (consecutive, or in the
            window); None for no count rule.
        failure_rate_threshold: open at this failure fraction (0-1]; None for none.
        slow_call_rate_threshold: open at this slow-call fraction (0-1]; None for none.
        minimum_calls: the rate rules wait for this many calls in the window.
    """

    failure_threshold: int | None = 5
    failure_rate_threshold: float | None = None
    slow_call_rate_threshold: float | None = None
    minimum_calls: int = 1


def should_trip(stats: WindowStats, rules: TripRules) -> bool:
    """Whether *stats* meet any opening rule in *rules*."""
    if rules.failure_threshold is not None and stats.failures >= rules.failure_threshold:
        return True
    if stats.calls == 0 or stats.calls < rules.minimum_calls:
        return False
    if (
        rules.failure_rate_threshold is not None
        and stats.failures >= rules.failure_rate_threshold * stats.calls
    ):
        return True
    return (
        rules.slow_call_rate_threshold is not None
        and stats.slow >= rules.slow_call_rate_threshold * stats.calls
    )
