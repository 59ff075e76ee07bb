"""Resilience policies that compose into one pipeline.

Policies: `CircuitBreaker` (and the `circuit` decorator), `Retry` (and the
tenacity-compatible `retry` decorator with `wait_*`, `stop_*` and `retry_if_*`),
`Timeout`, `RateLimit`, `Bulkhead`, `Cache`, `Fallback` and `Chaos`. Each works
alone (``await policy.call(fn, ...)`` or as a decorator) and inside a `Pipeline`,
which puts them in a documented order (see ``docs/resilience.md``). Every policy
reports what it does to an `EventHub`; `seawall.observability.observe_resilience`
turns the events into log lines and Prometheus metrics.

Importing this package loads neither SQLAlchemy, FastAPI, NATS nor Redis; the
Redis-backed stores live in `seawall.resilience.redis`.
"""

from seawall.errors import (
    BulkheadFull,
    CircuitOpenError,
    RateLimitExceeded,
    ResilienceError,
    RetryError,
    TimeoutExceeded,
)
from seawall.resilience._breaker import CircuitBreaker, circuit
from seawall.resilience._breaker_rules import BreakerState, next_state
from seawall.resilience._breaker_store import BreakerStore, ProbeGrant, SharedState
from seawall.resilience._breaker_windows import CountWindow, TimeWindow
from seawall.resilience._bulkhead import Bulkhead
from seawall.resilience._cache import (
    TTL_PRESETS,
    Cache,
    CacheBackend,
    CacheEntry,
    MemoryCacheBackend,
)
from seawall.resilience._chaos import Chaos
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, SystemClock
from seawall.resilience._context import CallContext, Policy
from seawall.resilience._events import EventHub, ResilienceEvent, Subscriber, events
from seawall.resilience._fallback import Fallback
from seawall.resilience._pipeline import Pipeline
from seawall.resilience._ratelimit import Rate, RateLimit, RateLimitStorage, parse
from seawall.resilience._retry import (
    Retry,
    RetryBudget,
    is_transient,
    parse_retry_after,
    retryable_status,
)
from seawall.resilience._retrying import before_sleep_log, retry
from seawall.resilience._timeout import Timeout
from seawall.resilience._waits import (
    RetryCallState,
    compute_delay,
    retry_all,
    retry_always,
    retry_any,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_if_not_result,
    retry_if_result,
    retry_never,
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_combine,
    wait_decorrelated_jitter,
    wait_equal_jitter,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)

__all__ = [
    "SYSTEM_CLOCK",
    "TTL_PRESETS",
    "BreakerState",
    "BreakerStore",
    "Bulkhead",
    "BulkheadFull",
    "Cache",
    "CacheBackend",
    "CacheEntry",
    "CallContext",
    "Chaos",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "CountWindow",
    "EventHub",
    "Fallback",
    "MemoryCacheBackend",
    "Pipeline",
    "Policy",
    "ProbeGrant",
    "Rate",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimitStorage",
    "ResilienceError",
    "ResilienceEvent",
    "Retry",
    "RetryBudget",
    "RetryCallState",
    "RetryError",
    "SharedState",
    "Subscriber",
    "SystemClock",
    "TimeWindow",
    "Timeout",
    "TimeoutExceeded",
    "before_sleep_log",
    "circuit",
    "compute_delay",
    "events",
    "is_transient",
    "next_state",
    "parse",
    "parse_retry_after",
    "retry",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_type",
    "retry_if_not_exception_type",
    "retry_if_not_result",
    "retry_if_result",
    "retry_never",
    "retryable_status",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "wait_chain",
    "wait_combine",
    "wait_decorrelated_jitter",
    "wait_equal_jitter",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]
