"""CRM full resync against the raw rate at which the fake CRM serves its change feed.

Usage: .venv/bin/python bench/sync.py [--records 100000] [--rounds 3] [--page-size 1000]
                                      [--postgres postgresql://127.0.0.1:5432/test]
       .venv/bin/python bench/sync.py --quick    # a small run that checks it all works

The fake CRM (`seawall.testing.FakeCRM`, seeded with ``--records`` tickets, one
change each) runs in a child process, so it does not share this process's GIL.
Each round measures, one after the other:

- raw: ``httpx.AsyncClient`` reading ``GET /api/v1/changes`` page by page
  (``limit=--page-size``, a bearer token fetched beforehand) and parsing each
  page's JSON: the rate at which the fake serves the feed, and the ceiling of any
  client;
- sync: ``CrmSync.run(full=True)`` through `SalesforceCRM` (OAuth 2.0, the
  service's retry and breaker, the anti-corruption layer) into a fresh, migrated
  database: every change becomes a case, a ``sync_links`` row and a
  ``case.synced`` outbox event, each page committed with its cursor. Logging at
  WARNING (no line per call).

Records per second for each, the median of the rounds, and ``ratio = sync / raw``.
SQLite always; PostgreSQL too with ``--postgres`` (a database of its own,
``seawall_bench_sync_*``, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

CLIENT_ID = "seawall-crm-client"
CLIENT_SECRET = "seawall-crm-secret"  # noqa: S105 - the fake's credential


def serve_fake(records: int) -> None:
    """Child process: a FakeCRM with *records* tickets, until stdin closes."""
    from seawall.testing import FakeCRM

    with FakeCRM(max_recorded=1) as fake:
        fake.add_tickets(records)
        print(fake.url, flush=True)
        sys.stdin.read()


async def raw_rate(url: str, page_size: int) -> tuple[float, int]:
    """Records per second reading the whole feed with bare httpx, and the count read."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        token = (
            await client.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                },
            )
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        read, cursor, more = 0, "0", True
        started = time.perf_counter()
        while more:
            response = await client.get(
                "/api/v1/changes", params={"since": cursor, "limit": page_size}, headers=headers
            )
            response.raise_for_status()
            page = response.json()
            read += len(page["changes"])
            cursor, more = page["next_cursor"], page["has_more"]
        return read / (time.perf_counter() - started), read


async def sync_rate(url: str, database_url: str, page_size: int) -> tuple[float, int]:
    """Records per second of a full resync into a fresh database, and the count applied."""
    from seawall.app._sync import CrmSync
    from seawall.db import Database, migrate
    from seawall.integrations import SalesforceCRM

    database = Database(database_url)
    try:
        await migrate(database)
        async with SalesforceCRM.build(
            base_url=url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        ) as crm:
            sync = CrmSync(crm, database, page_size=page_size)
            started = time.perf_counter()
            report = await sync.run(full=True)
            elapsed = time.perf_counter() - started
        return report.applied / elapsed, report.applied
    finally:
        await database.dispose()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def postgres_rate(url: str, admin_url: str, page_size: int) -> tuple[float, int]:
    name = f"seawall_bench_sync_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return await sync_rate(url, f"{base}/{name}", page_size)
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--postgres", default=None, help="also sync into PostgreSQL at this URL")
    parser.add_argument("--quick", action="store_true", help="2,000 records, one round")
    parser.add_argument("--serve-fake", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        serve_fake(args.serve_fake)
        return 0
    if args.quick:
        args.records, args.rounds = 2000, 1

    from seawall.observability import configure_logging

    configure_logging("warning")
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, __file__, "--serve-fake", str(args.records)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    url = child.stdout.readline().strip()
    results: dict[str, list[float]] = {"raw": [], "sqlite": [], "postgres": []}
    try:
        for round_number in range(1, args.rounds + 1):
            raw, read = asyncio.run(raw_rate(url, args.page_size))
            assert read == args.records, read
            results["raw"].append(raw)
            with tempfile.TemporaryDirectory() as folder:
                database_url = f"sqlite:///{Path(folder) / 'sync.db'}"
                rate, applied = asyncio.run(sync_rate(url, database_url, args.page_size))
            assert applied == args.records, applied
            results["sqlite"].append(rate)
            line = f"round {round_number}: raw {raw:,.0f}/s, sync sqlite {rate:,.0f}/s"
            if args.postgres:
                rate, applied = asyncio.run(postgres_rate(url, args.postgres, args.page_size))
                assert applied == args.records, applied
                results["postgres"].append(rate)
                line += f", sync postgres {rate:,.0f}/s"
            print(line, flush=True)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    raw = statistics.median(results["raw"])
    print(f"\n{args.records:,} records, pages of {args.page_size}, median of {args.rounds}")
    print(f"{'':22}{'records/s':>12}{'ratio':>8}")
    print(f"{'raw feed (httpx)':22}{raw:>12,.0f}{1:>8.2f}")
    for target in ("sqlite", "postgres"):
        if results[target]:
            rate = statistics.median(results[target])
            print(f"{'full resync, ' + target:22}{rate:>12,.0f}{rate / raw:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
