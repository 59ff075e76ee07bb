"""ExternalService against raw httpx.AsyncClient: same server, same run, same concurrency.

Usage: .venv/bin/python bench/http_client.py [--requests 3000] [--concurrency 1,4,16] [--rounds 3]
       .venv/bin/python bench/http_client.py --quick    # a small run that checks it all works

The server is seawall's fake ``echo`` provider in a child process (so it does not
share this process's GIL), answering ``GET /items/{id}`` with a small JSON object
over keep-alive connections. Both clients make the same calls and validate the
body into the same pydantic model:

- raw: ``httpx.AsyncClient.get`` (same pool size and timeouts), ``raise_for_status``
  and ``Item.model_validate_json``;
- seawall: ``ExternalService.get(..., model=Item)`` with its full default pipeline
  (retry, circuit breaker, per-phase timeouts, correlation headers, a log line
  per call at INFO written as JSON to /dev/null), plus a bearer token, a rate
  limit far above the load and a bulkhead — every policy on the path, none
  refusing.

Each round runs raw then seawall (then the order flips, so neither always gets
the warmer CPU); the table shows the median of the rounds and the ratio of
medians. Latency is per call, from a worker's start of the call to its result.
Also shown: seawall with logging at WARNING (no per-call line), to show what the
log line costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from pydantic import BaseModel

from seawall.http import BearerToken, ExternalService, Timeouts
from seawall.observability import configure_logging
from seawall.resilience import RateLimit
from seawall.testing import spawn_fake

# Log lines go to /dev/null: written and flushed like real ones, but not to a terminal.
sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run


class Item(BaseModel):
    id: str
    name: str
    price: int


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float


Call = Callable[[int], Awaitable[object]]


async def drive(call: Call, requests: int, concurrency: int) -> Run:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Run(
        rps=requests / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def median_run(runs: list[Run]) -> Run:
    return Run(
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
    )


async def measure(url: str, args: argparse.Namespace, concurrency: int) -> dict[str, Run]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)
    raw_client = httpx.AsyncClient(
        base_url=url,
        limits=limits,
        timeout=timeout,
        trust_env=False,
        headers={"Authorization": "Bearer bench-token"},
    )

    async def raw(n: int) -> object:
        response = await raw_client.get(f"/items/{n % 100}")
        response.raise_for_status()
        return Item.model_validate_json(response.content)

    service = ExternalService(
        "bench",
        url,
        auth=BearerToken("bench-token"),
        timeouts=Timeouts(),
        rate_limit=RateLimit("1000000/second", name="bench"),
        bulkhead=concurrency * 2,
        max_connections=concurrency,
        max_keepalive=concurrency,
    )

    async def seawall(n: int) -> object:
        return await service.get("/items/{id}", path_params={"id": n % 100}, model=Item)

    results: dict[str, list[Run]] = {"raw": [], "seawall": [], "seawall_quiet": []}
    async with raw_client, service:
        # Warm up both pools and code paths.
        await drive(raw, 200, concurrency)
        await drive(seawall, 200, concurrency)
        for round_no in range(args.rounds):
            order = ["raw", "seawall"] if round_no % 2 == 0 else ["seawall", "raw"]
            for name in order:
                call = raw if name == "raw" else seawall
                results[name].append(await drive(call, args.requests, concurrency))
            configure_logging("warning", stream=sink)
            try:
                results["seawall_quiet"].append(await drive(seawall, args.requests, concurrency))
            finally:
                configure_logging("info", stream=sink)
    return {name: median_run(runs) for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="calls per round and side")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 calls, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 200, 2
    levels = [int(level) for level in args.concurrency.split(",")]
    configure_logging("info", stream=sink)
    print(
        f"ExternalService vs raw httpx: {args.requests} GETs per round and side, "
        f"median of {args.rounds} rounds, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs (the fake server shares them)"
    )
    print(
        f"{'conc':>4}  {'client':<26}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'ratio':>8}{'+p50 ms':>9}{'+p99 ms':>9}"
    )
    verdicts = []
    with spawn_fake("echo", record=False) as server:
        for concurrency in levels:
            results = asyncio.run(measure(server.url, args, concurrency))
            raw = results["raw"]
            for label, run in (
                ("raw httpx", raw),
                ("ExternalService", results["seawall"]),
                ("ExternalService, no log", results["seawall_quiet"]),
            ):
                extra = (
                    ""
                    if run is raw
                    else f"{run.rps / raw.rps:>8.2f}{run.p50_ms - raw.p50_ms:>+9.2f}"
                    f"{run.p99_ms - raw.p99_ms:>+9.2f}"
                )
                print(
                    f"{concurrency:>4}  {label:<26}{run.rps:>8.0f}{run.p50_ms:>9.2f}"
                    f"{run.p99_ms:>9.2f}{extra}"
                )
            full = results["seawall"]
            verdicts.append((concurrency, full.rps / raw.rps, full.p99_ms - raw.p99_ms))
    for concurrency, ratio, added in verdicts:
        print(
            f"concurrency {concurrency}: throughput ratio {ratio:.2f} (target >= 0.90: "
            f"{'met' if ratio >= 0.9 else 'MISSED'}), added p99 {added:+.2f} ms "
            f"(target < 1 ms: {'met' if added < 1.0 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
