"""Per-call overhead of seawall's resilience policies against peer libraries, in one run.

Usage: .venv/bin/python bench/resilience.py [--calls 20000] [--rounds 7]
Needs the peers: .venv/bin/pip install -e '.[bench]'

Each case awaits a trivial coroutine through one wrapper, ``--calls`` times per
round, each round paired with a round of the bare call; the figure is the
median of the paired differences: the overhead over a bare await, measured
in the same run, so the ratios compare like with like. Prints a table, then
the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

Factory = Callable[[], Callable[[], Awaitable[Any]]]


async def target() -> int:
    return 1


@dataclass
class Result:
    group: str
    name: str
    seconds: float


async def _round(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) / calls


async def _round_rejections(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        with contextlib.suppress(Exception):  # the rejection is what is measured
            await call()
    return (time.perf_counter() - start) / calls


async def measure(factory: Factory, calls: int, rounds: int, *, rejecting: bool = False) -> float:
    """Overhead per call over a bare await: the median of paired rounds.

    Each round of the case runs right after a round of the bare call, and the
    pair's difference is kept; the median of the differences is robust against
    the machine's own noise (frequency changes, neighbours), which moves whole
    rounds by tens of percent here.
    """
    call = factory()
    runner = _round_rejections if rejecting else _round
    bare = _bare_call
    await runner(call, min(calls, 1000))  # warm up
    await _round(bare, min(calls, 1000))
    gc.collect()
    differences = []
    for _ in range(rounds):
        baseline = await _round(bare, calls)
        differences.append(await runner(call, calls) - baseline)
    return statistics.median(differences)


def _bare_call() -> Awaitable[Any]:
    return target()


# --- peers --------------------------------------------------------------------------------------


def peer_circuitbreaker() -> Callable[[], Awaitable[Any]]:
    from circuitbreaker import circuit

    return circuit(failure_threshold=5, recovery_timeout=30)(target)  # type: ignore[no-any-return]


def peer_aiobreaker() -> Callable[[], Awaitable[Any]]:
    from aiobreaker import CircuitBreaker

    breaker = CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
    return breaker(target)  # type: ignore[no-any-return]


def peer_purgatory() -> Callable[[], Awaitable[Any]]:
    from purgatory import AsyncCircuitBreakerFactory

    factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    return factory("bench")(target)  # type: ignore[no-any-return]


def peer_tenacity() -> Callable[[], Awaitable[Any]]:
    import tenacity

    return tenacity.retry(stop=tenacity.stop_after_attempt(3))(target)


def peer_stamina() -> Callable[[], Awaitable[Any]]:
    import stamina

    return stamina.retry(on=Exception, attempts=3)(target)


def peer_limits_moving_window() -> Callable[[], Awaitable[Any]]:
    from limits import parse
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(MemoryStorage())
    item = parse("1000000000/second")

    async def call() -> Any:
        if not await limiter.hit(item, "bench"):
            raise RuntimeError("limited")
        return await target()

    return call


def peer_limits_sliding_counter() -> Callable[[], Awaitable[Any]]:
    from limits import parse
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
    item = parse("1000000000/second")

    async def call() -> Any:
        if not await limiter.hit(item, "bench"):
            raise RuntimeError("limited")
        return await target()

    return call


def peer_circuitbreaker_open() -> Callable[[], Awaitable[Any]]:
    from circuitbreaker import circuit

    @circuit(failure_threshold=1, recovery_timeout=3600)
    async def failing() -> None:
        raise ConnectionError("down")

    return failing


PEERS: list[tuple[str, str, Factory]] = [
    ("breaker", "circuitbreaker", peer_circuitbreaker),
    ("breaker", "aiobreaker", peer_aiobreaker),
    ("breaker", "purgatory", peer_purgatory),
    ("retry", "tenacity", peer_tenacity),
    ("retry", "stamina", peer_stamina),
    ("rate limit", "limits moving window (async memory)", peer_limits_moving_window),
    ("rate limit", "limits sliding counter (async memory)", peer_limits_sliding_counter),
]


# --- seawall ------------------------------------------------------------------------------------

BIG_RATE = "1000000000/second"  # never refuses: the decision itself is measured


def sw_breaker() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import circuit

    return circuit(failure_threshold=5, recovery_timeout=30)(target)


def sw_breaker_stage() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, CircuitBreaker

    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=30)
    context = CallContext(operation="bench")
    return lambda: breaker.run(target, context)


def sw_retry() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import retry, stop_after_attempt

    return retry(stop=stop_after_attempt(3))(target)


def sw_retry_stage() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, Retry

    policy = Retry(max_attempts=3)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_timeout() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, Timeout

    policy = Timeout(per_attempt=10)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_rate_limit() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, RateLimit

    policy = RateLimit(BIG_RATE)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_bulkhead() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import Bulkhead, CallContext

    policy = Bulkhead(max_concurrent=10)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_cache_hit() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import Cache

    return Cache(ttl=3600)(target)


def sw_fallback() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, Fallback

    policy = Fallback(value=0)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_chaos_off() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CallContext, Chaos

    policy = Chaos(enabled=False, fault_rate=1.0)
    context = CallContext(operation="bench")
    return lambda: policy.run(target, context)


def sw_pipeline() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import CircuitBreaker, Pipeline, RateLimit, Retry, Timeout

    pipeline = Pipeline(
        [
            CircuitBreaker(failure_threshold=5, recovery_timeout=30),
            Retry(max_attempts=3),
            Timeout(per_attempt=10),
            RateLimit(BIG_RATE),
        ]
    )
    return pipeline(target)


def plain_raise() -> Callable[[], Awaitable[Any]]:
    async def raising() -> None:
        raise ConnectionError("down")

    return raising


def sw_breaker_open() -> Callable[[], Awaitable[Any]]:
    from seawall.resilience import circuit

    @circuit(failure_threshold=1, recovery_timeout=3600)
    async def failing() -> None:
        raise ConnectionError("down")

    return failing


SEAWALL: list[tuple[str, str, Factory]] = [
    ("breaker", "seawall @circuit", sw_breaker),
    ("breaker", "seawall CircuitBreaker (pipeline stage)", sw_breaker_stage),
    ("retry", "seawall @retry", sw_retry),
    ("retry", "seawall Retry (pipeline stage)", sw_retry_stage),
    ("timeout", "seawall Timeout per attempt", sw_timeout),
    ("rate limit", "seawall RateLimit token bucket (memory)", sw_rate_limit),
    ("bulkhead", "seawall Bulkhead", sw_bulkhead),
    ("cache", "seawall Cache hit (memory)", sw_cache_hit),
    ("fallback", "seawall Fallback, success", sw_fallback),
    ("chaos", "seawall Chaos, disabled", sw_chaos_off),
    ("pipeline", "seawall breaker+retry+timeout+rate limit", sw_pipeline),
]


def sync_target() -> int:
    return 1


def _sync_overhead(wrapped: Callable[[], Any], calls: int, rounds: int) -> float:
    differences = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            sync_target()
        bare = (time.perf_counter() - start) / calls
        start = time.perf_counter()
        for _ in range(calls):
            wrapped()
        differences.append((time.perf_counter() - start) / calls - bare)
    return statistics.median(differences)


def sync_breakers() -> list[tuple[str, Callable[[], Any]]]:
    """Sync functions behind each breaker (pybreaker decorates sync code only)."""
    from seawall.resilience import circuit

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("seawall @circuit (sync)", circuit(failure_threshold=5, recovery_timeout=30)(sync_target))
    ]
    try:
        import pybreaker
        from circuitbreaker import circuit as peer_circuit

        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
        cases.append(("pybreaker (sync)", breaker(sync_target)))
        cases.append(
            (
                "circuitbreaker (sync)",
                peer_circuit(failure_threshold=5, recovery_timeout=30)(sync_target),
            )
        )
    except ImportError:
        print("  pybreaker/circuitbreaker not installed: pip install -e '.[bench]'")
    return cases


async def rejection_memory(factory: Factory, rejections: int) -> int:
    """Bytes still allocated after *rejections* rejections by an open breaker."""
    call = factory()
    for _ in range(1000):
        try:
            await call()
        except Exception:  # warming up the open state
            continue
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(rejections):
        try:
            await call()
        except Exception:  # the rejection is what is measured
            continue
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def _row(name: str, overhead: float) -> str:
    return f"  {name:<52} overhead {overhead * 1e6:7.3f} µs"


def targets(over: dict[str, float], growth: int) -> list[tuple[str, bool]]:
    """The issue's targets, judged within this run."""
    peer_breakers = [over[n] for n in ("circuitbreaker", "aiobreaker", "purgatory") if n in over]
    checks: list[tuple[str, bool]] = []
    if peer_breakers:
        fastest = min(peer_breakers)
        ratio = over["seawall @circuit"] / fastest
        checks.append(
            (f"breaker success path / fastest peer breaker = {ratio:.2f} (<= 1)", ratio <= 1)
        )
    sync_peers = [over[n] for n in ("pybreaker (sync)", "circuitbreaker (sync)") if n in over]
    if sync_peers:
        ratio = over["seawall @circuit (sync)"] / min(sync_peers)
        checks.append(
            (f"sync breaker / fastest sync peer breaker = {ratio:.2f} (<= 1)", ratio <= 1)
        )
    rejection = over["seawall open-circuit rejection"] * 1e6
    beyond = rejection - over["raise + catch"] * 1e6
    checks.append(
        (
            f"open-circuit rejection overhead = {rejection:.2f} µs (<= 0.6); "
            f"{beyond:.2f} µs of it beyond raising any exception",
            rejection <= 0.6,
        )
    )
    checks.append((f"memory after 100,000 rejections = {growth} bytes (flat)", growth < 16_384))
    if "stamina" in over:
        ratio = over["stamina"] / over["seawall @retry"]
        checks.append((f"stamina / seawall retry success path = {ratio:.1f}x (>= 10)", ratio >= 10))
    decision = over["seawall RateLimit token bucket (memory)"] * 1e6
    checks.append((f"rate-limit decision in memory = {decision:.2f} µs (<= 1)", decision <= 1))
    full = over["seawall breaker+retry+timeout+rate limit"]
    checks.append(
        (f"breaker+retry+timeout+rate limit = {full * 1e6:.2f} µs (<= 10)", full <= 10e-6)
    )
    if "tenacity" in over:
        ratio = over["tenacity"] / full
        checks.append((f"tenacity alone / full pipeline = {ratio:.1f}x (>= 3)", ratio >= 3))
    return checks


