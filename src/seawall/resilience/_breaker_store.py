"""`BreakerStore`: where circuit breakers keep the state they share across processes.

A store holds a breaker's state, the end of its open period and the half-open
probe leases (`SharedState`, `ProbeGrant`), and applies the `next_state`
transitions atomically; ``seawall.resilience.redis.RedisBreakerStore`` is the
Redis implementation. Without a store, a `CircuitBreaker` keeps its state in
the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from seawall.resilience._breaker_rules import BreakerState, Trigger

__all__ = ["BreakerStore", "ProbeGrant", "SharedState"]


@dataclass(frozen=True, slots=True)
class SharedState:
    """A breaker's state as a `BreakerStore` holds it for the whole fleet.

    Attributes:
        state: the shared state (an open state whose period is over is still
            reported open, with *remaining* 0: the next probe moves it on).
        remaining: seconds until an open breaker lets a probe through.
        generation: bumped by every transition, so a process can tell that
            the breaker moved on while it was not looking.
    """

    state: BreakerState
    remaining: float = 0.0
    generation: int = 0


class ProbeGrant(NamedTuple):
    """The answer of `BreakerStore.acquire_probe`.

    Attributes:
        shared: the shared state after the attempt.
        lease: the probe lease to pass back when the probe ends, or None when
            no slot was free (or the breaker is closed: see *shared*).
    """

    shared: SharedState
    lease: str | None


class BreakerStore(Protocol):
    """Where breakers keep the state they share with other processes.

    Failure counting stays in each process; the store holds the state, the
    end of the open period and the half-open probe leases, and makes every
    change atomically. Breakers read it through a local cache renewed every
    ``refresh_interval`` seconds, so the call path of an open breaker never
    waits on the store.
    """

    refresh_interval: float

    async def load(self, name: str) -> SharedState:
        """Read the shared state of breaker *name*."""
        ...

    async def transition(self, name: str, trigger: Trigger, *, open_for: float) -> SharedState:
        """Apply *trigger* atomically (see `next_state`); an open state lasts *open_for*."""
        ...

    async def acquire_probe(self, name: str, *, max_calls: int) -> ProbeGrant:
        """Take one of *max_calls* fleet-wide probe slots if the breaker is half-open (or due)."""
        ...

    async def probe_succeeded(self, name: str, lease: str, *, needed: int) -> SharedState:
        """Count a successful probe; close the breaker once *needed* probes succeeded.

        A probe granted in a half-open period that is over (the breaker was
        forced open or closed, or re-opened, since) counts for nothing.
        """
        ...

    async def probe_failed(self, name: str, lease: str, *, open_for: float) -> SharedState:
        """Open the breaker for *open_for* seconds because the probe holding *lease* failed.

        Only a probe granted in the current half-open period opens it: a late
        failure from an earlier period leaves the state unchanged.
        """
        ...

    async def release_probe(self, name: str, lease: str) -> None:
        """Give a probe slot back unused (the probe was cancelled or proved nothing)."""
        ...

    async def clear(self, name: str) -> None:
        """Forget breaker *name*: it is closed for everyone."""
        ...
