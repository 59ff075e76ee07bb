"""`seawall.db._aiosqlite`: SQLAlchemy's aiosqlite adapter with one hop per statement."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, insert_new_rows, insert_rows
from seawall.db._aiosqlite import (
    OneHopCursor,
    fetch_in_transaction,
    one_hop_dbapi,
    ride_along,
)

_metadata = sa.MetaData()
_things = sa.Table(
    "things",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("size", sa.Integer, nullable=False),
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file with the `things` table."""
    db = Database(f"sqlite:///{tmp_path}/hops.db")
    async with db.engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    yield db
    await db.dispose()


async def test_a_one_statement_write_transaction_takes_two_hops(
    database: Database, hops: list[str]
) -> None:
    async with database.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.dbapi_connection is not None
        assert isinstance(raw.dbapi_connection.cursor(), OneHopCursor)
    hops.clear()

    async with database.transaction() as session:
        await session.execute(sa.insert(_things).values(name="a", size=1))

    # BEGIN IMMEDIATE with the INSERT (cursor, execute, close in one), then COMMIT
    assert hops == ["_run", "commit"]


async def test_the_deferred_begin_takes_the_write_lock_with_the_first_statement(
    database: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "hops.db", isolation_level=None, timeout=0)
    try:
        with pytest.raises(RuntimeError, match="roll back"):
            async with database.transaction() as session:
                await session.execute(sa.insert(_things).values(name="a", size=1))
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")  # this transaction holds it
                await session.execute(sa.insert(_things).values(name="b", size=2))
                raise RuntimeError("roll back")

        assert other.execute("SELECT count(*) FROM things").fetchone() == (0,)
        other.execute("BEGIN IMMEDIATE")  # free again
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_transaction_that_runs_nothing_makes_no_hop(
    database: Database, hops: list[str]
) -> None:
    # Opened beforehand: the writer that transactions take over, and a connection to read.
    async with database.transaction() as session:
        await session.execute(sa.select(1))
    async with database.reading() as session:
        await session.execute(sa.select(1))
    hops.clear()

    async with database.transaction() as session:
        await session.connection()  # the transaction begins; its BEGIN waits
    async with database.reading() as session:
        pass

    assert hops == []
    async with database.transaction() as session:  # and the next one begins as usual
        await session.execute(sa.insert(_things).values(name="a", size=1))
    assert hops == ["_run", "commit"]


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[Database, sqlite3.Connection]]:
    """A database that waits 0.2 s for the write lock, and another connection holding it."""
    path = tmp_path / "held.db"
    db = Database(f"sqlite:///{path}", timeout=0.2)
    async with db.engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    yield db, holder
    holder.close()
    await db.dispose()


async def test_a_busy_write_lock_fails_the_first_statement_and_leaves_nothing_open(
    held: tuple[Database, sqlite3.Connection],
) -> None:
    database, holder = held
    with pytest.raises(OperationalError, match="database is locked"):
        async with database.transaction() as session:
            await session.execute(sa.insert(_things).values(name="a", size=1))
    holder.execute("ROLLBACK")

    async with database.transaction() as session:  # the pooled connection works
        await session.execute(sa.insert(_things).values(name="b", size=2))
    assert holder.execute("SELECT name FROM things").fetchall() == [("b",)]


async def test_a_begin_that_failed_is_tried_again_by_the_next_statement(
    held: tuple[Database, sqlite3.Connection],
) -> None:
    # A caller that catches "database is locked" and carries on in the same
    # transaction must still get one transaction, not statements that autocommit.
    database, holder = held
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with database.sessions() as session, session.begin():
            with pytest.raises(OperationalError, match="database is locked"):
                await session.execute(sa.insert(_things).values(name="a", size=1))
            holder.execute("ROLLBACK")
            await session.execute(sa.insert(_things).values(name="b", size=2))
            await session.execute(sa.insert(_things).values(name="c", size=3))
            raise RuntimeError("changed my mind")

    assert holder.execute("SELECT count(*) FROM things").fetchone() == (0,)


