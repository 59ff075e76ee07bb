"""`seawall.db`: URLs, the engine, timestamps and the migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import greenlet
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import (
    Database,
    UTCDateTime,
    _aiosqlite,
    current_revision,
    head_revision,
    insert_rows,
    metadata,
    migrate,
    normalize_url,
    sqlite_statement,
)
from seawall.db._raw import pooled_connection
from seawall.errors import DatabaseError
from seawall.messaging import Event, Outbox


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://h/db", "postgresql+asyncpg://h/db"),
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
    ],
)
def test_urls_get_their_async_driver(url: str, normalized: str) -> None:
    assert normalize_url(url) == normalized


@pytest.mark.parametrize("url", ["mysql://h/db", "no-scheme", "oracle+cx://h/db"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported|must look like"):
        normalize_url(url)


def test_repr_hides_the_password() -> None:
    database = Database("postgresql://app:hunter2@db/cases")

    assert "hunter2" not in repr(database)


async def test_sqlite_file_directory_is_created(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/deep/er/seawall.db")

    await database.ping()
    await database.dispose()

    assert (tmp_path / "deep" / "er" / "seawall.db").exists()


async def test_ping_does_not_wait_for_sqlite_s_write_lock(tmp_path: Path) -> None:
    # A health check under a long write (another process's, here) is a read: WAL
    # lets it through, where a BEGIN IMMEDIATE would wait out the busy timeout.
    path = tmp_path / "busy.db"
    database = Database(f"sqlite:///{path}", timeout=3)
    await database.ping()
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        await database.ping(timeout=1)
        writer.execute("ROLLBACK")
    finally:
        writer.close()
        await database.dispose()


async def test_ping_of_an_unreachable_database_is_a_database_error() -> None:
    database = Database("postgresql://127.0.0.1:1/none", timeout=1)

    with pytest.raises(DatabaseError, match="unreachable"):
        await database.ping(timeout=2)

    await database.dispose()


async def test_migrations_reach_head_and_match_the_tables(database: Database) -> None:
    def differences(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with database.engine.connect() as conn:
        diff = await conn.run_sync(differences)

    assert await current_revision(database) == head_revision()
    assert diff == []


async def test_migrating_twice_changes_nothing(database: Database) -> None:
    await migrate(database)

    assert await current_revision(database) == head_revision()


async def test_a_fresh_database_has_no_revision(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/fresh.db")

    revision = await current_revision(database)
    await database.dispose()

    assert revision is None


async def test_timestamps_come_back_aware_in_utc(database: Database) -> None:
    table = sa.Table("stamps", sa.MetaData(), sa.Column("at", UTCDateTime()))
    moment = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

    async with database.transaction() as session:
        await session.run_sync(lambda s: table.create(s.connection()))
        await session.execute(table.insert().values(at=moment))
        stored = (await session.execute(sa.select(table.c.at))).scalar_one()
        await session.run_sync(lambda s: table.drop(s.connection()))

    assert stored == moment
    assert stored.tzinfo == UTC


async def test_naive_timestamps_are_refused(database: Database) -> None:
    table = sa.Table("naive", sa.MetaData(), sa.Column("at", UTCDateTime()))

    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with database.transaction() as session:
            await session.run_sync(lambda s: table.create(s.connection()))
            await session.execute(table.insert().values(at=datetime(2026, 1, 1)))  # noqa: DTZ001


async def test_a_failed_transaction_leaves_nothing(database: Database) -> None:
    table = metadata.tables["cases"]

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await session.execute(
                table.insert().values(
                    id="c1",
                    title="t",
                    status="open",
                    priority="low",
                    metadata={},
                    version=1,
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )
            raise RuntimeError("boom")

    async with database.sessions() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar() == 0


@contextlib.contextmanager
def _greenlets_entered() -> Iterator[list[Any]]:
    """The greenlets this thread switched into meanwhile: one per trip through the bridge."""
    entered: list[Any] = []

    def trace(event: str, args: Any) -> None:
        if event in ("switch", "throw"):
            _origin, target = args
            if target.parent is not None and not any(target is seen for seen in entered):
                entered.append(target)

    previous = greenlet.settrace(trace)
    try:
        yield entered
    finally:
        greenlet.settrace(previous)


async def test_a_transaction_s_begin_commit_and_close_take_one_trip_through_the_bridge(
    database: Database,
) -> None:
    # `async with session, session.begin()` took four (begin, commit, and a close in a task).
    async with database.transaction():  # on SQLite, the writer connects (a trip) once
        pass
    with _greenlets_entered() as entered:
        async with database.transaction():
            pass
    assert len(entered) == 1


async def test_an_outbox_event_s_sqlite_transaction_takes_one_trip_through_the_bridge(
    tmp_path: Path,
) -> None:
    # The connection is taken at the begin (no I/O on the writer), so the row riding
    # along needs no trip of its own: the commit's is the only one.
    database = Database(f"sqlite:///{tmp_path}/outbox.db")
    try:
        await migrate(database)
        event = Event.create("case.created", source="/seawall/cases", subject="c1")
        async with database.transaction():  # the writer connects (a trip) once
            pass
        with _greenlets_entered() as entered:
            async with database.transaction() as session:
                await Outbox().add(session, event)
        assert len(entered) == 1
        async with database.reading() as session:
            stored = await session.execute(sa.text("SELECT event_id FROM outbox"))
            assert list(stored.scalars()) == [event.id]
    finally:
        await database.dispose()


@pytest.mark.postgres
async def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(
    postgres_url: str,
) -> None:
    # No ping per checkout: a connection the server ended (a restart, an idle
    # timeout, an operator's pg_terminate_backend) is noticed and replaced.
    database = Database(postgres_url, pool_size=1)
    terminator = Database(postgres_url)
    try:
        async with database.transaction() as session:
            first = await session.scalar(sa.text("SELECT pg_backend_pid()"))
        async with terminator.transaction() as session:
            ended = await session.scalar(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}
            )
        await asyncio.sleep(0.2)  # asyncpg reads the end of the socket meanwhile

        async with database.transaction() as session:
            second = await session.scalar(sa.text("SELECT pg_backend_pid()"))
    finally:
        await database.dispose()
        await terminator.dispose()

    assert ended is True
    assert second != first


async def test_sqlite_transactions_of_one_process_take_turns(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/turns.db", timeout=5)
    order: list[str] = []
    first_in = asyncio.Event()

    async def first() -> None:
        async with database.transaction() as session:
            order.append("first begins")
            first_in.set()
            await session.execute(sa.text("CREATE TABLE t (n INTEGER)"))
            await asyncio.sleep(0.2)  # a writer of the same process arrives meanwhile
            order.append("first commits")

    async def second() -> None:
        await first_in.wait()
        async with database.transaction() as session:
            order.append("second begins")
            await session.execute(sa.text("INSERT INTO t VALUES (1)"))

    try:
        await asyncio.gather(first(), second())
    finally:
        await database.dispose()

    assert order == ["first begins", "first commits", "second begins"]


async def test_a_sqlite_transaction_waiting_too_long_for_its_turn_is_an_operational_error(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/turns.db", timeout=0.2)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with database.transaction():
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await holding.wait()
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            async with database.transaction():
                pass
    finally:
        release.set()
        await holder
        await database.dispose()


async def test_a_free_sqlite_write_turn_is_taken_without_a_turn_of_the_event_loop(
    tmp_path: Path,
) -> None:
    # Under load every turn of the loop runs everything else that is ready first:
    # a free lock must not cost one.
    database = Database(f"sqlite:///{tmp_path}/turns.db", timeout=5)
    other_work: list[str] = []
    asyncio.get_running_loop().call_soon(other_work.append, "ran")
    try:
        async with database.write_turn():
            taken_before_other_work = not other_work
    finally:
        await database.dispose()

    assert taken_before_other_work


async def test_sqlite_write_turns_go_in_arrival_order(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/turns.db", timeout=5)
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with database.write_turn():
            await release.wait()

    async def writer(name: str) -> None:
        async with database.write_turn():
            order.append(name)
            await asyncio.sleep(0)

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    queued = [asyncio.create_task(writer(name)) for name in ("w1", "w2")]
    await asyncio.sleep(0.05)
    release.set()
    await held
    # Whether or not w1 has run yet, a newcomer queues behind the writers waiting.
    late = asyncio.create_task(writer("w3"))
    try:
        await asyncio.gather(*queued, late)
    finally:
        await database.dispose()

    assert order == ["w1", "w2", "w3"]


async def test_sqlite_write_turn_stats_count_turns_waits_holds_and_timeouts(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/turns.db", timeout=0.3)
    holding = asyncio.Event()

    async def hold(seconds: float) -> None:
        async with database.transaction() as session:
            holding.set()
            await session.execute(sa.text("SELECT 1"))
            # Taken again by the same task inside its transaction: not a second turn.
            async with database.write_turn():
                await asyncio.sleep(seconds)

    async def wait_behind() -> None:
        await holding.wait()
        async with database.write_turn():
            pass

    try:
        await asyncio.gather(hold(0.1), wait_behind())
        stats = database.write_turn_stats
        assert stats.acquired == 2
        assert stats.timeouts == 0
        assert stats.held_seconds >= 0.1
        assert 0.05 <= stats.waited_seconds < stats.held_seconds
        held_before = stats.held_seconds
        earlier = stats.snapshot()

        holding.clear()
        holder = asyncio.create_task(hold(0.6))
        await holding.wait()
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            async with database.write_turn():
                pass
        await holder
    finally:
        await database.dispose()

    assert stats.acquired == 3
    assert stats.timeouts == 1
    assert stats.held_seconds >= held_before + 0.6
    assert stats.waited_seconds >= 0.05 + 0.3
    since = stats.since(earlier)
    assert (since.acquired, since.timeouts) == (1, 1)
    assert since.held_seconds >= 0.6
    assert since.waited_seconds >= 0.3
    assert earlier.acquired == 2  # a snapshot does not move with the stats


async def test_postgresql_has_no_write_turn_to_count() -> None:
    database = Database("postgresql://nobody@127.0.0.1:1/none")
    async with database.write_turn():
        pass
    stats = database.write_turn_stats
    assert (stats.acquired, stats.waited_seconds, stats.held_seconds, stats.timeouts) == (
        0,
        0.0,
        0.0,
        0,
    )
    await database.dispose()


async def test_a_sqlite_connection_returned_inside_a_transaction_is_rolled_back(
    tmp_path: Path,
) -> None:
    # The pool's own reset is off on SQLite (it cost a thread hop after every
    # commit); its listener still rolls back a connection that comes back with
    # SQLite's transaction open, such as one begun on the driver directly.
    path = tmp_path / "reset.db"
    database = Database(f"sqlite:///{path}", timeout=0.2)
    try:
        async with database.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            await driver.execute_fetchall("BEGIN IMMEDIATE")
            assert driver.in_transaction

        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # the write lock is free again
            other.execute("ROLLBACK")
        finally:
            other.close()
        async with database.transaction() as session:  # and the pooled connection works
            assert (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def test_a_sqlite_begin_that_finds_the_lock_taken_is_an_operational_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "begin.db"
    database = Database(f"sqlite:///{path}", timeout=0.1)
    async with database.transaction() as session:  # creates the file
        await session.execute(sa.text("SELECT 1"))
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            async with database.transaction() as session:
                await session.execute(sa.text("SELECT 1"))  # BEGIN IMMEDIATE runs here
        other.execute("ROLLBACK")
        async with database.transaction() as session:
            assert (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        other.close()
        await database.dispose()


# -- one statement on the raw SQLite driver ------------------------------------------------


async def test_sqlite_statement_reads_and_writes_in_one_statement_each(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db", timeout=0.2)
    try:
        await sqlite_statement(database, "CREATE TABLE t (n INTEGER, at TEXT)", write=True)
        await sqlite_statement(
            database,
            "INSERT INTO t SELECT value, :at FROM json_each(:ns)",
            {"ns": "[1, 2, 3]", "at": "2026-12-07 00:00:00.000000"},
            write=True,
        )

        rows = await sqlite_statement(database, "SELECT n, at FROM t WHERE n >= ? ORDER BY n", [2])

        assert rows == [(2, "2026-12-07 00:00:00.000000"), (3, "2026-12-07 00:00:00.000000")]
        # Each statement committed on its own: another connection sees the rows.
        other = sqlite3.connect(tmp_path / "raw.db")
        try:
            assert other.execute("SELECT count(*) FROM t").fetchone() == (3,)
        finally:
            other.close()
    finally:
        await database.dispose()


async def test_a_sqlite_statement_write_waits_for_this_process_s_turn(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db", timeout=5)
    order: list[str] = []
    inside = asyncio.Event()

    async def transaction() -> None:
        async with database.transaction() as session:
            await session.execute(sa.text("CREATE TABLE t (n INTEGER)"))
            inside.set()
            await asyncio.sleep(0.2)
            order.append("transaction commits")

    async def statement() -> None:
        await inside.wait()
        await sqlite_statement(database, "INSERT INTO t VALUES (1)", write=True)
        order.append("statement done")

    try:
        await asyncio.gather(transaction(), statement())
    finally:
        await database.dispose()

    assert order == ["transaction commits", "statement done"]


async def test_sqlite_statement_errors_are_sqlalchemy_s_without_the_parameters(
    tmp_path: Path,
) -> None:
    path = tmp_path / "raw.db"
    database = Database(f"sqlite:///{path}", timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        await sqlite_statement(database, "CREATE TABLE t (n INTEGER)", write=True)
        with pytest.raises(sa.exc.OperationalError, match="no such table") as missing:
            await sqlite_statement(database, "SELECT n FROM nowhere WHERE n = ?", ["s3cret"])
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            await sqlite_statement(database, "INSERT INTO t VALUES (?)", [1], write=True)
        other.execute("ROLLBACK")
        await sqlite_statement(database, "INSERT INTO t VALUES (?)", [1], write=True)
    finally:
        other.close()
        await database.dispose()

    assert "s3cret" not in str(missing.value)
    assert "SELECT n FROM nowhere" in str(missing.value)


async def _driver_of_statement(database: Database) -> object:
    async with database.statement_connection() as connection:
        return (await connection.get_raw_connection()).driver_connection


async def test_sqlite_statements_reuse_a_connection_kept_out_of_the_pool(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db")
    try:
        await sqlite_statement(database, "CREATE TABLE t (n INTEGER)", write=True)
        first = await _driver_of_statement(database)
        await sqlite_statement(database, "INSERT INTO t VALUES (1)", write=True)
        assert await sqlite_statement(database, "SELECT n FROM t") == [(1,)]

        assert await _driver_of_statement(database) is first
        assert database.engine.pool.checkedout() == 1  # the one kept aside
        assert _lock_is_free(tmp_path / "raw.db")  # and nothing left open on it
    finally:
        await database.dispose()
    assert database.engine.pool.checkedout() == 0


async def test_at_most_two_sqlite_statement_connections_are_kept(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db")
    try:
        statements = [sqlite_statement(database, "SELECT 1") for _ in range(5)]
        assert await asyncio.gather(*statements) == [[(1,)]] * 5

        assert database.engine.pool.checkedout() == 2
    finally:
        await database.dispose()
    assert database.engine.pool.checkedout() == 0


async def test_a_failed_sqlite_statement_s_connection_goes_back_to_the_pool(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db")
    try:
        await _driver_of_statement(database)  # one kept aside
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await sqlite_statement(database, "SELECT n FROM nowhere")

        assert database.engine.pool.checkedout() == 0  # returned, and reset by the pool
        assert await sqlite_statement(database, "SELECT 1") == [(1,)]
    finally:
        await database.dispose()


async def test_dispose_during_a_sqlite_statement_closes_its_connection_afterwards(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db")
    try:
        async with database.statement_connection() as connection:
            await database.dispose()
            driver = (await connection.get_raw_connection()).driver_connection
            assert await driver.execute_fetchall("SELECT 1") == [(1,)]

        assert database.engine.pool.checkedout() == 0
        assert await sqlite_statement(database, "SELECT 2") == [(2,)]
    finally:
        await database.dispose()
    assert database.engine.pool.checkedout() == 0


async def test_pooled_connection_is_the_connection_s_own_and_fails_as_it_does_once_closed(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/raw.db")
    try:
        connection = await database.engine.connect()
        assert await pooled_connection(connection) is await connection.get_raw_connection()
        await connection.invalidate()  # connects again, as get_raw_connection does
        assert (await pooled_connection(connection)).driver_connection is not None
        await connection.close()
        with pytest.raises(sa.exc.ResourceClosedError):
            await pooled_connection(connection)
    finally:
        await database.dispose()


async def test_sqlite_statement_refuses_another_database() -> None:
    database = Database("postgresql://127.0.0.1:1/none")
    try:
        with pytest.raises(ValueError, match="needs a SQLite database, not postgresql"):
            await sqlite_statement(database, "SELECT 1")
    finally:
        await database.dispose()


# -- SQLite's writer connection: write transactions take it over from each other ----------


async def _writer_db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/writer.db", timeout=5)
    async with database.transaction() as session:
        await session.execute(sa.text("CREATE TABLE t (n INTEGER UNIQUE)"))
    return database


async def _driver_of(session: AsyncSession) -> object:
    return (await (await session.connection()).get_raw_connection()).driver_connection


async def _numbers(database: Database) -> list[int]:
    async with database.reading() as session:
        return list((await session.execute(sa.text("SELECT n FROM t ORDER BY n"))).scalars())


def _lock_is_free(path: Path) -> bool:
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def test_sqlite_write_transactions_take_over_one_connection(tmp_path: Path) -> None:
    database = await _writer_db(tmp_path)
    drivers: list[object] = []
    try:
        for n in range(3):
            async with database.transaction() as session:
                drivers.append(await _driver_of(session))
                await session.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": n})
        assert database.engine.pool.checkedout() == 1  # the writer, between transactions
    finally:
        await database.dispose()

    assert drivers[0] is drivers[1] is drivers[2]
    assert database.engine.pool.checkedout() == 0


async def test_a_sqlite_transaction_nested_in_another_gets_a_connection_of_its_own(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    try:
        async with database.transaction() as outer:  # its BEGIN waits for its first statement
            async with database.transaction() as inner:
                await inner.execute(sa.text("INSERT INTO t VALUES (1)"))
                inner_driver = await _driver_of(inner)
            await outer.execute(sa.text("INSERT INTO t VALUES (2)"))
            outer_driver = await _driver_of(outer)
        assert await _numbers(database) == [1, 2]
    finally:
        await database.dispose()

    assert inner_driver is not outer_driver


async def _waiting_for_the_turn(database: Database, n: int) -> asyncio.Task[None]:
    """A transaction that waits for the write turn (held by the caller's), then writes *n*."""
    table = sa.table("t", sa.column("n"))

    async def write() -> None:
        async with database.transaction() as session:
            await insert_rows(session, table, [{"n": n}], along=True)

    task = asyncio.create_task(write())
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_the_sqlite_writer_commits_on_the_loop_s_thread_while_others_wait_for_the_turn(
    tmp_path: Path, hops: list[str]
) -> None:
    database = await _writer_db(tmp_path)
    try:
        hops.clear()
        async with database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (3)"))
            waiting = await _waiting_for_the_turn(database, 4)
        await waiting
        # Its COMMIT without a hop; the next, with nobody waiting behind it, in one hop
        # (its BEGIN IMMEDIATE, the row, COMMIT), the loop free meanwhile.
        assert hops == ["_run", "commit here", "_commit"]
        assert await _numbers(database) == [3, 4]
    finally:
        await database.dispose()


async def test_a_commit_here_does_not_hold_the_loop_while_another_process_has_the_lock(
    tmp_path: Path, hops: list[str]
) -> None:
    # Its BEGIN IMMEDIATE tries once; with the lock taken, the commit waits on
    # aiosqlite's thread (SQLite's busy timeout), and the loop goes on meanwhile.
    # (Holding commits for a group is off here: tests/db/test_group_commit.py.)
    database = await _writer_db(tmp_path)
    assert database._held is not None
    database._held.limit = 0
    table = sa.table("t", sa.column("n"))
    other = sqlite3.connect(tmp_path / "writer.db", isolation_level=None)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> asyncio.Task[None]:
        async with database.transaction() as session:
            await insert_rows(session, table, [{"n": 7}], along=True)
            return await _waiting_for_the_turn(database, 8)

    ticking = asyncio.create_task(tick())
    try:
        other.execute("BEGIN IMMEDIATE")
        hops.clear()
        writing = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        assert not writing.done()
        assert ticks >= 10  # the loop was free while the commit waited
        other.execute("ROLLBACK")
        await asyncio.wait_for(await asyncio.wait_for(writing, 5), 5)
        assert hops == ["_commit_at_once here", "_commit", "_commit"]
        assert await _numbers(database) == [7, 8]
        raw = await pooled_connection(database._writer)  # type: ignore[arg-type]
        busy = await raw.driver_connection.execute_fetchall("PRAGMA busy_timeout")
        assert list(busy) == [(5000,)]  # as the connection was opened
    finally:
        ticking.cancel()
        other.close()
        await database.dispose()


async def test_a_writer_back_in_the_pool_commits_on_aiosqlite_s_thread_again(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    try:
        assert database._writer is not None
        driver = (await pooled_connection(database._writer)).driver_connection
        assert driver in _aiosqlite._here
        with pytest.raises(RuntimeError, match="broke"):
            async with database.transaction() as session:
                await session.execute(sa.text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("broke")
        assert driver not in _aiosqlite._here  # the pool's: any transaction may take it
    finally:
        await database.dispose()


async def test_after_a_failed_sqlite_transaction_the_next_gets_a_fresh_writer(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="the handler broke"):
            async with database.transaction() as session:
                await session.execute(sa.text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("the handler broke")
        assert _lock_is_free(tmp_path / "writer.db")
        assert database.engine.pool.checkedout() == 0  # back in the pool, rolled back
        async with database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (2)"))
        assert await _numbers(database) == [2]
    finally:
        await database.dispose()


async def test_a_sqlite_transaction_cancelled_midway_leaves_nothing_open(tmp_path: Path) -> None:
    database = await _writer_db(tmp_path)
    inside = asyncio.Event()

    async def write_then_wait() -> None:
        async with database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (1)"))
            inside.set()
            await asyncio.sleep(60)

    try:
        task = asyncio.create_task(write_then_wait())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _lock_is_free(tmp_path / "writer.db")
        async with database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (2)"))
        assert await _numbers(database) == [2]
    finally:
        await database.dispose()


async def test_dispose_during_a_sqlite_transaction_lets_it_finish_then_closes_the_writer(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    async with database.transaction() as session:
        await session.execute(sa.text("INSERT INTO t VALUES (1)"))
        await database.dispose()
        await session.execute(sa.text("INSERT INTO t VALUES (2)"))

    assert database.engine.pool.checkedout() == 0
    assert await _numbers(database) == [1, 2]
    await database.dispose()


async def test_dispose_during_a_failing_sqlite_transaction_closes_the_writer(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    with pytest.raises(RuntimeError, match="broke after dispose"):
        async with database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (1)"))
            await database.dispose()
            raise RuntimeError("broke after dispose")

    assert database.engine.pool.checkedout() == 0
    assert _lock_is_free(tmp_path / "writer.db")
    assert await _numbers(database) == []
    await database.dispose()
