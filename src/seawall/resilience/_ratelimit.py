"""`RateLimit`: at most *amount* calls per *period*, per key, in memory or shared through Redis.

Three algorithms, each a small decision core that takes the time as an argument
and touches no I/O (``decide(key, now, max_delay) -> float``):

- ``token_bucket`` (the default) is GCRA, the token bucket written as one
  number per key: the *theoretical arrival time* (TAT). A burst of *amount*
  calls is allowed, then one more every ``period / amount``. It costs one dict
  read and one write per decision, keeps one float per key, is smooth (no
  double burst at a window edge), and gives an exact ``retry_after``.
- ``moving_window`` keeps the times of the last *amount* admissions per key:
  exact ("never more than N in any period"), but memory grows with *amount*.
- ``sliding_window_counter`` keeps two fixed-window counters per key and
  weights the previous one by how much of it still overlaps the moving window:
  constant memory, approximate, and what many HTTP APIs implement.

A decision returns ``0.0`` when the call may go now, a positive delay when a
slot was *reserved* that far in the future (only when the caller allowed that
much waiting), or a negative number whose absolute value is ``retry_after``
when the call is refused. A float is used, not a tuple, to keep the hot path
free of allocations.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    get_args,
)

from seawall.errors import RateLimitExceeded
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_RATE_LIMIT, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = [
    "Algorithm",
    "Rate",
    "RateLimit",
    "RateLimitStorage",
    "parse",
]

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

Algorithm = Literal["token_bucket", "moving_window", "sliding_window_counter"]
Mode = Literal["raise", "wait"]

_log = logging.getLogger("seawall.resilience")

_ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
_MODES: tuple[str, ...] = get_args(Mode)

# Float sums such as 0.2 * 5 miss 1.0 by an ulp; a nanosecond of slack keeps
# "5/second" admitting exactly five calls at one instant.
_EPSILON = 1e-9

# The `limits` library's units (a month is 30 days, a year 12 such months),
# so that limits written for it mean the same here.
_UNITS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "month": 30 * 86_400,
    "year": 12 * 30 * 86_400,
}
_ITEM = re.compile(
    r"^\s*(?P<amount>\d+)\s*(?:/|per)\s*(?P<multiple>\d+)?\s*(?P<unit>[A-Za-z]+)\s*$",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[;,|]")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most *amount* calls in any *period* seconds.

    Attributes:
        amount: calls allowed per period (also the largest burst).
        period: the period in seconds.

    Raises:
        ValueError: *amount* is below 1 or *period* is not a positive, finite duration.
    """

    amount: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 1:
            raise ValueError(
                f"a rate's amount must be an integer of at least 1, not {self.amount!r}"
            )
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(
                f"a rate's period must be a positive number of seconds, not {self.period!r}"
            )

    @property
    def interval(self) -> float:
        """Seconds between two calls at the sustained rate (``period / amount``)."""
        return self.period / self.amount

    def __str__(self) -> str:
        return f"{self.amount}/{self.period:g}s"


