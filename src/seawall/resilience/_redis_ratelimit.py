"""`RedisRateLimitStorage`: one rate limit shared by every process, one round trip per decision.

Each decision is one Lua script run with ``EVALSHA``, so reading the state,
deciding and writing it back is atomic however many processes ask at once.

Time comes from the Redis server (``TIME`` inside the script) unless a clock
is passed. A fleet's clocks disagree by milliseconds to seconds, and
monotonic clocks of different hosts are not comparable at all; a shared
limit must be judged on one clock, and the server's is the one every caller
sees. Scripts may call ``TIME`` before writing since Redis 5 (effects
replication), the default and only mode from Redis 7.

Keys: ``<prefix>{<limiter>:<key>}:<algorithm>:<amount>/<period>``. The braces
are a Redis Cluster hash tag, so the keys of one decision share a slot. A
partition longer than 100 characters is replaced by its BLAKE2b digest.

Costs per decision and per key on the server:

- ``token_bucket`` (GCRA): one string per rate holding the theoretical arrival
  time, with ``PEXPIRE`` set to when it stops mattering. O(1) time and memory.
- ``sliding_window_counter``: one hash per rate with the window number and its
  two counters. O(1) time and memory.
- ``moving_window``: one list of admission times, newest first, trimmed to
  the largest amount. Memory grows with the amount (about 10 bytes per
  admission: "100000/hour" keeps up to 100,000 entries, 1 MB, per key).
  ``LINDEX`` is O(amount) on paper but skips whole list nodes, so it stays
  small beside the round trip. Prefer the token bucket for large amounts.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from seawall.resilience._clock import Clock
from seawall.resilience._ratelimit import Algorithm, Rate

__all__ = ["RedisRateLimitStorage"]

# Shared by the scripts: the time in integer microseconds, from the caller or the server.
_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local max_delay = tonumber(ARGV[2])
"""

# Microsecond reals are written with 17 significant digits: Lua's tostring keeps
# only 14, which would round an epoch time in microseconds (16 digits).
_TOKEN_BUCKET = (
    _NOW
    + """
local tats = {}
local raws = {}
local at = now
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  local raw = redis.call('GET', KEYS[i])
  raws[i] = raw or ''
  local tat = tonumber(raw or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow = tat + interval - period
  if allow > at then at = allow end
end
local wait = at - now
if wait > max_delay + 1 then return -math.ceil(wait) end
for i = 1, #KEYS do
  local tat = tats[i]
  if tat < at then tat = at end
  tat = tat + tonumber(ARGV[2 * i + 1])
  redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
if wait < 1 then return 0 end
-- A reservation: also return the TATs before and after it ('' for none), to refund it.
local reply = {math.ceil(wait)}
for i = 1, #KEYS do
  reply[2 * i] = raws[i]
  reply[2 * i + 1] = redis.call('GET', KEYS[i])
end
return reply
"""
)

# Refunds: a slot reserved ahead is given back only once every later one on
# the same key has been (never someone else's slot). A refund that cannot be
# applied yet is recorded in a hash (the last KEYS), under the state its
# reservation left; the refund of the later slot then applies it too, so
# waiters may be cancelled in any order. A record whose later slot is used
# can never match again, and expires with the state.
#
# Token bucket: the state is the TATs (joined by spaces), and undoing a
# reservation puts back the TATs from before it.
# ARGV: now (unused), the TATs after the reservation, the TATs before it.
_GCRA_REFUND = (
    _NOW
    + """
local n = #KEYS - 1
local given = KEYS[n + 1]
local function state()
  local parts = {}
  for i = 1, n do parts[i] = redis.call('GET', KEYS[i]) or '' end
  return table.concat(parts, ' ')
end
redis.call('HSET', given, ARGV[2], ARGV[3])
local undone = 0
while true do
  local current = state()
  local before = redis.call('HGET', given, current)
  if not before then break end
  redis.call('HDEL', given, current)
  local i = 1
  for tat in string.gmatch(before .. ' ', '([^ ]*) ') do
    if tat == '' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], tat, 'KEEPTTL')
    end
    i = i + 1
  end
  undone = undone + 1
end
-- A record whose TATs have all passed can never match the state again.
local fields = redis.call('HKEYS', given)
for _, field in ipairs(fields) do
  local live = false
  for tat in string.gmatch(field, '[^ ]+') do
    if tonumber(tat) > now then live = true end
  end
  if not live then redis.call('HDEL', given, field) end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1000 end
redis.call('PEXPIRE', given, ttl)
return undone
"""
)

