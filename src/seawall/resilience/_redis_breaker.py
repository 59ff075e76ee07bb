"""`RedisBreakerStore`: circuit breaker state shared by every process through Redis.

Each breaker keeps a hash ``{prefix}{name}`` with its state, the end of the
open period (in Redis server time, so the hosts' clocks never need to agree)
and a generation bumped by every transition; half-open probes take leases
``{prefix}{name}:probe:<n>`` with ``SET NX PX``. A lease names the generation
it was granted in, so the outcome of a probe from a half-open period that is
over is ignored instead of moving a newer period. Every decision is one Lua
script: one round trip, atomic across the fleet. The transition table in the
scripts is `seawall.resilience.next_state`'s, written out in Lua.

Failure counting stays in each process (a shared counter would cost a round
trip per call); the state, the open deadline and the probe leases are shared.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, Final

from redis.asyncio import Redis

from seawall.resilience._breaker_rules import BreakerState, Trigger
from seawall.resilience._breaker_store import ProbeGrant, SharedState
from seawall.resilience._clock import seconds

__all__ = ["RedisBreakerStore"]

# Shared by every script: Redis server time in ms, and the breaker's hash.
_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen')
local state = v[1] or 'closed'
local untl = tonumber(v[2]) or 0
local gen = tonumber(v[3]) or 0
local function remaining()
  if state == 'open' and untl > now then return untl - now end
  return 0
end
local function move(new, open_ms)
  gen = gen + 1
  state = new
  if new == 'open' then untl = now + open_ms else untl = 0 end
  redis.call('HSET', KEYS[1], 'state', new, 'until', untl, 'gen', gen, 'successes', 0)
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
end
"""

# KEYS: hash, probe slots. Returns {state, remaining_ms, generation}.
_LOAD: Final = _PRELUDE + "return {state, remaining(), gen}"

# KEYS: hash, probe slots. ARGV: trigger, open_ms. The TRANSITIONS table of _breaker_rules.py.
_TRANSITION: Final = (
    _PRELUDE
    + """
local trigger = ARGV[1]
local new = nil
if trigger == 'forced_open' then new = 'open'
elseif trigger == 'forced_closed' then if state ~= 'closed' then new = 'closed' end
elseif trigger == 'tripped' then if state == 'closed' then new = 'open' end
elseif trigger == 'probe_failed' then if state == 'half_open' then new = 'open' end
elseif trigger == 'probes_succeeded' then if state == 'half_open' then new = 'closed' end
elseif trigger == 'recovery_elapsed' then
  if state == 'open' and now >= untl then new = 'half_open' end
end
if new then move(new, tonumber(ARGV[2])) end
return {state, remaining(), gen}
"""
)

# KEYS: hash, probe slots 1..n. ARGV: lease_ms, token.
# Returns {slot or 0, state, remaining_ms, generation}; slot -1 means closed.
_ACQUIRE: Final = (
    _PRELUDE
    + """
if state == 'closed' then return {-1, state, 0, gen} end
if state == 'open' then
  if now < untl then return {0, state, untl - now, gen} end
  move('half_open', 0)
end
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2], 'NX', 'PX', ARGV[1]) then
    return {i - 1, state, 0, gen}
  end
end
return {0, state, 0, gen}
"""
)

# KEYS: hash, probe slots. ARGV: needed successes, slot, token, the lease's generation.
_SUCCEEDED: Final = (
    _PRELUDE
    + """
if state ~= 'half_open' or gen ~= tonumber(ARGV[4]) then return {state, remaining(), gen} end
local slot = KEYS[1 + tonumber(ARGV[2])]
if redis.call('GET', slot) ~= ARGV[3] then return {state, remaining(), gen} end
if redis.call('HINCRBY', KEYS[1], 'successes', 1) >= tonumber(ARGV[1]) then
  move('closed', 0)
end
return {state, remaining(), gen}
"""
)

# KEYS: hash, probe slots. ARGV: the lease's generation, open_ms.
# Judged by generation, not by the slot: a probe that outlived its lease still
# speaks for its own half-open period, and only for that one.
_FAILED: Final = (
    _PRELUDE
    + """
if state == 'half_open' and gen == tonumber(ARGV[1]) then move('open', tonumber(ARGV[2])) end
return {state, remaining(), gen}
"""
)

# KEYS: the probe slot. ARGV: token. Deletes the lease only if it is still ours.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _lease(slot: Any, generation: Any, token: str) -> str:
    return f"{int(slot)}:{int(generation)}:{token}"


def _parse_lease(lease: str) -> tuple[int, int, str]:
    """(slot, generation, token) of a lease made by `_lease`."""
    slot, generation, token = lease.split(":", 2)
    return int(slot), int(generation), token


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shared(state: Any, remaining_ms: Any, generation: Any) -> SharedState:
    return SharedState(BreakerState(_text(state)), int(remaining_ms) / 1000.0, int(generation))