def parse(text: str) -> tuple[Rate, ...]:
    """Read rate limits written in the `limits` library's notation.

    ``"100/minute"``, ``"10 per second"``, ``"5/10 seconds"``, ``"1000/hour"``,
    ``"100/day"``; several joined by ``;``, ``,`` or ``|`` must all pass
    (``"10/second;1000/hour"``). Units are second, minute, hour, day, month
    (30 days) and year (360 days), singular or plural.

    Args:
        text: the limits.

    Returns:
        One `Rate` per limit, in the order written.

    Raises:
        ValueError: the text is empty, or a part of it is not a limit; the
            message names the part.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() expects a string such as '100/minute', not {type(text).__name__}")
    parts = [part.strip() for part in _SEPARATORS.split(text)]
    if not any(parts):
        raise ValueError(f"empty rate limit {text!r}: write one such as '100/minute'")
    return tuple(_parse_one(part, text) for part in parts)


def _parse_one(part: str, text: str) -> Rate:
    where = f"{part!r}" if part == text.strip() else f"{part!r} in {text!r}"
    if not part:
        raise ValueError(f"empty part in rate limit {text!r}: remove the extra separator")
    match = _ITEM.match(part)
    if match is None:
        raise ValueError(
            f"cannot read rate limit {where}: write '<amount>/<unit>' or "
            "'<amount> per <n> <unit>s', such as '100/minute' or '5/10 seconds'"
        )
    unit = match["unit"].lower()
    if unit not in _UNITS and unit.endswith("s"):
        unit = unit[:-1]
    if unit not in _UNITS:
        raise ValueError(
            f"unknown unit {match['unit']!r} in rate limit {where}: "
            "use second, minute, hour, day, month or year"
        )
    amount = int(match["amount"])
    if amount < 1:
        raise ValueError(f"rate limit {where} allows no calls: the amount must be at least 1")
    multiple = int(match["multiple"]) if match["multiple"] is not None else 1
    if multiple < 1:
        raise ValueError(f"rate limit {where} has an empty period: use at least 1 {unit}")
    return Rate(amount, float(multiple * _UNITS[unit]))


def _as_rates(rate: str | Rate | Iterable[str | Rate]) -> tuple[Rate, ...]:
    if isinstance(rate, str):
        return parse(rate)
    if isinstance(rate, Rate):
        return (rate,)
    result: list[Rate] = []
    for item in rate:
        if isinstance(item, str):
            result.extend(parse(item))
        elif isinstance(item, Rate):
            result.append(item)
        else:
            raise TypeError(f"a rate is a string such as '100/minute' or a Rate, not {item!r}")
    if not result:
        raise ValueError("RateLimit needs at least one rate, such as '100/minute'")
    return tuple(result)


# ---------------------------------------------------------------------------
# The decision cores (memory). No clock, no I/O: *now* is an argument.
# ---------------------------------------------------------------------------


class _Hold:
    """A slot reserved ahead for a waiter, until it is used or given back."""

    __slots__ = ("at", "cancelled", "undo")

    def __init__(self, at: float, undo: Any) -> None:
        self.at = at
        self.undo = undo
        self.cancelled = False


class _Core(Generic[S]):
    """Per-key state (of type S) in a dict, bounded by *max_keys*."""

    __slots__ = ("_entries", "_holds", "_max_keys")

    def __init__(self, max_keys: int) -> None:
        self._entries: dict[str, S] = {}
        self._max_keys = max_keys
        # The slots reserved ahead per key whose waiters still sleep, oldest first.
        self._holds: dict[str, list[_Hold]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0), reserve (delay > 0) or refuse (-retry_after) one call for *key*."""
        raise NotImplementedError

    def _idle_at(self, state: S) -> float:
        """When *state* no longer limits anything: forgetting it then changes no decision."""
        raise NotImplementedError

    def reserve(self, key: str, now: float, max_delay: float) -> tuple[float, _Hold | None]:
        """`decide` for a caller that may wait: a slot reserved ahead comes with its `_Hold`.

        Only the slow path calls it, so the hot path keeps its single float.
        """
        undo = self._before(key)
        result = self.decide(key, now, max_delay)
        if result <= 0.0:
            return result, None
        hold = _Hold(now + result, self._after(key, undo))
        self._holds.setdefault(key, []).append(hold)
        return result, hold

    def release(self, key: str, hold: _Hold) -> None:
        """The waiter of *hold* used its slot: neither it nor an earlier hold can be given back."""
        holds = self._holds.get(key)
        if holds is None:
            return
        for index, held in enumerate(holds):
            if held is hold:
                del holds[: index + 1]
                break
        if not holds:
            del self._holds[key]

    def refund(self, key: str, hold: _Hold, now: float) -> None:
        """Give back the slot of *hold*, whose waiter was cancelled before using it.

        A slot is given back only once every later one for *key* has been
        (never someone else's slot): until then it is only marked, and the
        last later refund gives it back too, whatever order waiters leave in.
        """
        hold.cancelled = True
        holds = self._holds.get(key)
        if holds is None:
            return
        while holds and holds[-1].cancelled:
            top = holds.pop()
            # Once a slot's time has come, calls may have been admitted after it
            # without a hold; the state can no longer be moved back safely.
            if top.at <= now or not self._give_back(key, top.undo):
                holds.clear()
        if not holds:
            del self._holds[key]

    def _before(self, key: str) -> Any:
        """What `_after` needs from the state before a reservation (None: cannot reserve)."""
        return None

    def _after(self, key: str, before: Any) -> Any:
        """What `_give_back` needs to undo the reservation just made."""
        return None

    def _give_back(self, key: str, undo: Any) -> bool:
        """Undo the last reservation for *key*; False if the state is not the one it left."""
        return False

    def _make_room(self, now: float) -> None:
        # Called only when a new key arrives at the cap, so its O(n) cost is
        # amortised over the quarter of the cap it frees. Idle keys go first
        # (forgetting them changes nothing); then the keys closest to idle,
        # since forgetting a key can only make the limit laxer for that key.
        entries = self._entries
        idle_at = self._idle_at
        for key in [key for key, state in entries.items() if idle_at(state) <= now]:
            del entries[key]
        excess = len(entries) - self._max_keys * 3 // 4
        if excess > 0:
            for key in heapq.nsmallest(excess, entries, key=lambda k: idle_at(entries[k])):
                del entries[key]


