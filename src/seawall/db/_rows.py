"""`insert_rows`: many new rows in one statement on the session's driver connection.

Through the session, an ``executemany`` of a thousand rows costs more in
SQLAlchemy (per-row parameter processing, ``insertmanyvalues``, the greenlet
bridge) than in the database. Here the rows go in with one statement on the
raw driver connection, inside the session's own transaction, so they commit or
roll back with everything else the session wrote (a sync's page and its cursor,
a batch of outbox events):

- PostgreSQL (asyncpg): one ``INSERT ... SELECT FROM unnest($1::type[], ...)``
  (`UnnestInsert`, as the webhook group commit writes); it also fires a
  statement trigger (the outbox's ``NOTIFY``) once, where ``executemany`` fires
  it once per row;
- SQLite (aiosqlite): one ``executemany`` on the sqlite3 connection, one hop to
  its thread.

The values go through the columns' own bind processors (the UTC check of
`seawall.db.UTCDateTime`, JSON), so the rows are those the session would write,
and the driver's errors become the SQLAlchemy errors the session would raise.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from seawall.db._aiosqlite import begin_deferred, fetch_in_transaction, ride_along
from seawall.db._database import insert_ignoring_conflicts_for, sqlite_error
from seawall.db._raw import UnnestInsert, pooled_connection, translate_error

__all__ = ["insert_new_rows", "insert_rows"]

_Processor = Callable[[Any], Any] | None


_MISSING: Any = object()


def _is_timestamp(column: sa.Column[Any]) -> bool:
    kind = column.type
    return isinstance(kind, sa.DateTime) or isinstance(getattr(kind, "impl", None), sa.DateTime)


def _processed_once(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """*values* processed, each distinct one once (the rows of a page share their timestamps)."""
    done: dict[Any, Any] = {}
    processed: list[Any] = []
    for value in values:
        result = done.get(value, _MISSING)
        if result is _MISSING:
            result = done[value] = process(value)
        processed.append(result)
    return processed


class _SqliteInsert:
    """``INSERT INTO table (columns) VALUES (?, ...)`` and its rows as processed tuples."""

    def __init__(self, table: sa.Table, columns: Sequence[str], dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        target = dialect.identifier_preparer.format_table(table)
        names = ", ".join(quote(name) for name in columns)
        marks = ", ".join("?" for _ in columns)
        self.head = f"INSERT INTO {target} ({names})"
        # Identifiers from the schema, quoted by the dialect; every value is a parameter.
        self.sql = f"{self.head} VALUES ({marks})"
        self.columns = tuple(columns)
        self._processors: list[tuple[_Processor, bool]] = [
            (
                table.c[name].type.dialect_impl(dialect).bind_processor(dialect),
                _is_timestamp(table.c[name]),
            )
            for name in columns
        ]

    def arguments(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """One tuple per row, each value processed as its column binds it."""
        columns: list[list[Any]] = []
        for name, (process, once) in zip(self.columns, self._processors, strict=True):
            values = [row[name] for row in rows]
            if process is None:
                columns.append(values)
            elif once:
                columns.append(_processed_once(values, process))
            else:
                columns.append([process(value) for value in values])
        return list(zip(*columns, strict=True))


# Per dialect (one per engine), the statements built so far, by table and columns.
_built: weakref.WeakKeyDictionary[Dialect, dict[tuple[sa.Table, tuple[str, ...]], Any]] = (
    weakref.WeakKeyDictionary()
)


def _statement(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> Any:
    built = _built.setdefault(dialect, {})
    statement = built.get((table, columns))
    if statement is None:
        if dialect.name == "postgresql":
            statement = UnnestInsert(table, columns, dialect)
        else:
            statement = _SqliteInsert(table, columns, dialect)
        built[(table, columns)] = statement
    return statement


async def _session_connection(session: AsyncSession) -> AsyncConnection:
    """The connection of *session*'s transaction.

    A session bound to a connection that is in a transaction already (a
    `Database.transaction` on SQLite's writer connection, after its first
    statement) writes there: no hop through SQLAlchemy's greenlet bridge, which
    cost the event loop 15-30 µs here. Not inside a savepoint: the session
    sends its ``SAVEPOINT`` when asked for the connection.
    """
    bind = session.bind
    if isinstance(bind, AsyncConnection) and not session.in_nested_transaction():
        sync = bind.sync_connection
        if sync is not None and sync.in_transaction():
            return bind
    return await session.connection()


async def _driver(connection: AsyncConnection) -> Any:
    """The driver connection under *connection*, inside the session's transaction."""
    raw = await pooled_connection(connection)
    driver: Any = raw.driver_connection
    if connection.dialect.name == "postgresql" and not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter begins its transaction at the first statement;
        # without one, the insert would commit on its own.
        await connection.exec_driver_sql("SELECT 1")
    elif connection.dialect.name == "sqlite":
        # Its BEGIN waits for the transaction's first statement (`seawall.db._aiosqlite`).
        try:
            await begin_deferred(raw.dbapi_connection)
        except sqlite3.Error as exc:
            raise sqlite_error("BEGIN", exc, connection.dialect) from exc
        if not driver.in_transaction:
            raise RuntimeError("insert_rows needs a session inside a transaction")
    return driver


