"""`gather_partial`: several calls at once under one deadline, keeping what succeeded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from seawall.errors import TimeoutExceeded

__all__ = ["PartialResults", "gather_partial"]

T = TypeVar("T")


@dataclass(slots=True)
class PartialResults(Generic[T]):
    """What `gather_partial` got: a result or an error per call name.

    Attributes:
        results: the calls that succeeded, by name.
        errors: the calls that failed or ran out of time, by name.
    """

    results: dict[str, T] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every call succeeded."""
        return not self.errors

    def get(self, name: str, default: Any = None) -> Any:
        """The result of *name*, or *default* if it failed."""
        return self.results.get(name, default)


async def gather_partial(
    calls: Mapping[str, Awaitable[T]], *, timeout: float | timedelta
) -> PartialResults[T]:
    """Run *calls* concurrently and return what finished within *timeout*.

    A page that aggregates five APIs takes the slowest one's time (at most
    *timeout*), not the sum, and one failure does not sink the others. Calls
    still running at the deadline are cancelled and reported as
    `seawall.errors.TimeoutExceeded` (``scope="total"``). Cancelling the
    caller cancels every call.

    Args:
        calls: awaitables (coroutines of `ExternalService` calls, say) by name.
        timeout: the deadline for all of them together.

    Returns:
        The results and the errors, by name. Exceptions that are not `Exception`
        (cancellation, KeyboardInterrupt) are not caught.
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError("timeout must be positive")
    tasks = {name: asyncio.ensure_future(call) for name, call in calls.items()}
    outcome: PartialResults[T] = PartialResults()
    if not tasks:
        return outcome
    try:
        await asyncio.wait(tasks.values(), timeout=seconds)
    finally:
        late = [task for task in tasks.values() if not task.done()]
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
    for name, task in tasks.items():
        if task.cancelled():
            outcome.errors[name] = TimeoutExceeded(
                timeout="gather_partial", seconds=seconds, scope="total"
            )
            continue
        error = task.exception()
        if error is None:
            outcome.results[name] = task.result()
        elif isinstance(error, Exception):
            outcome.errors[name] = error
        else:
            raise error
    return outcome