class _Replacing(_Core[S]):
    """A core whose decide() stores a new state for a key, never changing the old one.

    A reservation is undone by putting back the state from before it, if the
    key still has the state it wrote: every admission moves a TAT forward and
    every undo restores one exactly, so it has only if every later reservation
    has been given back.
    """

    __slots__ = ()

    def _before(self, key: str) -> Any:
        return self._entries.get(key)

    def _after(self, key: str, before: Any) -> Any:
        return (before, self._entries[key])

    def _give_back(self, key: str, undo: Any) -> bool:
        before, after = undo
        entries = self._entries
        if entries.get(key) != after:
            return False
        if before is None:
            del entries[key]
        else:
            entries[key] = before
        return True


class _TokenBucket(_Replacing[float]):
    """GCRA with one rate: one float (the theoretical arrival time) per key."""

    __slots__ = ("_interval", "_period")

    def __init__(self, rate: Rate, max_keys: int) -> None:
        super().__init__(max_keys)
        self._interval = rate.interval
        self._period = rate.period

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0), reserve (delay > 0) or refuse (-retry_after) one call for *key*."""
        tats = self._entries
        tat = tats.get(key, now)
        if tat < now:  # noqa: PLR1730 - a branch is cheaper than calling max() on the hot path
            tat = now
        tat += self._interval
        wait = tat - self._period - now
        if wait > max_delay + _EPSILON:
            return -wait
        if len(tats) >= self._max_keys and key not in tats:
            self._make_room(now)
        tats[key] = tat
        return wait if wait > _EPSILON else 0.0

    def _idle_at(self, state: float) -> float:
        return state


class _MultiTokenBucket(_Replacing[list[float]]):
    """GCRA with several rates that must all pass: one TAT per rate per key."""

    __slots__ = ("_rates",)

    def __init__(self, rates: Sequence[Rate], max_keys: int) -> None:
        super().__init__(max_keys)
        self._rates = tuple((rate.interval, rate.period) for rate in rates)

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0), reserve (delay > 0) or refuse (-retry_after) one call for *key*."""
        tats: list[float] | None = self._entries.get(key)
        if tats is None:
            tats = [now] * len(self._rates)
        # The call is admitted when every rate allows it; each TAT then moves
        # from that instant, so a reserved slot is charged where it is used.
        at = now
        for (interval, period), tat in zip(self._rates, tats, strict=True):
            allow = max(tat, now) + interval - period
            at = max(at, allow)
        wait = at - now
        if wait > max_delay + _EPSILON:
            return -wait
        if len(self._entries) >= self._max_keys and key not in self._entries:
            self._make_room(now)
        self._entries[key] = [
            max(tat, at) + interval for (interval, _), tat in zip(self._rates, tats, strict=True)
        ]
        return wait if wait > _EPSILON else 0.0

    def _idle_at(self, state: list[float]) -> float:
        return max(state)