_SLIDING_WINDOW_COUNTER = (
    _NOW
    + """
local states = {}
local retry = 0
local refused = false
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  local window = math.floor(now / period)
  local s = redis.call('HMGET', KEYS[i], 'w', 'p', 'c')
  local seen = tonumber(s[1])
  local previous = tonumber(s[2]) or 0
  local current = tonumber(s[3]) or 0
  if seen ~= window then
    if seen == window - 1 then previous = current else previous = 0 end
    current = 0
  end
  local start = window * period
  local estimate = previous * (1 - (now - start) / period) + current
  if estimate + 1 > amount + 1e-9 then
    refused = true
    local at
    if current + 1 <= amount then
      at = start + period * (1 - (amount - 1 - current) / previous)
    else
      at = start + period + period * (1 - (amount - 1) / current)
    end
    if at - now > retry then retry = at - now end
  end
  states[i] = {window, previous, current}
end
if refused then return -math.max(1, math.ceil(retry)) end
for i = 1, #KEYS do
  local period = tonumber(ARGV[2 * i + 2])
  local s = states[i]
  redis.call('HSET', KEYS[i], 'w', string.format('%.17g', s[1]), 'p', s[2], 'c', s[3] + 1)
  redis.call('PEXPIRE', KEYS[i], math.ceil(2 * period / 1000) + 1)
end
return 0
"""
)

# The list holds admission times, newest first. It stays sorted even with
# reserved (future) times, so LINDEX amount-1 is the amount-th most recent.
_MOVING_WINDOW = (
    _NOW
    + """
local key = KEYS[1]
local at = now
local most = 0
local longest = 0
for i = 3, #ARGV, 2 do
  local amount = tonumber(ARGV[i])
  local period = tonumber(ARGV[i + 1])
  if amount > most then most = amount end
  if period > longest then longest = period end
  local entry = redis.call('LINDEX', key, amount - 1)
  if entry then
    local free = tonumber(entry) + period
    if free > at then at = free end
  end
end
local wait = at - now
if wait > max_delay + 1 then return -math.ceil(wait) end
local entry = string.format('%.17g', at)
local ttl = math.ceil((at - now + longest) / 1000) + 1
if wait < 1 then
  redis.call('LPUSH', key, entry)
  redis.call('LTRIM', key, 0, most - 1)
  redis.call('PEXPIRE', key, ttl)
  return 0
end
-- A reservation: its number among the reservations (field n of KEYS[2]), its
-- entry and the entry LTRIM drops are returned, for a refund to undo it.
local evicted = redis.call('LINDEX', key, most - 1) or ''
redis.call('LPUSH', key, entry)
redis.call('LTRIM', key, 0, most - 1)
redis.call('PEXPIRE', key, ttl)
local held = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('PEXPIRE', KEYS[2], ttl)
return {math.ceil(wait), tostring(held), entry, evicted}
"""
)

# Moving window: the state is the number of the last reservation still held
# (field n). Undoing one removes its entry (then the newest) and puts back what
# its LTRIM dropped, unless its time has come: calls admitted since without a
# reservation would then be newer. Records of slots whose time has come can
# never be applied, and are dropped.
# ARGV: now (empty: the server's), the reservation's number, its entry, the dropped entry.
_MOVING_WINDOW_REFUND = (
    _NOW
    + """
local key = KEYS[1]
local given = KEYS[2]
redis.call('HSET', given, 'g' .. ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
local undone = 0
while true do
  local last = redis.call('HGET', given, 'n')
  local record = last and redis.call('HGET', given, 'g' .. last)
  if not record then break end
  redis.call('HDEL', given, 'g' .. last)
  local entry, evicted = string.match(record, '^([^ ]+) (.*)$')
  if tonumber(entry) <= now or redis.call('LINDEX', key, 0) ~= entry then break end
  redis.call('LPOP', key)
  if evicted ~= '' then redis.call('RPUSH', key, evicted) end
  redis.call('HINCRBY', given, 'n', -1)
  undone = undone + 1
end
local fields = redis.call('HGETALL', given)
for i = 1, #fields, 2 do
  if fields[i] ~= 'n' and tonumber(string.match(fields[i + 1], '^[^ ]+')) <= now then
    redis.call('HDEL', given, fields[i])
  end
end
return undone
"""
)

_SCRIPTS: dict[str, str] = {
    "token_bucket": _TOKEN_BUCKET,
    "sliding_window_counter": _SLIDING_WINDOW_COUNTER,
    "moving_window": _MOVING_WINDOW,
}
_SHORT: dict[str, str] = {
    "token_bucket": "tb",
    "sliding_window_counter": "swc",
    "moving_window": "mw",
}
_REFUNDS: dict[str, str] = {
    "token_bucket": _GCRA_REFUND,
    "moving_window": _MOVING_WINDOW_REFUND,
}
_LONGEST_KEY = 100


def _micros(value: float) -> str:
    return f"{value * 1_000_000:.17g}"


