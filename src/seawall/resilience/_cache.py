"""`Cache`: a response cache with a TTL per data kind, request coalescing and serve-stale-on-error.

The decision of what to do with an entry is the pure `freshness()`; `Cache.run`
is the shell that reads the backend, coalesces concurrent misses and stores
what comes back. Backends are collaborators: `MemoryCacheBackend` (the default)
here, `seawall.resilience.redis.RedisCacheBackend` to share entries between
processes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, ParamSpec, Protocol, TypeVar, cast

from seawall.resilience._clock import SYSTEM_CLOCK, Clock, seconds
from seawall.resilience._context import STAGE_CACHE, CallContext, Thunk
from seawall.resilience._events import EventHub
from seawall.resilience._events import events as default_events
from seawall.resilience._pipeline import PolicyCalls

__all__ = [
    "TTL_PRESETS",
    "Cache",
    "CacheBackend",
    "CacheEntry",
    "Freshness",
    "MemoryCacheBackend",
    "freshness",
]

P = ParamSpec("P")
T = TypeVar("T")

Freshness = Literal["fresh", "stale", "expired"]

TTL_PRESETS: Mapping[str, timedelta] = MappingProxyType(
    {
        # Addresses and coordinates almost never change; providers bill per lookup.
        "geocoding": timedelta(days=7),
        # Rates are published hourly or daily; an hour is fresh enough to price with.
        "currency": timedelta(hours=1),
        # Forecasts are refreshed every few minutes by the providers themselves.
        "weather": timedelta(minutes=10),
    }
)
"""Suggested TTLs per kind of data, used by `Cache.for_kind`."""


class CacheEntry(NamedTuple):
    """A stored value and when it was stored.

    Attributes:
        value: the cached result.
        stored_at: when it was stored, on the backend's time base (see
            `CacheBackend.wall_clock`).
        expires_at: when the backend drops it (``stored_at + stale_ttl``).
    """

    value: Any
    stored_at: float
    expires_at: float


class CacheBackend(Protocol):
    """Where a `Cache` keeps its entries.

    ``wall_clock`` chooses the time base of ``stored_at`` and ``now``: a
    backend shared between processes must use wall time (``Clock.wall()``),
    because each process's monotonic clock has its own origin.
    """

    wall_clock: ClassVar[bool]

    async def get(self, key: str, now: float) -> CacheEntry | None:
        """The entry under *key*, or None if there is none or it has expired at *now*."""
        ...

    async def set(self, key: str, value: Any, *, stored_at: float, lifetime: float) -> None:
        """Store *value* under *key*; drop it *lifetime* seconds after *stored_at*."""
        ...

    async def delete(self, key: str) -> None:
        """Drop the entry under *key*, if any."""
        ...

    async def clear(self, prefix: str) -> None:
        """Drop every entry whose key starts with *prefix*."""
        ...


class MemoryCacheBackend:
    """An in-process, bounded LRU store, timed by the monotonic clock.

    When full, storing a new key evicts the least recently used one. Expired
    entries are dropped when read, or evicted by LRU when never read again, so
    memory stays bounded by *max_entries*.

    Args:
        max_entries: how many entries to keep at most.

    Raises:
        ValueError: *max_entries* is not positive.
    """

    __slots__ = ("_entries", "max_entries")

    wall_clock: ClassVar[bool] = False

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: str, now: float) -> CacheEntry | None:
        """`get` without a coroutine: the cache-hit fast path."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: str, now: float) -> CacheEntry | None:
        """The entry under *key*, or None if there is none or it has expired at *now*."""
        return self.get_now(key, now)

    async def set(self, key: str, value: Any, *, stored_at: float, lifetime: float) -> None:
        """Store *value* under *key*, evicting the least recently used entries when full."""
        entries = self._entries
        entries[key] = CacheEntry(value, stored_at, stored_at + lifetime)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        """Drop the entry under *key*, if any."""
        self._entries.pop(key, None)

    async def clear(self, prefix: str) -> None:
        """Drop every entry whose key starts with *prefix*."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def freshness(age: float, *, ttl: float, stale_ttl: float) -> Freshness:
    """Classify an entry by its age.

    ``fresh`` entries are served without a call; ``stale`` ones are refreshed,
    and served only if the refresh fails; ``expired`` ones are gone.

    Args:
        age: seconds since the entry was stored.
        ttl: how long an entry is fresh.
        stale_ttl: how long after storing an entry may still be served on error.
    """
    if age < ttl:
        return "fresh"
    if age < stale_ttl:
        return "stale"
    return "expired"


def _exception_types(
    value: type[Exception] | Iterable[type[Exception]], *, name: str
) -> tuple[type[Exception], ...]:
    types = (value,) if isinstance(value, type) else tuple(value)
    for candidate in types:
        # Only Exception subclasses: a cancellation (BaseException) must never be absorbed.
        if not (isinstance(candidate, type) and issubclass(candidate, Exception)):
            raise ValueError(f"{name} takes Exception subclasses, got {candidate!r}")
    return types


class Cache(PolicyCalls):
    """Serve repeated calls from a cache, one call in flight per key, stale values on errors.

    Make one cache per kind of data, each with its own TTL::

        geocoding = Cache(ttl=timedelta(days=7), name="geocoding")
        weather = Cache(ttl=600, stale_ttl=3600, name="weather")
        currency = Cache.for_kind("currency")  # TTL_PRESETS: one hour

    - **Key**: ``context.partition()`` (the call's key, or its operation and
      arguments) unless *key* is given; the cache's *name* is part of every key,
      so caches can share a backend.
    - **Coalescing**: concurrent misses for one key make a single call; the
      other callers wait for its result, or its exception. Coalescing is per
      process, also with a shared (Redis) backend.
    - **Serve stale on error**: an entry older than *ttl* but younger than
      *stale_ttl* is refreshed by the next call; if that call raises one of
      *stale_on*, the stale value is returned (event ``cache_stale_served``).
    - **What is stored**: results for which *cache_if* is true (all results by
      default); exceptions never.

    Args:
        ttl: how long an entry is fresh (seconds or timedelta).
        stale_ttl: how long after storing an entry may still be served when a
            refresh fails; at least *ttl*. Defaults to *ttl*: no stale serving.
        key: computes the key from the `CallContext`, instead of ``partition()``.
        backend: where entries live; defaults to a `MemoryCacheBackend`.
        max_entries: the size of the default memory backend.
        cache_if: stores a result only when this returns true (e.g. not a 5xx).
        stale_on: the exception types that let a stale value be served.
        name: the cache's name, in keys and events.
        clock: the time source (`Clock.monotonic()` for memory, ``wall()`` for
            backends with ``wall_clock``).
        events: where to report; defaults to the global `events` hub.

    Raises:
        ValueError: a duration is not positive, *stale_ttl* is shorter than
            *ttl*, *stale_on* holds a non-Exception type, or *max_entries* is
            given together with a *backend*.
    """

    __slots__ = (
        "_backend",
        "_cache_if",
        "_clock",
        "_generations",
        "_hub",
        "_inflight",
        "_key",
        "_memory",
        "_monotonic",
        "_prefix",
        "_stale_on",
        "name",
        "stale_ttl",
        "ttl",
    )

    stage: ClassVar[int] = STAGE_CACHE

    def __init__(
        self,
        *,
        ttl: float | timedelta = 600.0,
        stale_ttl: float | timedelta | None = None,
        key: Callable[[CallContext], str] | None = None,
        backend: CacheBackend | None = None,
        max_entries: int | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        stale_on: type[Exception] | Iterable[type[Exception]] = (Exception,),
        name: str = "default",
        clock: Clock | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.ttl = seconds(ttl, name="ttl")
        self.stale_ttl = self.ttl if stale_ttl is None else seconds(stale_ttl, name="stale_ttl")
        if self.stale_ttl < self.ttl:
            raise ValueError("stale_ttl is the total age a stale entry may reach: at least ttl")
        if backend is not None and max_entries is not None:
            raise ValueError("max_entries sizes the default memory backend; size yours directly")
        if backend is None:
            backend = MemoryCacheBackend(max_entries=10_000 if max_entries is None else max_entries)
        self.name = name
        self._backend: CacheBackend = backend
        # The memory backend is read without a coroutine: the hit path stays sub-microsecond.
        self._memory = backend if isinstance(backend, MemoryCacheBackend) else None
        self._key = key
        self._prefix = f"{name}:"
        self._cache_if = cache_if
        self._stale_on = _exception_types(stale_on, name="stale_on")
        self._clock = clock or SYSTEM_CLOCK
        self._monotonic = self._clock.monotonic
        self._hub = default_events if events is None else events
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        # Per key with a load in flight (and only then, so it stays small): how many
        # times it was invalidated since the load began. A load that saw one does
        # not store its result, which was computed from what was invalidated.
        self._generations: dict[str, int] = {}

    @classmethod
    def for_kind(cls, kind: str, **options: Any) -> Cache:
        """A cache named *kind* with the TTL from `TTL_PRESETS` (other options as `Cache`).

        Raises:
            ValueError: *kind* has no preset.
        """
        try:
            ttl = TTL_PRESETS[kind]
        except KeyError:
            known = ", ".join(sorted(TTL_PRESETS))
            raise ValueError(f"no TTL preset for {kind!r} (known: {known}); pass ttl=") from None
        options.setdefault("ttl", ttl)
        return cls(name=kind, **options)

    def __repr__(self) -> str:
        return f"Cache({self.name!r}, ttl={self.ttl:g}, stale_ttl={self.stale_ttl:g})"

    @property
    def backend(self) -> CacheBackend:
        """Where this cache keeps its entries."""
        return self._backend

    def _now(self) -> float:
        return self._clock.wall() if self._backend.wall_clock else self._clock.monotonic()

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Return the cached result for *context*, or run *thunk* (once per key) and cache it.

        Raises:
            Exception: whatever *thunk* raised, unless a stale value was served.
        """
        partition = context.partition() if self._key is None else self._key(context)
        key = self._prefix + partition
        memory = self._memory
        if memory is not None:
            now = self._monotonic()
            entry = memory.get_now(key, now)
        else:
            now = self._now()
            entry = await self._backend.get(key, now)
        # The fresh case of freshness(), inlined: this comparison is the whole cost of a hit.
        if entry is not None and now - entry.stored_at < self.ttl:
            if self._hub:
                self._hub.emit(
                    "cache_hit",
                    "cache",
                    self.name,
                    key=self._shown(partition, context),
                    age=now - entry.stored_at,
                )
            hit: T = entry.value  # an annotated Any, not cast(): no call on the hit path
            return hit
        if self._hub:
            self._hub.emit(
                "cache_miss",
                "cache",
                self.name,
                key=self._shown(partition, context),
                stale=entry is not None,
            )
        try:
            return await self._load(key, thunk)
        except self._stale_on as exc:
            if entry is None:
                raise
            # Judged now, not at lookup: the entry may have aged out while the refresh ran.
            age = self._now() - entry.stored_at
            if freshness(age, ttl=self.ttl, stale_ttl=self.stale_ttl) == "expired":
                raise
            if self._hub:
                self._hub.emit(
                    "cache_stale_served",
                    "cache",
                    self.name,
                    key=self._shown(partition, context),
                    age=age,
                    reason=type(exc).__name__,
                )
            return cast("T", entry.value)

    def _shown(self, partition: str, context: CallContext) -> str:
        # The default partition holds the call's arguments (a token, a body): events,
        # which reach logs, name the operation instead (STYLE: no secrets in logs).
        if self._key is not None or context.key is not None:
            return partition
        return context.operation

    async def _load(self, key: str, thunk: Thunk[T]) -> T:
        while (pending := self._inflight.get(key)) is not None:
            try:
                # shield: a waiter that is cancelled must not cancel the leader's call.
                return cast("T", await asyncio.shield(pending))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The leader was cancelled, not us: look again, and maybe lead.
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        generations = self._generations
        generations[key] = 0
        try:
            result = await thunk()
            if (self._cache_if is None or self._cache_if(result)) and not generations[key]:
                await self._backend.set(key, result, stored_at=self._now(), lifetime=self.stale_ttl)
                if generations[key]:
                    # Invalidated while the entry was being written: the delete may
                    # have reached the backend first, so it is repeated.
                    await self._backend.delete(key)
        except Exception as exc:
            future.set_exception(exc)
            # Mark it retrieved: with no waiters asyncio would log it as lost.
            future.exception()
            raise
        except BaseException:
            # Cancelled (or the interpreter is exiting): waiters retry rather than inherit it.
            future.cancel()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]
            del generations[key]

    async def invalidate(self, key: str) -> None:
        """Drop the entry for *key* (a partition, as `CallContext.partition()` or *key* made it).

        A load of *key* in flight still returns its result to its callers, but
        does not store it.
        """
        full = self._prefix + key
        if full in self._generations:
            self._generations[full] += 1
        await self._backend.delete(full)

    async def clear(self) -> None:
        """Drop every entry of this cache (entries of other caches on the backend stay).

        Loads in flight still return their results to their callers, but do not store them.
        """
        generations = self._generations
        for key in generations:
            generations[key] += 1
        await self._backend.clear(self._prefix)