class _MovingWindow(_Core[deque[float]]):
    """The times of the last admissions per key, at most the largest amount of them."""

    __slots__ = ("_longest", "_most", "_rates")

    def __init__(self, rates: Sequence[Rate], max_keys: int) -> None:
        super().__init__(max_keys)
        self._rates = tuple((rate.amount, rate.period) for rate in rates)
        self._most = max(rate.amount for rate in rates)
        self._longest = max(rate.period for rate in rates)

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0), reserve (delay > 0) or refuse (-retry_after) one call for *key*."""
        log: deque[float] | None = self._entries.get(key)
        at = now
        if log is not None:
            size = len(log)
            # A new call fits when the amount-th most recent admission is a
            # full period before it. The log stays sorted: a reserved time is
            # never earlier than the last one (it is one period after an entry
            # that the last one was itself computed from).
            for amount, period in self._rates:
                if size >= amount:
                    free = log[-amount] + period
                    at = max(at, free)
        wait = at - now
        if wait > max_delay + _EPSILON:
            return -wait
        if log is None:
            if len(self._entries) >= self._max_keys:
                self._make_room(now)
            log = self._entries[key] = deque(maxlen=self._most)
        log.append(at)
        return wait if wait > _EPSILON else 0.0

    def _idle_at(self, state: deque[float]) -> float:
        return state[-1] + self._longest

    def _before(self, key: str) -> Any:
        # The admission that appending to a full log will push out.
        log = self._entries.get(key)
        return log[0] if log is not None and len(log) == self._most else None

    def _after(self, key: str, before: Any) -> Any:
        log = self._entries[key]
        return (log, log[-1], before)

    def _give_back(self, key: str, undo: Any) -> bool:
        mine, at, evicted = undo
        log = self._entries.get(key)
        if log is not mine or log[-1] != at:
            return False
        log.pop()
        if evicted is not None:
            log.appendleft(evicted)
        elif not log:
            del self._entries[key]  # an empty log would break _idle_at
        return True


class _SlidingWindowCounterOne(_Core[list[float]]):
    """The sliding window counter with one rate: ``[window, previous, current]`` per key."""

    __slots__ = ("_amount", "_period")

    def __init__(self, rate: Rate, max_keys: int) -> None:
        super().__init__(max_keys)
        self._amount = rate.amount
        self._period = rate.period

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0) or refuse (-retry_after) one call for *key*; *max_delay* is not used."""
        period = self._period
        window = now // period
        state = self._entries.get(key)
        if state is None:
            previous = current = 0.0
        else:
            seen, previous, current = state
            if window != seen:
                previous = current if window == seen + 1.0 else 0.0
                current = 0.0
        start = window * period
        if previous * (1.0 - (now - start) / period) + current + 1.0 > self._amount + _EPSILON:
            at = _counter_retry_at(self._amount, period, start, previous, current)
            return -max(at - now, _EPSILON * 2)
        if state is None:
            if len(self._entries) >= self._max_keys:
                self._make_room(now)
            self._entries[key] = [window, previous, current + 1.0]
        else:
            state[0] = window
            state[1] = previous
            state[2] = current + 1.0
        return 0.0

    def _idle_at(self, state: list[float]) -> float:
        # A key's counters stop mattering once the window after its last one ends.
        return (state[0] + 2.0) * self._period


