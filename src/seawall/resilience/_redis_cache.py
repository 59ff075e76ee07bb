"""`RedisCacheBackend`: `Cache` entries shared by every process through Redis.

This is the only resilience cache module that imports ``redis``; it is reached
through `seawall.resilience.redis`, never at ``import seawall.resilience``.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import struct
from typing import Any, ClassVar, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from seawall.resilience._cache import CacheEntry

__all__ = ["JsonSerializer", "PickleSerializer", "RedisCacheBackend", "Serializer"]

_log = logging.getLogger("seawall.resilience")

# Every stored value is prefixed with its stored_at (a big-endian double), so any
# serializer works unchanged and a read is a single GET.
_STORED_AT = struct.Struct("!d")
_SCAN_BATCH = 500


class Serializer(Protocol):
    """Turns cached values into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Encode *value*."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode what `dumps` produced."""
        ...


class JsonSerializer:
    """JSON: safe to read from a shared Redis, but values must be JSON-serialisable.

    Dicts, lists, strings, numbers, booleans and None round-trip; tuples come
    back as lists, and other objects (a pydantic model, an ``httpx.Response``)
    must be converted first (cache ``model.model_dump(mode="json")``, not the model).
    """

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        """Encode *value* as compact UTF-8 JSON.

        Raises:
            TypeError: *value* is not JSON-serialisable.
        """
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"RedisCacheBackend stores JSON by default and cannot encode this value "
                f"({exc}); cache plain data, or pass serializer=PickleSerializer() "
                "if every process sharing the Redis is trusted"
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode JSON."""
        return json.loads(data)


class PickleSerializer:
    """Pickle: any picklable Python object, for a Redis only trusted processes can write.

    Warning:
        Unpickling runs code chosen by whoever wrote the bytes. Anyone who can
        write to this Redis (another service, a leaked password) can then run
        code in every process reading the cache. Use it only on a private,
        authenticated Redis; prefer `JsonSerializer`.
    """

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        """Pickle *value* with the highest protocol."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Unpickle *data* (trusted input only)."""
        return pickle.loads(data)  # noqa: S301 - opt-in, documented as trusted-only


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisCacheBackend:
    """Cache entries in Redis, shared by every process using the same prefix.

    A value is stored with ``SET key stored_at+payload PX stale_ttl``: Redis
    drops it when it can no longer be served even stale, and a read is one
    ``GET``. Both are single atomic commands, so no Lua script is needed.

    Times are wall-clock (``Clock.wall()``): ``stored_at`` written by one
    process is compared with ``now`` in another, and monotonic clocks have a
    per-process origin. NTP keeps hosts within milliseconds, negligible against
    TTLs of minutes or days.

    Coalescing stays per process: two processes missing the same key at once
    make two calls (not one per caller).

    Redis being down must not take the calls down with it: a failed read counts
    as a miss and a failed write is skipped, both logged as
    ``cache_backend_failed``. Pass ``fail_open=False`` to raise instead.

    Args:
        redis: a ``redis.asyncio.Redis`` client created with ``decode_responses=False``.
        prefix: put before every key, to keep the cache apart from other data.
        serializer: encodes values; `JsonSerializer` by default (values must be
            JSON-serialisable); `PickleSerializer` only for a trusted Redis.
        fail_open: treat Redis errors as misses (default) rather than raise them.

    Raises:
        ValueError: the client decodes responses (stored values are bytes).
    """

    __slots__ = ("_fail_open", "_prefix", "_redis", "_serializer")

    wall_clock: ClassVar[bool] = True

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "seawall:cache:",
        serializer: Serializer | None = None,
        fail_open: bool = True,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisCacheBackend needs a client with decode_responses=False")
        self._redis = redis
        self._prefix = prefix
        self._serializer: Serializer = serializer or JsonSerializer()
        self._fail_open = fail_open

    def __repr__(self) -> str:
        return f"RedisCacheBackend(prefix={self._prefix!r})"

    def _failed(self, operation: str, key: str, exc: RedisError) -> None:
        if not self._fail_open:
            raise exc
        _log.warning(
            "cache_backend_failed operation=%s key=%s error=%s",
            operation,
            key,
            type(exc).__name__,
        )

    async def get(self, key: str, now: float) -> CacheEntry | None:
        """The entry under *key*, or None (Redis has expired it, or Redis failed and fails open).

        Raises:
            redis.exceptions.RedisError: Redis failed and ``fail_open`` is False.
        """
        try:
            data = await self._redis.get(self._prefix + key)
        except RedisError as exc:
            self._failed("get", key, exc)
            return None
        if not isinstance(data, bytes):
            return None
        (stored_at,) = _STORED_AT.unpack_from(data)
        # Redis enforces the lifetime; the entry's own expiry is not needed here.
        return CacheEntry(self._serializer.loads(data[_STORED_AT.size :]), stored_at, math.inf)

    async def set(self, key: str, value: Any, *, stored_at: float, lifetime: float) -> None:
        """Store *value* under *key* with a Redis expiry of *lifetime* seconds.

        Raises:
            TypeError: the serializer cannot encode *value*.
            redis.exceptions.RedisError: Redis failed and ``fail_open`` is False.
        """
        payload = _STORED_AT.pack(stored_at) + self._serializer.dumps(value)
        try:
            await self._redis.set(self._prefix + key, payload, px=max(1, round(lifetime * 1000)))
        except RedisError as exc:
            self._failed("set", key, exc)

    async def delete(self, key: str) -> None:
        """Drop the entry under *key*.

        Raises:
            redis.exceptions.RedisError: Redis failed (invalidation must not pass silently).
        """
        await self._redis.delete(self._prefix + key)

    async def clear(self, prefix: str) -> None:
        """Drop every entry whose key starts with *prefix* (``SCAN`` + ``UNLINK`` in batches).

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        pattern = _glob_escape(self._prefix + prefix) + "*"
        batch: list[bytes] = []
        async for found in self._redis.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(found)
            if len(batch) >= _SCAN_BATCH:
                await self._redis.unlink(*batch)
                batch.clear()
        if batch:
            await self._redis.unlink(*batch)