class RedisBreakerStore:
    """Shares circuit breaker state across processes through Redis.

    Pass it to any number of breakers (``CircuitBreaker(name=..., store=store)``);
    breakers with the same name share one state fleet-wide. When one process
    opens a breaker, every process rejects calls within *refresh_interval*
    (at once for its next call if it had nothing cached), without a Redis
    round trip per rejected call.

    Args:
        redis: a ``redis.asyncio.Redis`` client.
        prefix: prepended to every key (one prefix per application/environment).
        refresh_interval: how long a breaker trusts its cached copy of the state
            before re-reading it in the background (seconds or timedelta).
        probe_lease: how long a half-open probe holds its slot if its process
            dies before reporting the outcome.
        max_probe_slots: upper bound for ``half_open_max_calls`` with this store.

    Raises:
        ValueError: a duration is not positive or *max_probe_slots* is below 1.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "seawall:breaker:",
        refresh_interval: float | timedelta = 0.5,
        probe_lease: float | timedelta = 30.0,
        max_probe_slots: int = 16,
    ) -> None:
        if max_probe_slots < 1:
            raise ValueError("max_probe_slots must be at least 1")
        self.redis = redis
        self.prefix = prefix
        self.refresh_interval = seconds(refresh_interval, name="refresh_interval")
        self.probe_lease = seconds(probe_lease, name="probe_lease")
        self.max_probe_slots = max_probe_slots
        self._load = redis.register_script(_LOAD)
        self._transition = redis.register_script(_TRANSITION)
        self._acquire = redis.register_script(_ACQUIRE)
        self._succeeded = redis.register_script(_SUCCEEDED)
        self._failed = redis.register_script(_FAILED)
        self._release = redis.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"RedisBreakerStore(prefix={self.prefix!r})"

    def _keys(self, name: str, slots: int) -> list[str]:
        # The hash tag keeps one breaker's keys in one cluster slot, as scripts need.
        base = f"{self.prefix}{{{name}}}"
        return [base, *(f"{base}:probe:{i}" for i in range(1, slots + 1))]

    def _slots(self, max_calls: int) -> int:
        if max_calls > self.max_probe_slots:
            raise ValueError(f"half_open_max_calls above this store's {self.max_probe_slots}")
        return max_calls

    async def load(self, name: str) -> SharedState:
        """Read the shared state of breaker *name* (closed if never stored)."""
        state, remaining, generation = await self._load(keys=self._keys(name, 0))
        return _shared(state, remaining, generation)

    async def transition(self, name: str, trigger: Trigger, *, open_for: float) -> SharedState:
        """Apply *trigger* atomically; an open state lasts *open_for* seconds.

        Probe leases are dropped on every transition.
        """
        keys = self._keys(name, self.max_probe_slots)
        args = [trigger.value, round(open_for * 1000)]
        state, remaining, generation = await self._transition(keys=keys, args=args)
        return _shared(state, remaining, generation)

    async def acquire_probe(self, name: str, *, max_calls: int) -> ProbeGrant:
        """Take a fleet-wide probe slot (``SET NX PX``) if the breaker is (due to be) half-open.

        An open breaker whose period is over moves to half-open here.

        Returns:
            The shared state and the lease (None when no slot was free, or
            when the breaker is closed).
        """
        token = secrets.token_hex(8)
        keys = self._keys(name, self._slots(max_calls))
        lease_ms = max(1, round(self.probe_lease * 1000))
        slot, state, remaining, generation = await self._acquire(keys=keys, args=[lease_ms, token])
        lease = _lease(slot, generation, token) if int(slot) > 0 else None
        return ProbeGrant(_shared(state, remaining, generation), lease)

    async def probe_succeeded(self, name: str, lease: str, *, needed: int) -> SharedState:
        """Count a successful probe; close the breaker once *needed* probes succeeded.

        The success counts only while *lease* is still held in the half-open
        period it was granted in.
        """
        slot, granted, token = _parse_lease(lease)
        keys = self._keys(name, self._slots(needed))
        state, remaining, generation = await self._succeeded(
            keys=keys, args=[needed, slot, token, granted]
        )
        return _shared(state, remaining, generation)

    async def probe_failed(self, name: str, lease: str, *, open_for: float) -> SharedState:
        """Open the breaker for *open_for* seconds if *lease*'s half-open period is current.

        A failure reported after the breaker moved on (forced open or closed,
        or re-opened and half-open again) leaves the state unchanged.
        """
        _, granted, _ = _parse_lease(lease)
        keys = self._keys(name, self.max_probe_slots)
        args = [granted, round(open_for * 1000)]
        state, remaining, generation = await self._failed(keys=keys, args=args)
        return _shared(state, remaining, generation)

    async def release_probe(self, name: str, lease: str) -> None:
        """Give a probe slot back if the lease is still ours."""
        slot, _, token = _parse_lease(lease)
        await self._release(keys=[self._keys(name, slot)[-1]], args=[token])

    async def clear(self, name: str) -> None:
        """Delete breaker *name*'s state and leases: it is closed for everyone."""
        await self.redis.delete(*self._keys(name, self.max_probe_slots))
