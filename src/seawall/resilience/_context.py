"""The per-call context that travels through a pipeline, and the `Policy` protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

T = TypeVar("T")

Thunk = Callable[[], Awaitable[T]]
"""A call with its arguments bound: each invocation starts a fresh attempt."""


@dataclass(slots=True)
class CallContext:
    """Facts about one call, shared by the policies it passes through.

    Attributes:
        operation: what is called, for keys and logs (``"GET /customers/{id}"``).
        key: the partition for caches and rate limits (a tenant, a resource id);
            policies fall back to *operation* and the arguments when it is None.
        idempotent: whether running the call twice is safe. `Retry` never
            repeats a non-idempotent call unless it carries an idempotency key.
        idempotency_key: the key the provider deduplicates this call by (for
            example Stripe's ``Idempotency-Key``), which makes a retry safe.
        args: the positional arguments of the call.
        kwargs: the keyword arguments of the call.
        attempt: the current attempt, counted from 1 (set by `Retry`).
        deadline: monotonic time by which the whole call must end (set by a
            total `Timeout`); `Retry` does not sleep past it.
    """

    operation: str = ""
    key: str | None = None
    idempotent: bool = True
    idempotency_key: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    deadline: float | None = None

    def partition(self) -> str:
        """The key that identifies this call's target for caching and rate limiting."""
        if self.key is not None:
            return self.key
        if not self.args and not self.kwargs:
            return self.operation
        return f"{self.operation}:{self.args!r}:{sorted(self.kwargs.items())!r}"


class Policy(Protocol):
    """A resilience policy: something that runs a call and decides around it.

    ``stage`` is the policy's position in a `Pipeline` (outermost first); see
    ``docs/resilience.md`` for why each sits where it does.
    """

    stage: ClassVar[int]
    name: str

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* (the rest of the pipeline) under this policy."""
        ...


# Pipeline positions, outermost first. Gaps leave room for user policies.
STAGE_FALLBACK = 100
STAGE_CACHE = 200
STAGE_TOTAL_TIMEOUT = 300
STAGE_RETRY = 400
STAGE_CIRCUIT_BREAKER = 500
STAGE_RATE_LIMIT = 600
STAGE_BULKHEAD = 700
STAGE_ATTEMPT_TIMEOUT = 800
STAGE_CHAOS = 900