class _SlidingWindowCounter(_Core[list[float]]):
    """Two fixed-window counters per rate per key; the previous one weighted by its overlap.

    The state of a key is a flat list ``[window, previous, current, ...]``, one
    triple per rate. It cannot reserve a future slot, so a waiting caller sleeps
    for ``retry_after`` and asks again.
    """

    __slots__ = ("_rates",)

    def __init__(self, rates: Sequence[Rate], max_keys: int) -> None:
        super().__init__(max_keys)
        self._rates = tuple((rate.amount, rate.period) for rate in rates)

    def decide(self, key: str, now: float, max_delay: float) -> float:
        """Admit (0.0) or refuse (-retry_after) one call for *key*; *max_delay* is not used."""
        old: list[float] | None = self._entries.get(key)
        state: list[float] = []
        retry_after = 0.0
        refused = False
        for index, (amount, period) in enumerate(self._rates):
            window = now // period
            previous = current = 0.0
            if old is not None:
                seen, previous, current = old[3 * index : 3 * index + 3]
                if window != seen:
                    previous = current if window == seen + 1 else 0.0
                    current = 0.0
            start = window * period
            estimate = previous * (1.0 - (now - start) / period) + current
            if estimate + 1.0 > amount + _EPSILON:
                refused = True
                retry_after = max(
                    retry_after, _counter_retry_at(amount, period, start, previous, current) - now
                )
            state += (window, previous, current)
        if refused:
            return -max(retry_after, _EPSILON * 2)
        for index in range(2, len(state), 3):
            state[index] += 1.0
        if old is None and len(self._entries) >= self._max_keys:
            self._make_room(now)
        self._entries[key] = state
        return 0.0

    def _idle_at(self, state: list[float]) -> float:
        # A key's counters stop mattering once the window after its last one ends.
        return max(
            (state[3 * index] + 2.0) * period for index, (_, period) in enumerate(self._rates)
        )


def _counter_retry_at(
    amount: int, period: float, start: float, previous: float, current: float
) -> float:
    """When one more call fits the sliding window counter (its estimate only falls over time)."""
    if current + 1.0 <= amount:
        # Within this window, once the previous window's weight has fallen enough.
        return start + period * (1.0 - (amount - 1.0 - current) / previous)
    # In the next window, where this window's count becomes the weighted one.
    return start + period + period * (1.0 - (amount - 1.0) / current)


def _core(algorithm: str, rates: tuple[Rate, ...], max_keys: int) -> _Core[Any]:
    if algorithm == "token_bucket":
        if len(rates) == 1:
            return _TokenBucket(rates[0], max_keys)
        return _MultiTokenBucket(rates, max_keys)
    if algorithm == "moving_window":
        return _MovingWindow(rates, max_keys)
    if len(rates) == 1:
        return _SlidingWindowCounterOne(rates[0], max_keys)
    return _SlidingWindowCounter(rates, max_keys)


class RateLimitStorage(Protocol):
    """Where a rate limit keeps its state when it is shared (see `RedisRateLimitStorage`).

    The in-memory default is not a storage object: it is built into `RateLimit`
    so that its decision costs no await.
    """

    async def acquire(
        self,
        limiter: str,
        key: str,
        rates: Sequence[Rate],
        algorithm: Algorithm,
        max_delay: float,
    ) -> float:
        """Decide one call for *key* atomically.

        Args:
            limiter: the rate limit's name (a namespace for its keys).
            key: the partition.
            rates: the limits that must all pass.
            algorithm: which algorithm keeps the state.
            max_delay: how far ahead a slot may be reserved (0 to refuse at once).

        Returns:
            ``0.0`` to go now, a positive delay after which the reserved slot
            is the caller's, or ``-retry_after`` when refused.
        """
        ...


class _RefundingStorage(Protocol):
    """A storage that can give back a slot reserved ahead (`RedisRateLimitStorage` can).

    Optional: with a storage that has only ``acquire``, a waiter cancelled
    during its sleep keeps its slot until that slot's time has passed.
    """

    async def reserve(
        self,
        limiter: str,
        key: str,
        rates: Sequence[Rate],
        algorithm: Algorithm,
        max_delay: float,
    ) -> tuple[float, Any]: ...

    async def refund(self, reservation: Any) -> object: ...


