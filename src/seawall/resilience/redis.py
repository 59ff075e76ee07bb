"""Redis-backed state for resilience policies, shared by every process of a fleet.

Importing this module imports ``redis``; `seawall.resilience` itself never does.

- `RedisBreakerStore`: a circuit breaker's state, open deadline and half-open
  probe leases (``CircuitBreaker(store=RedisBreakerStore(redis))``).
- `RedisRateLimitStorage`: rate-limit decisions, one atomic round trip each
  (``RateLimit("100/minute", storage=RedisRateLimitStorage(redis))``).
- `RedisCacheBackend`: cache entries (``Cache(ttl=600, backend=RedisCacheBackend(redis))``).
"""

from seawall.resilience._redis_breaker import RedisBreakerStore
from seawall.resilience._redis_cache import (
    JsonSerializer,
    PickleSerializer,
    RedisCacheBackend,
    Serializer,
)
from seawall.resilience._redis_ratelimit import RedisRateLimitStorage

__all__ = [
    "JsonSerializer",
    "PickleSerializer",
    "RedisBreakerStore",
    "RedisCacheBackend",
    "RedisRateLimitStorage",
    "Serializer",
]