def _text(value: Any) -> str:
    # Script replies are bytes unless the client decodes them.
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class RedisReservation:
    """A slot reserved ahead by `RedisRateLimitStorage.reserve`, as its refund needs it."""

    algorithm: str
    keys: tuple[str, ...]
    args: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _rate_args(rates: tuple[Rate, ...], algorithm: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The key suffixes and the script arguments for *rates* (cached: limits rarely change)."""
    suffixes = tuple(f"{rate.amount}/{rate.period:g}" for rate in rates)
    args: list[str] = []
    for rate in rates:
        first = rate.interval if algorithm == "token_bucket" else rate.amount
        args += (
            _micros(first) if algorithm == "token_bucket" else str(first),
            _micros(rate.period),
        )
    return suffixes, tuple(args)


class RedisRateLimitStorage:
    """Rate limit state in Redis, shared by every process that uses the same names.

    Pass it to `seawall.resilience.RateLimit` as ``storage=``. Limits with the
    same name, algorithm and rates share their budget per key across processes.

    Args:
        client: a ``redis.asyncio.Redis`` client (decoded or not).
        prefix: put before every key, to keep environments apart.
        clock: read ``clock.wall()`` for the time instead of the Redis server's
            ``TIME``. Only for tests, or a fleet whose clocks are known to agree.
    """

    __slots__ = ("_client", "_clock", "_prefix", "_refunds", "_scripts")

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "seawall:ratelimit:",
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._refunds = {name: client.register_script(src) for name, src in _REFUNDS.items()}

    def __repr__(self) -> str:
        return f"RedisRateLimitStorage(prefix={self._prefix!r})"

    async def acquire(
        self,
        limiter: str,
        key: str,
        rates: Sequence[Rate],
        algorithm: Algorithm,
        max_delay: float,
    ) -> float:
        """Decide one call for *key* in one atomic round trip.

        Args:
            limiter: the rate limit's name.
            key: the partition.
            rates: the limits that must all pass.
            algorithm: ``token_bucket``, ``sliding_window_counter`` or ``moving_window``.
            max_delay: how far ahead a slot may be reserved (the sliding
                window counter never reserves).

        Returns:
            ``0.0`` to go now, a positive delay when a slot was reserved that
            far ahead, or ``-retry_after`` when refused.

        Raises:
            ValueError: *algorithm* is unknown.
            redis.exceptions.RedisError: Redis could not be reached or refused the script.
        """
        result, _ = await self.reserve(limiter, key, rates, algorithm, max_delay)
        return result

    async def reserve(
        self,
        limiter: str,
        key: str,
        rates: Sequence[Rate],
        algorithm: Algorithm,
        max_delay: float,
    ) -> tuple[float, RedisReservation | None]:
        """Decide one call for *key* as `acquire` does, and say how to give a reserved slot back.

        Returns:
            The decision as `acquire` returns it, and a `RedisReservation` to
            pass to `refund` when a slot was reserved ahead (else None).

        Raises:
            ValueError: *algorithm* is unknown.
            redis.exceptions.RedisError: Redis could not be reached or refused the script.
        """
        script = self._scripts.get(algorithm)
        if script is None:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        suffixes, rate_args = _rate_args(tuple(rates), algorithm)
        if len(key) > _LONGEST_KEY:
            key = "#" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        base = f"{self._prefix}{{{limiter}:{key}}}:{_SHORT[algorithm]}:"
        now = "" if self._clock is None else _micros(self._clock.wall())
        if algorithm == "moving_window":  # one log serves every rate, one counter its reservations
            log = base + ";".join(suffixes)
            keys = [log, log + ":held"]
        else:
            keys = [base + suffix for suffix in suffixes]
        result = await script(keys=keys, args=[now, _micros(max_delay), *rate_args])
        if not isinstance(result, list):
            return int(result) / 1_000_000, None
        # A reservation: the script also returned what it wrote.
        wait, *written = result
        if algorithm == "moving_window":
            args: tuple[str, ...] = tuple(map(_text, written))
        else:
            args = (" ".join(map(_text, written[1::2])), " ".join(map(_text, written[0::2])))
            keys.append(base + "held")
        return int(wait) / 1_000_000, RedisReservation(algorithm, tuple(keys), args)

    async def refund(self, reservation: RedisReservation) -> bool:
        """Give back a slot that `reserve` reserved ahead and the caller will not use.

        The slot is given back only if no later reservation was made on the
        same key since: that one was placed after ours, and it keeps its slot.

        Returns:
            True if the slot was given back.

        Raises:
            redis.exceptions.RedisError: Redis could not be reached or refused the script.
        """
        script = self._refunds[reservation.algorithm]
        now = "" if self._clock is None else _micros(self._clock.wall())
        result = await script(keys=list(reservation.keys), args=[now, *reservation.args])
        return bool(result)
