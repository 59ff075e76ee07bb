"""`Pipeline`: several policies composed around one call, in a sensible order."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from seawall.resilience._context import CallContext, Policy, Thunk

P = ParamSpec("P")
T = TypeVar("T")


def _stages_of(policy: Any) -> Sequence[Policy]:
    # A policy may stand at more than one position (a Timeout has a total part
    # outside the retries and a per-attempt part inside them).
    split = getattr(policy, "pipeline_stages", None)
    return tuple(split()) if split is not None else (policy,)


def operation_name(fn: Callable[..., Any]) -> str:
    """The name a call is reported and keyed under: the function's qualified name."""
    return getattr(fn, "__qualname__", None) or repr(fn)


class PolicyCalls:
    """`call` and the decorator, for a policy that has ``run(thunk, context)``.

    ``await policy.call(fn, *args)`` runs one call under the policy;
    ``@policy`` decorates an async function so that every call does.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        async def run(self, thunk: Thunk[T], context: CallContext) -> T:
            """Run *thunk* under the policy (each subclass provides it)."""
            ...

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under this policy."""
        context = CallContext(operation=operation_name(fn), args=args, kwargs=kwargs)
        return await self.run(functools.partial(fn, *args, **kwargs), context)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call goes through this policy."""
        operation = operation_name(fn)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            context = CallContext(operation=operation, args=args, kwargs=kwargs)
            return await self.run(functools.partial(fn, *args, **kwargs), context)

        return wrapper


class Pipeline(PolicyCalls):
    """Policies composed around a call.

    By default the policies are put in seawall's canonical order, outermost first:
    fallback, cache, total timeout, retry, circuit breaker, rate limit, bulkhead,
    per-attempt timeout, chaos. ``docs/resilience.md`` gives the reason for each
    position. Pass ``ordered=False`` to keep the order given.

    Use it as ``await pipeline.call(fn, *args, **kwargs)`` or as a decorator.

    Args:
        policies: the policies, in any order.
        name: reported in events and errors.
        ordered: sort the policies into the canonical order (default) or keep them.
    """

    __slots__ = ("_reversed", "name", "stages")

    def __init__(
        self, policies: Iterable[Any], *, name: str = "pipeline", ordered: bool = True
    ) -> None:
        stages = [stage for policy in policies for stage in _stages_of(policy)]
        for stage in stages:
            if not callable(getattr(stage, "run", None)):
                raise TypeError(f"{stage!r} is not a resilience policy (it has no run method)")
        if ordered:
            stages.sort(key=lambda stage: stage.stage)
        self.name = name
        self.stages: tuple[Policy, ...] = tuple(stages)
        self._reversed = tuple(reversed(self.stages))

    def __repr__(self) -> str:
        inner = ", ".join(type(stage).__name__ for stage in self.stages)
        return f"Pipeline({self.name!r}, [{inner}])"

    async def run(self, thunk: Thunk[T], context: CallContext) -> T:
        """Run *thunk* through every policy with an explicit *context*.

        This is what integrations (such as an HTTP client) use to pass the
        operation name, the partition key and whether the call is idempotent.
        """
        call: Thunk[T] = thunk
        for stage in self._reversed:
            call = functools.partial(stage.run, call, context)
        return await call()
