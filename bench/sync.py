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
  WARNING (no line per call);
- db floor: the bare driver writing exactly the rows a full resync writes for
  each record, in the same pages, into a fresh database migrated by seawall's
  migrations (its indexes and the outbox's ``NOTIFY`` trigger): per page of
  ``--page-size`` records, one transaction with the page's ``cases``,
  ``sync_links`` and ``outbox`` (``case.synced``) rows and the cursor's
  ``sync_cursors`` statements, then the commit. No HTTP, no validation, no
  SQLAlchemy; the rows (same columns, values of the same sizes: the ticket's
  record in the case's metadata, the event's JSON payload) are built beforehand,
  untimed. SQLite: the stdlib ``sqlite3`` with the service's PRAGMAs (WAL,
  ``synchronous=FULL``), ``BEGIN IMMEDIATE``, one ``executemany`` per table.
  PostgreSQL: asyncpg's binary ``COPY`` (``copy_records_to_table``) per table,
  the fastest path tried: on 100,000 records about 1.2x ``INSERT ... SELECT FROM
  unnest(...)`` (what `seawall.db.insert_rows` sends) and 1.6x ``executemany``.

Everything runs as ``seawall sync crm`` runs: on uvloop's event loop when it is
installed, after `seawall.process.freeze_startup_heap` (the floor's prepared rows
are frozen with the rest, so they burden no round's garbage collections).

Records per second for each, the median of the rounds, ``ratio = rate / raw``
and microseconds per record. The db floor is the ceiling of any sync that writes
these rows in these transactions, so its ratio bounds the ratio sync can reach:
when ``db floor`` is below a target ratio, the target cannot be met on this
machine by changing the sync's code alone. SQLite always; PostgreSQL too with
``--postgres`` (databases of their own, ``seawall_bench_sync_*``, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from seawall.process import freeze_startup_heap
from seawall.process import run as run_process

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


# --- the database floor: the rows a full resync writes, by the bare driver ---------------

SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a UTC datetime in SQLite
FULL_CURSOR = "crm:full"  # the cursor of a full resync in progress (`PagedSync`)
FLOOR_TABLES = (
    # The tables and columns a new case writes, in the order `apply_changes` writes them.
    (
        "cases",
        (
            "id",
            "title",
            "status",
            "priority",
            "external_id",
            "customer_id",
            "metadata",
            "version",
            "created_at",
            "updated_at",
        ),
    ),
    (
        "sync_links",
        ("source", "external_id", "case_id", "case_version", "remote_updated_at", "synced_at"),
    ),
    (
        "outbox",
        (
            "event_id",
            "event_type",
            "source",
            "subject",
            "aggregate_type",
            "aggregate_id",
            "payload",
            "correlation_id",
            "causation_id",
            "occurred_at",
            "created_at",
            "attempts",
        ),
    ),
)
SQLITE_PRAGMAS = (
    # What `seawall.db.Database` sets on each SQLite connection.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
SQLITE_INSERTS = (
    # FLOOR_TABLES, as the INSERTs `seawall.db.insert_rows` sends through sqlite3.
    "INSERT INTO cases (id, title, status, priority, external_id, customer_id, metadata, "
    "version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO sync_links (source, external_id, case_id, case_version, remote_updated_at, "
    "synced_at) VALUES (?, ?, ?, ?, ?, ?)",
    "INSERT INTO outbox (event_id, event_type, source, subject, aggregate_type, aggregate_id, "
    "payload, correlation_id, causation_id, occurred_at, created_at, attempts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
CURSOR_STATEMENTS = {
    # (SQLite, PostgreSQL): what `seawall.sync.Cursors` runs; advance, then at the end set + reset.
    "insert": (
        "INSERT INTO sync_cursors (name, cursor, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        "INSERT INTO sync_cursors (name, cursor, updated_at) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
    ),
    "advance": (
        "UPDATE sync_cursors SET cursor = ?, updated_at = ? WHERE name = ? AND cursor = ?",
        "UPDATE sync_cursors SET cursor = $1, updated_at = $2 WHERE name = $3 AND cursor = $4",
    ),
    "set": (
        "UPDATE sync_cursors SET cursor = ?, updated_at = ? WHERE name = ?",
        "UPDATE sync_cursors SET cursor = $1, updated_at = $2 WHERE name = $3",
    ),
    "reset": (
        "DELETE FROM sync_cursors WHERE name = ?",
        "DELETE FROM sync_cursors WHERE name = $1",
    ),
}


@dataclass(frozen=True, slots=True)
class FloorPage:
    """One page of a full resync as rows: a case, a link and an outbox row per record.

    ``cursor`` holds the page's statements on ``sync_cursors`` with their arguments.
    """

    cases: list[tuple[Any, ...]]
    links: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    cursor: list[tuple[str, tuple[Any, ...]]]


def floor_pages(records: int, page_size: int, *, postgres: bool) -> list[FloorPage]:
    """The rows `CrmSync` writes for *records* new tickets, page by page (built untimed).

    The values are those a full resync of the fake writes (checked against one):
    time-ordered ids (`seawall.ids`, as the sync makes them), the ticket's record
    in the case's metadata (about 240 bytes of JSON), the ``case.synced`` data as
    the outbox payload (about 410 bytes), one timestamp per page; serialized as the
    driver takes them: JSON as text, timestamps as aware datetimes (PostgreSQL) or
    SQLAlchemy's naive UTC text (SQLite).
    """
    from seawall.ids import new_ids

    which = 1 if postgres else 0
    modified = datetime.now(UTC)
    modified = modified.replace(microsecond=modified.microsecond // 1000 * 1000)  # the CRM's
    remote = modified if postgres else modified.strftime(SQLITE_TIME)
    modified_text = modified.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    pages: list[FloorPage] = []
    for first in range(0, records, page_size):
        now = datetime.now(UTC)
        stamp = now if postgres else now.strftime(SQLITE_TIME)
        cases: list[tuple[Any, ...]] = []
        links: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for number in range(first + 1, min(first + page_size, records) + 1):
            case_id, event_id = new_ids(2)
            ticket_id, title = f"500{number:012d}AAA", f"Ticket {number}"
            record = {
                "Id": ticket_id,
                "Description": "",
                "Urgency": "Medium",
                "State": "New",
                "CustomerId": None,
                "ExternalRef": None,
                "Subject": title,
                "LastModifiedDate": modified_text,
                "IsDeleted": False,
            }
            metadata = json.dumps({"source": "crm", "crm": record})
            case = {
                "id": case_id,
                "title": title,
                "status": "open",
                "priority": "medium",
                "external_id": ticket_id,
                "customer_id": None,
                "metadata": {"source": "crm"},
                "version": 1,
                "created_at": now.isoformat(),
                "updated_at": now.isoformat(),
            }
            data = {
                "case": case,
                "action": "created",
                "changes": {},
                "origin": "crm",
                "external_id": ticket_id,
            }
            cases.append(
                (case_id, title, "open", "medium", ticket_id, None, metadata, 1, stamp, stamp)
            )
            links.append(("crm", ticket_id, case_id, 1, remote, stamp))
            event = ("case.synced", "/seawall/cases", case_id, "case", case_id, json.dumps(data))
            events.append((event_id, *event, None, None, stamp, stamp, 0))
        cursor = str(first + len(cases))
        if first == 0:
            statements = [(CURSOR_STATEMENTS["insert"][which], (FULL_CURSOR, cursor, stamp))]
        else:
            previous = str(first)
            statements = [
                (CURSOR_STATEMENTS["advance"][which], (cursor, stamp, FULL_CURSOR, previous))
            ]
        if first + page_size >= records:
            # The end of the feed: the regular cursor goes on from here, the full one goes.
            statements += [
                (CURSOR_STATEMENTS["set"][which], (cursor, stamp, "crm")),
                (CURSOR_STATEMENTS["insert"][which], ("crm", cursor, stamp)),
                (CURSOR_STATEMENTS["reset"][which], (FULL_CURSOR,)),
            ]
        pages.append(FloorPage(cases, links, events, statements))
    return pages


async def _migrated(database_url: str) -> None:
    """Create seawall's schema at *database_url* with its migrations (indexes, triggers)."""
    from seawall.db import Database, migrate

    database = Database(database_url)
    try:
        await migrate(database)
    finally:
        await database.dispose()


def sqlite_floor(path: Path, pages: Sequence[FloorPage]) -> tuple[float, int]:
    """Records per second writing *pages* with the stdlib sqlite3 driver, and the count.

    A fresh database at *path*, migrated; one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per
    page with an ``executemany`` per table and the cursor's statements.
    """
    asyncio.run(_migrated(f"sqlite:///{path}"))
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            connection.execute(pragma)
        insert_cases, insert_links, insert_events = SQLITE_INSERTS
        written = 0
        started = time.perf_counter()
        for page in pages:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(insert_cases, page.cases)
            connection.executemany(insert_links, page.links)
            connection.executemany(insert_events, page.events)
            for statement, arguments in page.cursor:
                connection.execute(statement, arguments)
            connection.execute("COMMIT")
            written += len(page.cases)
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    return written / elapsed, written


async def postgres_floor(admin_url: str, pages: Sequence[FloorPage]) -> tuple[float, int]:
    """Records per second writing *pages* with bare asyncpg into a fresh database, and the count.

    One transaction per page: a binary ``COPY`` (`copy_records_to_table`) per
    table, which fires the outbox's ``NOTIFY`` statement trigger as an INSERT
    does, then the cursor's statements.
    """
    import asyncpg

    name = f"seawall_bench_sync_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
        await _migrated(url)
        connection = await asyncpg.connect(url)
        try:
            written = 0
            started = time.perf_counter()
            for page in pages:
                async with connection.transaction():
                    for (table, columns), rows in zip(
                        FLOOR_TABLES, (page.cases, page.links, page.events), strict=True
                    ):
                        await connection.copy_records_to_table(table, records=rows, columns=columns)
                    for statement, arguments in page.cursor:
                        await connection.execute(statement, *arguments)
                written += len(page.cases)
            elapsed = time.perf_counter() - started
        finally:
            await connection.close()
        return written / elapsed, written
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_round(
    number: int,
    url: str,
    args: argparse.Namespace,
    floors: dict[str, list[FloorPage]],
    results: dict[str, list[float]],
) -> str:
    """One round: raw, then sync and floor per database; appends to *results*, returns its line."""
    raw, read = run_process(raw_rate(url, args.page_size))
    assert read == args.records, read
    results["raw"].append(raw)
    with tempfile.TemporaryDirectory() as folder:
        database_url = f"sqlite:///{Path(folder) / 'sync.db'}"
        rate, applied = run_process(sync_rate(url, database_url, args.page_size))
    assert applied == args.records, applied
    results["sqlite"].append(rate)
    with tempfile.TemporaryDirectory() as folder:
        floor, written = sqlite_floor(Path(folder) / "floor.db", floors["sqlite"])
    assert written == args.records, written
    results["floor sqlite"].append(floor)
    line = (
        f"round {number}: raw {raw:,.0f}/s, sync sqlite {rate:,.0f}/s, floor sqlite {floor:,.0f}/s"
    )
    if args.postgres:
        rate, applied = run_process(postgres_rate(url, args.postgres, args.page_size))
        assert applied == args.records, applied
        results["postgres"].append(rate)
        floor, written = run_process(postgres_floor(args.postgres, floors["postgres"]))
        assert written == args.records, written
        results["floor postgres"].append(floor)
        line += f", sync postgres {rate:,.0f}/s, floor postgres {floor:,.0f}/s"
    return line


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

    from seawall.app._sync import CrmSync  # noqa: F401 - imported before the heap is frozen
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
    # The floor's rows, built once (untimed) and written into a fresh database each round.
    floors = {
        "sqlite": floor_pages(args.records, args.page_size, postgres=False),
        "postgres": floor_pages(args.records, args.page_size, postgres=True)
        if args.postgres
        else [],
    }
    # As `seawall sync crm` does once started; the floor's rows are frozen with the rest.
    freeze_startup_heap()
    results: dict[str, list[float]] = {
        name: [] for name in ("raw", "sqlite", "floor sqlite", "postgres", "floor postgres")
    }
    try:
        for round_number in range(1, args.rounds + 1):
            print(run_round(round_number, url, args, floors, results), flush=True)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    raw = statistics.median(results["raw"])
    print(f"\n{args.records:,} records, pages of {args.page_size}, median of {args.rounds}")
    print(f"{'':22}{'records/s':>12}{'ratio':>8}{'µs/record':>11}")
    print(f"{'raw feed (httpx)':22}{raw:>12,.0f}{1:>8.2f}{1e6 / raw:>11.1f}")
    for target in ("sqlite", "postgres"):
        for name, label in ((target, "full resync, "), ("floor " + target, "db floor, ")):
            if results[name]:
                rate = statistics.median(results[name])
                print(f"{label + target:22}{rate:>12,.0f}{rate / raw:>8.2f}{1e6 / rate:>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