async def test_a_streamed_statement_with_many_parameter_sets_is_inside_the_transaction(
    database: Database,
) -> None:
    # SQLAlchemy 2.0's server-side cursor cannot stream an executemany (an
    # AssertionError as it fetches); 2.1's can. Either way nothing may commit.
    with pytest.raises((RuntimeError, AssertionError)):
        async with database.engine.begin() as conn:
            await conn.stream(
                sa.text("INSERT INTO things (name, size) VALUES (:name, 1)"),
                [{"name": "a"}, {"name": "b"}],
            )
            raise RuntimeError("changed my mind")

    async with database.reading() as session:
        count = await session.execute(sa.select(sa.func.count()).select_from(_things))
        assert count.scalar() == 0


async def test_the_driver_connection_inside_a_transaction_is_inside_it(
    database: Database,
) -> None:
    # insert_rows writes on the driver connection: the deferred BEGIN goes first,
    # so a rollback takes its rows back too.
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with database.transaction() as session:
            rows = [{"name": "x", "size": 1}, {"name": "y", "size": 2}]
            await insert_rows(session, _things, rows)
            raise RuntimeError("changed my mind")
    async with database.transaction() as session:
        await insert_rows(session, _things, [{"name": "z", "size": 3}])
        await session.execute(sa.insert(_things).values(name="w", size=4))

    async with database.reading() as session:
        names = (await session.execute(sa.select(_things.c.name).order_by(_things.c.id))).all()
    assert [name for (name,) in names] == ["z", "w"]


async def test_a_read_is_one_hop_with_its_rows(database: Database, hops: list[str]) -> None:
    async with database.transaction() as session:
        await session.execute(sa.insert(_things), [{"name": f"n{i}", "size": i} for i in range(5)])
    async with database.reading() as session:
        hops.clear()
        rows = (await session.execute(sa.select(_things.c.name).order_by(_things.c.id))).all()

    assert [name for (name,) in rows] == ["n0", "n1", "n2", "n3", "n4"]
    assert hops == ["_run", "rollback"]  # the SELECT, then the end of the read transaction


async def test_the_cursor_keeps_what_sqlalchemy_reads_after_a_statement(
    database: Database,
) -> None:
    async with database.transaction() as session:
        inserted = await session.execute(sa.insert(_things).values(name="first", size=1))
        await session.execute(sa.insert(_things), [{"name": n, "size": 2} for n in "bcd"])
        updated = await session.execute(
            sa.update(_things).where(_things.c.size == 2).values(size=3)
        )
        nothing = await session.execute(sa.select(_things).where(_things.c.size > 100))
        many = await session.execute(sa.select(_things.c.name).order_by(_things.c.id))

        assert inserted.inserted_primary_key == (1,)  # lastrowid
        assert updated.rowcount == 3
        assert nothing.all() == []
        assert list(nothing.keys()) == ["id", "name", "size"]  # the description
        assert [row.name for row in many.fetchmany(2)] == ["first", "b"]
        assert many.fetchone() is not None
        assert [row.name for row in many.fetchall()] == ["d"]


