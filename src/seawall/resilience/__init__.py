"""Resilience policies that compose into one pipeline.

Importing this package loads neither SQLAlchemy, FastAPI nor NATS; the Redis
backends live in `seawall.resilience.redis` and load `redis` only when used.
"""

from seawall.errors import (
    BulkheadFull,
    CircuitOpenError,
    RateLimitExceeded,
    ResilienceError,
    RetryError,
    TimeoutExceeded,
)
from seawall.resilience._clock import SYSTEM_CLOCK, Clock, SystemClock
from seawall.resilience._context import CallContext, Policy
from seawall.resilience._events import EventHub, ResilienceEvent, Subscriber, events
from seawall.resilience._pipeline import Pipeline

__all__ = [
    "SYSTEM_CLOCK",
    "BulkheadFull",
    "CallContext",
    "CircuitOpenError",
    "Clock",
    "EventHub",
    "Pipeline",
    "Policy",
    "RateLimitExceeded",
    "ResilienceError",
    "ResilienceEvent",
    "RetryError",
    "Subscriber",
    "SystemClock",
    "TimeoutExceeded",
    "events",
]