class RateLimit(PolicyCalls):
    """At most so many calls per period, per key; excess calls raise or wait.

    ``RateLimit("100/minute")`` lets a burst of 100 calls through, then one
    every 0.6 s (token bucket). Each partition has its own budget: the call's
    ``CallContext.key`` (a tenant, an account), else its operation, so by
    default all calls of one function share one budget whatever their
    arguments, as a provider's quota does; or what *key* returns.

    Args:
        rate: ``"100/minute"`` style text (several joined by ``;`` all apply),
            a `Rate`, or several of them.
        algorithm: ``"token_bucket"`` (GCRA; default: cheapest, smooth, one
            number per key), ``"moving_window"`` (exact, memory grows with the
            amount) or ``"sliding_window_counter"`` (two counters, approximate).
        key: computes the partition from the `CallContext`, e.g.
            ``lambda context: context.partition()`` for a budget per distinct
            arguments. Defaults to ``context.key``, else ``context.operation``.
        mode: ``"raise"`` refuses an excess call with `RateLimitExceeded`;
            ``"wait"`` sleeps until a slot frees, at most *max_wait* and never
            past the call's deadline, and raises only beyond that.
        max_wait: the longest wait in ``"wait"`` mode (seconds or timedelta).
        max_keys: the most partitions kept in memory; idle ones are dropped
            first, then those closest to idle.
        storage: shared state, such as `seawall.resilience.redis.RedisRateLimitStorage`;
            None keeps the state in this process.
        name: reported in events and errors.
        clock: where time is read and waited on (memory decisions and sleeps).
        events: the hub to report to; None means `seawall.resilience.events`.

    Raises:
        ValueError: a rate cannot be read or an option is out of range.
        TypeError: *rate* is neither text nor `Rate` objects.
    """

    stage: ClassVar[int] = STAGE_RATE_LIMIT

    __slots__ = (
        "_clock",
        "_core",
        "_decide",
        "_events",
        "_key",
        "_max_wait",
        "_now",
        "_refunding",
        "_storage",
        "_wait",
        "algorithm",
        "mode",
        "name",
        "rates",
    )

    def __init__(
        self,
        rate: str | Rate | Iterable[str | Rate],
        *,
        algorithm: Algorithm = "token_bucket",
        key: Callable[[CallContext], str] | None = None,
        mode: Mode = "raise",
        max_wait: float | timedelta = 10.0,
        max_keys: int = 10_000,
        storage: RateLimitStorage | None = None,
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        if algorithm not in _ALGORITHMS:
            raise ValueError(
                f"unknown algorithm {algorithm!r}: use one of {', '.join(_ALGORITHMS)}"
            )
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}: use 'raise' or 'wait'")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer of at least 1, not {max_keys!r}")
        if storage is not None and not callable(getattr(storage, "acquire", None)):
            raise TypeError(f"{storage!r} is not a rate limit storage (it has no acquire method)")
        self.rates = _as_rates(rate)
        self.algorithm: Algorithm = algorithm
        self.mode: Mode = mode
        self.name = name
        self._max_wait = seconds(max_wait, name="max_wait", allow_zero=True)
        self._wait = mode == "wait"
        self._key = key
        self._storage = storage
        self._refunding: _RefundingStorage | None = (
            cast("_RefundingStorage", storage)
            if callable(getattr(storage, "reserve", None))
            and callable(getattr(storage, "refund", None))
            else None
        )
        self._core = _core(algorithm, self.rates, max_keys)
        # The memory decision is bound once: the hot path pays no attribute walk and no await.
        # With a shared storage it is None, which sends every decision down the slow path.
        self._decide = self._core.decide if storage is None else None
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._now = self._clock.monotonic
        self._events = events if events is not None else default_events

    def __repr__(self) -> str:
        rates = ";".join(str(rate) for rate in self.rates)
        where = "memory" if self._storage is None else type(self._storage).__name__
        return f"RateLimit({self.name!r}, {rates!r}, {self.algorithm}, {self.mode}, {where})"

    @property
    def keys_in_memory(self) -> int:
        """How many partitions the in-memory state holds now (0 with a shared storage)."""
        return len(self._core)

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* once a slot is free for the call's partition.

        Raises:
            RateLimitExceeded: no slot (in ``"wait"`` mode: none within *max_wait*
                or before the call's deadline).
        """
        if self._key is not None:
            key = self._key(context)
        else:
            key = context.operation if context.key is None else context.key
        decide = self._decide
        if decide is None or decide(key, self._now(), 0.0):
            await self._admit(key, context)
        return await thunk()

    async def acquire(self, key: str, *, deadline: float | None = None) -> None:
        """Take one slot for *key* without running a call (raise or wait as configured).

        Args:
            key: the partition.
            deadline: a monotonic time (of this limit's clock) not to wait past.

        Raises:
            RateLimitExceeded: no slot, as in `run`.
        """
        await self._admit(key, CallContext(operation=self.name, key=key, deadline=deadline))

    async def _admit(self, key: str, context: CallContext) -> None:
        # The slow path: a refusal in memory, or any decision on a shared storage.
        clock = self._clock
        start = clock.monotonic()
        while True:
            now = clock.monotonic()
            reservation: object = None
            if not self._wait:
                budget = 0.0
                storage = self._storage
                if storage is None:
                    result = self._core.decide(key, now, budget)
                else:
                    result = await storage.acquire(
                        self.name, key, self.rates, self.algorithm, budget
                    )
            else:
                budget = self._budget(start, now, context.deadline)
                result, reservation = await self._reserve(key, now, budget)
            if result == 0.0:
                return
            if result > 0.0:
                # A slot was reserved for us *result* seconds ahead.
                self._report(key, context, result, "wait")
                if reservation is None:
                    await clock.sleep(result)
                    return
                await self._sleep_holding(key, result, reservation)
                return
            retry_after = -result
            if not self._wait or retry_after > budget + _EPSILON:
                self._report(key, context, retry_after, "raise")
                raise RateLimitExceeded(
                    limiter=self.name,
                    key=_shown_key(key, context, self._key),
                    retry_after=retry_after,
                )
            # The algorithm cannot reserve (sliding window counter): sleep, then ask again.
            self._report(key, context, retry_after, "wait")
            await clock.sleep(retry_after)

    async def _reserve(self, key: str, now: float, budget: float) -> tuple[float, object]:
        storage = self._storage
        if storage is None:
            return self._core.reserve(key, now, budget)
        refunding = self._refunding
        if refunding is not None:
            return await refunding.reserve(self.name, key, self.rates, self.algorithm, budget)
        return await storage.acquire(self.name, key, self.rates, self.algorithm, budget), None

    async def _sleep_holding(self, key: str, delay: float, reservation: object) -> None:
        try:
            await self._clock.sleep(delay)
        except asyncio.CancelledError:
            # Nobody will use the slot: give it back before going, or every
            # cancelled waiter would push the next callers back by one slot.
            await self._refund(key, reservation)
            raise
        except BaseException:
            self._release(key, reservation)
            raise
        self._release(key, reservation)

    def _release(self, key: str, reservation: object) -> None:
        if isinstance(reservation, _Hold):
            self._core.release(key, reservation)

    async def _refund(self, key: str, reservation: object) -> None:
        if isinstance(reservation, _Hold):
            self._core.refund(key, reservation, self._clock.monotonic())
            return
        refunding = self._refunding
        if refunding is None:
            return
        try:
            await refunding.refund(reservation)
        except Exception as exc:
            # The caller's cancellation must win over a storage failure, which is
            # recorded: the slot then stays taken until its time passes.
            _log.warning(
                "rate_limit_refund_failed limiter=%s error=%s", self.name, type(exc).__name__
            )

    def _budget(self, start: float, now: float, deadline: float | None) -> float:
        budget = self._max_wait - (now - start)
        if deadline is not None:
            budget = min(budget, deadline - now)
        return max(0.0, budget)

    def _report(self, key: str, context: CallContext, retry_after: float, mode: str) -> None:
        hub = self._events
        if hub:
            hub.emit(
                "rate_limited",
                "rate_limit",
                self.name,
                key=_shown_key(key, context, self._key),
                retry_after=retry_after,
                mode=mode,
            )


def _shown_key(key: str, context: CallContext, key_fn: object) -> str:
    # The default partition may hold the call's arguments (a token, a body):
    # errors and events then name the operation instead (STYLE: no secrets in messages).
    if key_fn is not None or context.key is not None:
        return key
    return context.operation