async def test_a_streamed_result_keeps_sqlalchemy_s_server_side_cursor(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await session.execute(sa.insert(_things), [{"name": f"n{i}", "size": i} for i in range(7)])
    async with database.engine.connect() as conn:
        result = await conn.stream(sa.select(_things.c.size).order_by(_things.c.size))
        sizes = [size async for (size,) in result]
        raw = await conn.get_raw_connection()
        assert raw.driver_connection.in_transaction  # its deferred BEGIN went first

    assert sizes == list(range(7))


@pytest.fixture
async def taken(database: Database) -> None:
    """A row named "taken" in `things` (the next one by that name is refused)."""
    async with database.transaction() as session:
        await session.execute(sa.insert(_things).values(name="taken", size=1))


async def test_driver_errors_come_back_as_sqlalchemy_s_without_the_parameters(
    database: Database, taken: None
) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE constraint failed") as duplicate:
        async with database.transaction() as session:
            await session.execute(sa.insert(_things).values(name="taken", size=4242))
    with pytest.raises(OperationalError, match="no such table"):
        async with database.transaction() as session:
            await session.execute(sa.text("SELECT * FROM missing WHERE x = :x"), {"x": 4242})

    assert "4242" not in str(duplicate.value)
    async with database.reading() as session:  # the failed transactions left nothing
        count = await session.execute(sa.select(sa.func.count()).select_from(_things))
        assert count.scalar() == 1


# --- writes that ride along (`ride_along`, `insert_rows(along=True)`) ---------------------------


async def _names(database: Database) -> list[str]:
    async with database.reading() as session:
        rows = await session.execute(sa.select(_things.c.name).order_by(_things.c.id))
        return [name for (name,) in rows]


async def _only_the_next_write_lands(database: Database) -> None:
    """The next transaction (on the same pooled connection) sends none of a dropped write."""
    async with database.transaction() as session:
        await session.execute(sa.insert(_things).values(name="b", size=2))
    assert await _names(database) == ["b"]


async def test_a_transaction_whose_only_write_rides_along_makes_one_hop(
    database: Database, hops: list[str]
) -> None:
    async with database.transaction() as session:
        await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
        assert hops == []  # nothing sent yet

    assert hops == ["_commit"]  # BEGIN IMMEDIATE, the INSERT and COMMIT
    assert await _names(database) == ["a"]


async def test_a_write_that_rides_along_goes_before_the_next_statement(
    database: Database, hops: list[str]
) -> None:
    async with database.transaction() as session:
        await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
        count = await session.execute(sa.select(sa.func.count()).select_from(_things))
        assert count.scalar() == 1  # this transaction's later statements see it
        await insert_rows(session, _things, [{"name": "b", "size": 2}])  # not along: sent now
        assert hops == ["_run", "_send"]

    assert await _names(database) == ["a", "b"]


async def test_writes_that_ride_along_go_in_the_order_they_were_staged(
    database: Database,
) -> None:
    async with database.transaction() as session:
        for name in "cab":
            await insert_rows(session, _things, [{"name": name, "size": 1}], along=True)

    assert await _names(database) == ["c", "a", "b"]


async def test_a_rollback_drops_the_writes_riding_along_unsent(
    database: Database, hops: list[str]
) -> None:
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with database.transaction() as session:
            await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
            raise RuntimeError("changed my mind")
    assert hops == []  # never begun, nothing to roll back
    await _only_the_next_write_lands(database)


async def test_a_session_closed_without_commit_leaves_no_write_for_the_next_one(
    database: Database,
) -> None:
    async with database.sessions() as session:
        await session.begin()
        await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
    # The connection went back to the pool with the write unsent.
    await _only_the_next_write_lands(database)


async def test_a_savepoint_rolled_back_takes_back_a_write_that_rode_along_inside_it(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await insert_rows(session, _things, [{"name": "kept", "size": 1}], along=True)
        savepoint = await session.begin_nested()
        await insert_rows(session, _things, [{"name": "undone", "size": 2}], along=True)
        await savepoint.rollback()
        await insert_rows(session, _things, [{"name": "after", "size": 3}], along=True)

    assert await _names(database) == ["kept", "after"]


async def test_a_write_refused_at_commit_fails_the_commit_and_writes_nothing(
    database: Database, taken: None
) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE constraint failed") as refused:
        async with database.transaction() as session:
            await session.execute(sa.insert(_things).values(name="new", size=2))
            await insert_rows(session, _things, [{"name": "taken", "size": 4242}], along=True)

    assert "sent along" in str(refused.value)
    assert "4242" not in str(refused.value)  # the statement, never its parameters
    assert await _names(database) == ["taken"]


async def test_a_transaction_whose_write_was_refused_on_the_way_can_never_commit(
    database: Database, taken: None
) -> None:
    # The refusal surfaces at the statement the write rode with. A caller that
    # takes it for that statement's own error and goes on must not commit the
    # rest without the write.
    with pytest.raises(IntegrityError, match="cannot commit"):
        async with database.transaction() as session:
            await insert_rows(session, _things, [{"name": "taken", "size": 2}], along=True)
            with pytest.raises(IntegrityError, match="sent along"):
                await session.execute(sa.insert(_things).values(name="other", size=3))
            await session.execute(sa.insert(_things).values(name="more", size=4))

    assert await _names(database) == ["taken"]
    async with database.transaction() as session:  # the pooled connection is clean again
        await insert_rows(session, _things, [{"name": "fine", "size": 5}], along=True)
    assert await _names(database) == ["taken", "fine"]


async def test_a_refused_insert_sent_at_once_is_the_caller_s_error_to_handle(
    database: Database, taken: None
) -> None:
    # insert_rows without `along` goes in one hop with what was staged before it;
    # its own refusal is raised there, and a savepoint rolled back takes it back
    # as with any statement: the transaction may still commit.
    async with database.transaction() as session:
        await insert_rows(session, _things, [{"name": "staged", "size": 2}], along=True)
        savepoint = await session.begin_nested()
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed") as refused:
            await insert_rows(session, _things, [{"name": "taken", "size": 3}])
        await savepoint.rollback()
        await insert_rows(session, _things, [{"name": "after", "size": 4}])

    assert "sent along" not in str(refused.value)
    assert await _names(database) == ["taken", "staged", "after"]


async def _insert_through_session(session: AsyncSession, name: str) -> None:
    await session.execute(sa.insert(_things).values(name=name, size=2))


async def _insert_at_once(session: AsyncSession, name: str) -> None:
    await insert_rows(session, _things, [{"name": name, "size": 2}])


@pytest.mark.parametrize("write", [_insert_through_session, _insert_at_once])
async def test_a_begin_that_found_the_lock_busy_keeps_the_writes_riding_along_and_no_other(
    held: tuple[Database, sqlite3.Connection],
    write: Callable[[AsyncSession, str], Awaitable[None]],
) -> None:
    # The BEGIN failed, so nothing ran: the write staged along goes again with the
    # next statement, inside the transaction. The statement that failed (a
    # session's, or an insert_rows sent at once) is its caller's to retry: it is
    # not sent again behind its back, or the retry would write its row twice.
    database, holder = held
    async with database.sessions() as session, session.begin():
        await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
        with pytest.raises(OperationalError, match="database is locked"):
            await write(session, "b")
        holder.execute("ROLLBACK")
        await write(session, "b")

    assert [name for (name,) in holder.execute("SELECT name FROM things ORDER BY id")] == [
        "a",
        "b",
    ]


async def test_new_rows_go_in_one_hop_with_the_begin_and_the_writes_riding_along(
    database: Database, hops: list[str], tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "hops.db", isolation_level=None, timeout=0)
    try:
        async with database.transaction() as session:
            await insert_rows(session, _things, [{"name": "a", "size": 1}], along=True)
            new = await insert_new_rows(
                session, _things, [{"name": "a", "size": 9}, {"name": "b", "size": 2}], "name"
            )
            assert hops == ["_run"]  # BEGIN IMMEDIATE, the write riding along, the INSERT
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("INSERT INTO things (name, size) VALUES ('x', 0)")
        assert hops == ["_run", "commit"]
    finally:
        other.close()

    assert new == ["b"]  # "a" came first, riding along
    assert await _names(database) == ["a", "b"]


async def test_a_statement_fetched_outside_a_one_hop_connection_is_left_to_the_caller(
    database: Database,
) -> None:
    assert await fetch_in_transaction(object(), "SELECT 1", []) is None


async def test_a_write_cannot_ride_along_outside_a_transaction(database: Database) -> None:
    async with database.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        with pytest.raises(RuntimeError, match="inside a transaction"):
            ride_along(raw.dbapi_connection, "INSERT INTO things (name, size) VALUES (?, ?)", [])


def test_without_aiosqlite_s_hop_the_stock_adapter_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert one_hop_dbapi() is not None
    monkeypatch.delattr(aiosqlite.Connection, "_execute")

    assert one_hop_dbapi() is None
