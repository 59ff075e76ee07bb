"""Writes that ride along on SQLite against the same rows written through the session.

Usage: .venv/bin/python bench/sqlite_writes.py [--rounds 8] [--count 300]

Two measurements on one SQLite file, each alternating the two ways ``--rounds``
times (which one goes first alternates too, since on a shared machine the first
of a pair is often slower):

- one event per transaction: `Outbox.add` (on SQLite its row rides along with the
  ``COMMIT``: one hop to aiosqlite's thread) against the baseline, the same row
  inserted through the session (``session.execute(outbox.insert(), row)``, two
  hops: the statement with its ``BEGIN``, then ``COMMIT``);
- the service's timeline consumer, a batch of 1, 3 and 10 case events through
  `Worker.apply_many`: `record_activity` (its rows ride along) against the same
  handler inserting each row through the session.

Two more, each on the same file and alternated the same way:

- the writer connection: `Outbox.add` in `Database.transaction` (the transaction
  that gets the write turn takes over the connection the one before used)
  against the same transaction on a connection checked out of the pool and back
  in for each (`write_turn`, then a session of `Database.sessions`), as before;
- the inbox row: `Worker.apply` with the timeline consumer (its inbox row through
  `insert_new_rows`, one hop on the driver connection) against the same delivery
  with the inbox row inserted through the session (``session.execute``);
- one raw statement, as the outbox relay's claim sends it: `sqlite_statement`
  (on a connection kept aside between statements, `Database.statement_connection`)
  against the same statement on a connection checked out of the pool and back in;
- a live batch of the timeline consumer (1 and 10 events), as `Worker` runs it on
  SQLite: its inbox rows riding along with the `COMMIT` against the same batch
  with the rows inserted first in a hop of their own (``apply_many``'s way);
- the session's way through a transaction: `Outbox.add` in `Database.transaction`
  (``begin`` and the connection taken directly, the commit and the close in one
  trip through SQLAlchemy's greenlet bridge) against the same transaction on the
  same writer connection through ``async with session, session.begin()`` (four
  trips, each a new greenlet, and a task for the close);
- where the writer's commit runs: `Outbox.add` in `Database.transaction`, its
  ``BEGIN IMMEDIATE``, row and ``COMMIT`` on the event loop's thread
  (`commit_here`, what the writer does while other transactions wait for the
  turn) against the same sent to aiosqlite's thread, alone
  and with a second task keeping the loop busy between them (as the relay and
  the consumers do in the service: 300 µs of Python, then 1 ms idle). The loop
  thread's CPU includes
  SQLite's own work, which the baseline does on its thread: the wall time (the
  time the write turn is held) is the figure that counts.
- group commit: eight producer tasks at once, each committing `Outbox.add`
  transactions one after another, their commits held while the others wait for
  the turn and committed together (`Database.transaction`), against the same
  with nothing held (each commits alone, on the loop while others wait). The
  wall time per transaction is the inverse of the rate they reach together.

Prints, per way, the median and range over the rounds of the event loop thread's
CPU and the wall time per transaction (the wall time is about how long the
transaction holds this process's write turn), and ``ratio = seawall / baseline``
of the medians. No server is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import uvloop
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app.consumers import ACTIVITY_CONSUMER, summarize
from seawall.db import (
    Database,
    _aiosqlite,
    affected_rows,
    case_activity,
    inbox,
    insert_ignoring_conflicts_for,
    migrate,
    sqlite_statement,
)
from seawall.messaging import Consumer, Event, InProcessBus, Outbox, Worker, registry
from seawall.process import freeze_startup_heap

Round = Callable[[], Awaitable[None]]
# What an idle relay's claim looks like: the oldest pending rows, none there.
PENDING = "SELECT seq FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?"


def case_event(index: int) -> Event:
    return Event.create(
        "case.created", source="/seawall/cases", subject=f"case-{index}", data={"title": "t"}
    )


async def insert_activity_through_session(event: Event, session: AsyncSession) -> None:
    """The timeline handler as it was: one INSERT through the session per event."""
    await session.execute(
        case_activity.insert().values(
            case_id=event.subject,
            event_id=event.id,
            event_type=event.type,
            summary=summarize(event.type, event.data or {}),
            correlation_id=event.correlationid,
            occurred_at=event.time,
            recorded_at=datetime.now(UTC),
        )
    )


async def timed(work: Round, count: int) -> tuple[float, float]:
    """Loop-thread CPU and wall time per unit of *work*, in µs."""
    cpu, wall = time.thread_time(), time.perf_counter()
    await work()
    return (time.thread_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6


async def compare(
    label: str, ways: dict[str, Callable[[], Round]], rounds: int, count: int
) -> None:
    """Alternate *ways* (baseline first in the dict) *rounds* times; print medians and ratio."""
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    names = list(ways)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            figures[name].append(await timed(ways[name](), count))
    medians = {}
    for name in names:
        cpu = sorted(x for x, _ in figures[name])
        wall = sorted(y for _, y in figures[name])
        medians[name] = (statistics.median(cpu), statistics.median(wall))
        print(
            f"  {label:<34} {name:<26} loop CPU {medians[name][0]:7,.0f} µs "
            f"({cpu[0]:,.0f}-{cpu[-1]:,.0f}), wall {medians[name][1]:7,.0f} µs "
            f"({wall[0]:,.0f}-{wall[-1]:,.0f})"
        )
    baseline, seawall = medians[names[0]], medians[names[1]]
    print(
        f"  {label:<34} {'ratio':<26} loop CPU {seawall[0] / baseline[0]:.2f}, "
        f"wall {seawall[1] / baseline[1]:.2f}"
    )


async def compare_inbox_rows(worker: Worker, spec: Consumer, rounds: int, count: int) -> None:
    """`Worker.apply` (the inbox row through `insert_new_rows`) against it through the session."""

    def deliveries(through_session: bool) -> Callable[[], Round]:
        def make() -> Round:
            events = [case_event(i) for i in range(count)]

            async def run() -> None:
                for event in events:
                    if not through_session:
                        await worker.apply(spec, event)
                        continue

                    async def admit(session: AsyncSession, event: Event = event) -> bool:
                        row = {
                            "consumer": spec.durable,
                            "message_id": event.id,
                            "processed_at": datetime.now(UTC),
                        }
                        return affected_rows(await session.execute(inbox_insert, row)) > 0

                    await worker._run(spec, event, admit)

            return run

        return make

    inbox_insert = insert_ignoring_conflicts_for("sqlite", inbox)
    await compare(
        "one delivery, its inbox row",
        {"session INSERT": deliveries(True), "Worker.apply": deliveries(False)},
        rounds,
        count,
    )


async def compare_live_batches(
    worker: Worker, spec: Consumer, database: Database, rounds: int, count: int
) -> None:
    """A live batch's inbox rows riding along against them inserted first, in their own hop."""
    batches = max(1, count // 2)
    for size in (1, 10):

        def way(riding: bool, size: int = size) -> Callable[[], Round]:
            def make() -> Round:
                work = [[case_event(i) for i in range(size)] for _ in range(batches)]

                async def run() -> None:
                    for batch in work:
                        async with database.transaction() as session:
                            if riding:
                                await worker._apply_riding(spec, session, batch)
                            else:
                                await worker._apply_in(spec, session, batch)

                return run

            return make

        await compare(
            f"live timeline batch of {size}",
            {"inbox rows first": way(False), "inbox rows riding": way(True)},
            rounds,
            batches,
        )


async def compare_statements(database: Database, rounds: int, count: int) -> None:
    """`sqlite_statement` (a kept connection) against a pooled connection per statement."""

    def statements(kept: bool) -> Callable[[], Round]:
        def make() -> Round:
            async def run() -> None:
                for _ in range(count):
                    if kept:
                        await sqlite_statement(database, PENDING, (10,))
                        continue
                    async with database.engine.connect() as connection:
                        raw = await connection.get_raw_connection()
                        await raw.driver_connection.execute_fetchall(PENDING, (10,))

            return run

        return make

    await compare(
        "one raw statement (a relay claim)",
        {"a pooled connection each": statements(False), "sqlite_statement": statements(True)},
        rounds,
        count,
    )


async def compare_session_trips(database: Database, rounds: int, count: int) -> None:
    """`Database.transaction` against ``async with session, session.begin()`` on its writer."""
    box = Outbox()

    def transactions(own: bool) -> Callable[[], Round]:
        def make() -> Round:
            events = [case_event(i) for i in range(count)]

            async def run() -> None:
                if own:
                    for event in events:
                        async with database.transaction() as session:
                            await box.add(session, event)
                    return
                # As `Database.transaction` went before: the same turn and writer connection.
                async with database.engine.connect() as writer:
                    for event in events:
                        async with (
                            database.write_turn(),
                            database.sessions(bind=writer) as session,
                            session.begin(),
                        ):
                            await box.add(session, event)

            return run

        return make

    await compare(
        "a transaction's session",
        {"session.begin()": transactions(False), "Database.transaction": transactions(True)},
        rounds,
        count,
    )


async def compare_commit_here(database: Database, rounds: int, count: int) -> None:
    """The writer's commit on the event loop's thread against on aiosqlite's thread."""
    box = Outbox()

    def transactions(here: bool, busy: bool) -> Callable[[], Round]:
        def make() -> Round:
            events = [case_event(i) for i in range(count)]

            async def run() -> None:
                async with database.transaction():  # the writer, connected
                    pass
                writer = database._writer
                assert writer is not None
                raw = await writer.get_raw_connection()
                _aiosqlite.commit_here(raw.dbapi_connection, busy_timeout_ms=5000 if here else None)
                stop = asyncio.Event()

                async def other_work() -> None:  # 300 µs of Python, then 1 ms idle
                    while not stop.is_set():
                        until = time.perf_counter() + 300e-6
                        while time.perf_counter() < until:
                            pass
                        await asyncio.sleep(0.001)

                busy_task = asyncio.create_task(other_work()) if busy else None
                try:
                    for event in events:
                        async with database.transaction() as session:
                            await box.add(session, event)
                finally:
                    stop.set()
                    if busy_task is not None:
                        await busy_task
                    _aiosqlite.commit_here(  # as `Database` sets it
                        raw.dbapi_connection,
                        busy_timeout_ms=5000,
                        when=database._turn_wanted,
                        held=database._held,
                    )

            return run

        return make

    for busy in (False, True):
        await compare(
            "the writer's commit" + (", loop busy" if busy else ""),
            {"on aiosqlite's thread": transactions(False, busy), "here": transactions(True, busy)},
            rounds,
            count,
        )


async def compare_group_commit(database: Database, rounds: int, count: int) -> None:
    """Eight producers at once: their commits held and shared, against each committing alone."""
    box = Outbox()
    held = database._held
    assert held is not None
    limit = held.limit

    def producers(grouped: bool) -> Callable[[], Round]:
        def make() -> Round:
            events = [case_event(i) for i in range(count)]

            async def produce(share: list[Event]) -> None:
                for event in share:
                    async with database.transaction() as session:
                        await box.add(session, event)

            async def run() -> None:
                held.limit = limit if grouped else 0  # 0: none held, each commits alone
                try:
                    await asyncio.gather(*(produce(events[i::8]) for i in range(8)))
                finally:
                    held.limit = limit

            return run

        return make

    await compare(
        "eight producers at once",
        {"each commits alone": producers(False), "group commit": producers(True)},
        rounds,
        count,
    )


async def main(options: argparse.Namespace) -> None:
    freeze_startup_heap()
    count = options.count
    with tempfile.TemporaryDirectory(prefix="seawall-bench-sqlite-writes-") as directory:
        database = Database(f"sqlite:///{Path(directory) / 'seawall.db'}")
        try:
            await migrate(database)
            box = Outbox()

            def through_session() -> Round:
                events = [case_event(i) for i in range(count)]

                async def run() -> None:
                    for event in events:
                        async with database.transaction() as session:
                            await session.execute(box.table.insert(), box.row(event))

                return run

            def outbox_add() -> Round:
                events = [case_event(i) for i in range(count)]

                async def run() -> None:
                    for event in events:
                        async with database.transaction() as session:
                            await box.add(session, event)

                return run

            print(f"{options.rounds} alternating rounds; {count} transactions per round")
            await compare(
                "one event per transaction",
                {"session INSERT": through_session, "Outbox.add": outbox_add},
                options.rounds,
                count,
            )

            spec = next(spec for spec in registry if spec.durable == ACTIVITY_CONSUMER)
            old = dataclasses.replace(spec, handler=insert_activity_through_session)
            worker = Worker(database, InProcessBus(), [spec])
            batches = max(1, count // 2)
            for size in (1, 3, 10):

                def batched(chosen: Consumer, size: int = size) -> Callable[[], Round]:
                    def make() -> Round:
                        work = [[case_event(i) for i in range(size)] for _ in range(batches)]

                        async def run() -> None:
                            for batch in work:
                                await worker.apply_many(chosen, batch)

                        return run

                    return make

                await compare(
                    f"timeline batch of {size}",
                    {"session INSERT per event": batched(old), "record_activity": batched(spec)},
                    options.rounds,
                    batches,
                )

            def pooled_connection() -> Round:
                events = [case_event(i) for i in range(count)]

                async def run() -> None:
                    for event in events:
                        async with (
                            database.write_turn(),
                            database.sessions() as session,
                            session.begin(),
                        ):
                            await box.add(session, event)

                return run

            await compare(
                "the writer connection",
                {"a pooled connection each": pooled_connection, "Outbox.add": outbox_add},
                options.rounds,
                count,
            )

            await compare_inbox_rows(worker, spec, options.rounds, count)
            await compare_statements(database, options.rounds, count)
            await compare_live_batches(worker, spec, database, options.rounds, count)
            await compare_session_trips(database, options.rounds, count)
            await compare_commit_here(database, options.rounds, count)
            await compare_group_commit(database, options.rounds, count)
        finally:
            await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=300)
    sys.exit(uvloop.run(main(parser.parse_args())))