async def insert_rows(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    along: bool = False,
) -> None:
    """Insert *rows* into *table* in *session*'s transaction, with one statement.

    Every row must have the same keys, the columns written (the first row's,
    in its order); columns left out take their defaults.

    Args:
        session: a session inside a transaction (`Database.transaction`).
        table: the table written.
        rows: the rows, as ``{column: value}``.
        along: on SQLite, send the rows with the transaction's next statement,
            or with its ``COMMIT``, instead of in a hop of their own (see
            `seawall.db._aiosqlite`); a refusal is then that statement's error,
            and the transaction cannot commit. For rows nobody reads back
            before then, like the outbox's. PostgreSQL inserts them at once.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused the rows (a duplicate key
            is an `IntegrityError`); none of them is written, and the caller's
            transaction (or a savepoint around the call) must roll back.
        KeyError: a row lacks one of the first row's columns.
        ValueError: a value its column refuses (a naive datetime).
    """
    if not rows:
        return
    connection = await _session_connection(session)
    dialect = connection.dialect
    if dialect.name not in ("postgresql", "sqlite"):
        raise ValueError(f"insert_rows does not support {dialect.name!r}")
    statement = _statement(dialect, table, tuple(rows[0]))
    arguments = statement.arguments(rows)
    if dialect.name == "sqlite":
        raw = await pooled_connection(connection)
        if ride_along(raw.dbapi_connection, statement.sql, arguments, along=along):
            if not along:
                try:  # the transaction's BEGIN, if unsent, and these rows: one hop
                    await begin_deferred(raw.dbapi_connection)
                except sqlite3.Error as exc:
                    raise sqlite_error(statement.sql, exc, dialect) from exc
            return
    driver = await _driver(connection)
    try:
        if dialect.name == "postgresql":
            await driver.execute(statement.sql, *arguments)
        else:
            cursor = await driver.executemany(statement.sql, arguments)
            await cursor.close()
    except sqlite3.Error as exc:
        raise sqlite_error(statement.sql, exc, dialect) from exc
    except Exception as exc:
        translated = translate_error(exc, statement.sql)
        if translated is not None:
            raise translated from exc
        raise


# SQLite's default cap on the parameters of one statement (SQLITE_MAX_VARIABLE_NUMBER).
_SQLITE_PARAMETERS = 32_766


async def insert_new_rows(
    session: AsyncSession, table: sa.Table, rows: Sequence[Mapping[str, Any]], returning: str
) -> list[Any]:
    """Insert those of *rows* whose key is not in *table* yet; return their *returning* values.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, in *session*'s transaction.
    On SQLite the statement goes to the driver connection in one hop (with the
    transaction's ``BEGIN``, if unsent), and the values through the columns' own
    bind processors, as in `insert_rows`, without the session's statement
    machinery around it: with the consumers' inbox rows written this way, the
    embedded pipeline spent 5-7 % less of the event loop per event at 500
    events/s (docs/BENCHMARKS.md, issue #5). PostgreSQL runs it through the
    session.

    Args:
        session: a session inside a transaction (`Database.transaction`).
        table: the table written.
        rows: the rows, as ``{column: value}``, all with the first row's keys.
        returning: the column whose values come back, one per row inserted.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused the statement; the
            caller's transaction must roll back.
        sqlalchemy.exc.StatementError: a value its column refuses (a naive
            datetime), before anything is sent, as through the session.
    """
    if not rows:
        return []
    connection = await _session_connection(session)
    dialect = connection.dialect
    if dialect.name == "sqlite":
        raw = await pooled_connection(connection)
        statement = _statement(dialect, table, tuple(rows[0]))
        quote = dialect.identifier_preparer.quote
        values = ", ".join(["(" + ", ".join("?" * len(statement.columns)) + ")"] * len(rows))
        # Identifiers from the schema, quoted by the dialect; every value is a parameter.
        skipped = f"ON CONFLICT DO NOTHING RETURNING {quote(returning)}"
        sql = f"{statement.head} VALUES {values} {skipped}"
        try:
            arguments = [value for row in statement.arguments(rows) for value in row]
        except ValueError as exc:  # what the session raises for a value its column refuses
            raise sa.exc.StatementError(str(exc), sql, None, exc) from exc
        if len(arguments) <= _SQLITE_PARAMETERS:
            try:
                fetched = await fetch_in_transaction(raw.dbapi_connection, sql, arguments)
            except sqlite3.Error as exc:
                raise sqlite_error(sql, exc, dialect) from exc
            if fetched is not None:
                return [row[0] for row in fetched]
    query = insert_ignoring_conflicts_for(dialect.name, table).returning(table.c[returning])
    return list((await session.execute(query, list(rows))).scalars())