async def main(calls: int, rounds: int) -> int:
    print(f"python {sys.version.split()[0]}, {calls} calls x {rounds} paired rounds (median)")
    bare = min([await _round(_bare_call, calls) for _ in range(rounds)])
    print(f"  {'bare await target()':<52} {bare * 1e6:8.3f} µs per call")
    over: dict[str, float] = {}
    for group, name, factory in PEERS + SEAWALL:
        try:
            over[name] = await measure(factory, calls, rounds)
        except ImportError as exc:
            print(f"  {name:<52} skipped ({exc.name} not installed: pip install -e '.[bench]')")
            continue
        print(_row(f"[{group}] {name}", over[name]))

    over["raise + catch"] = await measure(plain_raise, calls, rounds, rejecting=True)
    print(_row("[rejection] floor: raise + catch a plain exception", over["raise + catch"]))
    rejection = await measure(sw_breaker_open, calls, rounds, rejecting=True)
    over["seawall open-circuit rejection"] = rejection
    print(_row("[rejection] seawall open circuit (raise + catch)", rejection))
    try:
        peer = await measure(peer_circuitbreaker_open, calls, rounds, rejecting=True)
        over["circuitbreaker open-circuit rejection"] = peer
        print(_row("[rejection] circuitbreaker open circuit", peer))
    except ImportError:
        pass
    for name, wrapped in sync_breakers():
        over[name] = _sync_overhead(wrapped, calls, rounds)
        print(_row(f"[breaker, sync] {name}", over[name]))
    growth = await rejection_memory(sw_breaker_open, 100_000)
    print(f"  memory still held after 100,000 seawall rejections: {growth} bytes")

    print("\ntargets (ratios within this run):")
    checks = targets(over, growth)
    for text, ok in checks:
        print(f"  [{'met ' if ok else 'MISS'}] {text}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.calls, options.rounds)))
