"""Statements on the raw driver connection of a pooled connection.

Hot paths that write or read many rows at once (the webhook group commit, the
outbox relay) skip the session and talk to the driver directly: no greenlet
bridge per statement, no per-row result processing. On PostgreSQL,
`raw_transaction` yields asyncpg inside a transaction (statements prepared once
per connection); on SQLite, `sqlite_statement` runs one statement through
aiosqlite as a transaction of its own. Both turn the driver's errors into the
SQLAlchemy errors a session would raise, so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from asyncio import CancelledError
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.engine import Dialect

from seawall.db._database import Database, pooled_connection, sqlite_error

__all__ = [
    "RawStatement",
    "UnnestInsert",
    "pooled_connection",
    "raw_failure",
    "raw_transaction",
    "sqlite_statement",
    "translate_error",
    "unusable",
]

# SQLSTATE classes and the DB-API error SQLAlchemy raises for them; the rest is operational.
_ERROR_CLASSES: Final[Mapping[str, type[sa_exc.DBAPIError]]] = {
    "22": sa_exc.DataError,
    "23": sa_exc.IntegrityError,
    "42": sa_exc.ProgrammingError,
    "0A": sa_exc.NotSupportedError,
    "XX": sa_exc.InternalError,
}


def translate_error(exc: BaseException, statement: str | None) -> sa_exc.DBAPIError | None:
    """The SQLAlchemy error a session would raise for asyncpg's *exc*, if it is asyncpg's (pure).

    The statement is kept, never its parameters (they hold request bodies).
    """
    asyncpg: Any = sys.modules.get("asyncpg")  # not loaded: not asyncpg's error either
    if asyncpg is None:
        return None
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        kind = _ERROR_CLASSES.get(sqlstate[:2], sa_exc.OperationalError)
    elif isinstance(exc, asyncpg.InterfaceError):
        # The connection was lost, or is unusable: the outside world, not a bad row.
        kind = sa_exc.InterfaceError
    else:
        return None
    return kind(statement, None, exc, hide_parameters=True)


class RawStatement:
    """Remembers the statement last sent on a raw connection, for its error (never the values)."""

    __slots__ = ("sql",)

    def __init__(self) -> None:
        self.sql: str | None = None


@asynccontextmanager
async def raw_transaction(database: Database) -> AsyncIterator[tuple[Any, RawStatement]]:
    """Yield an asyncpg connection inside a transaction, and where to note each statement.

    The connection comes from *database*'s pool (one the server closed is replaced at
    checkout) and goes back to it afterwards; one that was lost or could not roll
    back is discarded.

    Raises:
        sqlalchemy.exc.DBAPIError: a statement or the commit failed (the driver's
            error translated); the transaction was rolled back.
    """
    statement = RawStatement()
    async with database.engine.connect() as connection:
        driver: Any = (await pooled_connection(connection)).driver_connection
        try:
            async with driver.transaction():
                yield driver, statement
        except BaseException as exc:
            if unusable(driver):
                await connection.invalidate()
            failure = raw_failure(exc, statement.sql)
            if failure is exc:
                raise
            raise failure from exc


async def sqlite_statement(
    database: Database,
    sql: str,
    parameters: Sequence[Any] | Mapping[str, Any] = (),
    *,
    write: bool = False,
) -> list[tuple[Any, ...]]:
    """Run one SQL statement on a SQLite connection's aiosqlite driver; return its rows.

    The connection is one of those `Database.statement_connection` keeps aside
    between statements (or a fresh one from the pool).

    The statement is a transaction of its own (SQLite's autocommit), sent in one
    hop to aiosqlite's thread: a session's transaction costs four more (``BEGIN``,
    the cursor's creation and close, ``COMMIT``). A read sees one snapshot; a write has
    committed, and on this database's ``synchronous=FULL`` been synced, when this
    returns. With *write*, it waits for this process's write turn first
    (`Database.write_turn`), as `Database.transaction` does.

    Rows come back as the driver gives them: tuples of SQLite's own types
    (timestamps are text, JSON is text).

    Raises:
        ValueError: *database* is not SQLite.
        sqlalchemy.exc.DBAPIError: the driver's error, translated (its statement
            kept, its parameters never).
    """
    if database.dialect != "sqlite":
        raise ValueError(f"sqlite_statement needs a SQLite database, not {database.dialect}")
    turn = database.write_turn() if write else contextlib.nullcontext()
    async with turn, database.statement_connection() as connection:
        driver: Any = (await pooled_connection(connection)).driver_connection
        try:
            return list(await driver.execute_fetchall(sql, parameters))
        except sqlite3.Error as exc:
            raise sqlite_error(sql, exc, connection.dialect) from exc


def unusable(driver: Any) -> bool:
    """Whether an asyncpg connection that failed inside a transaction must be discarded.

    Lost, or left inside a transaction it could not roll back: never reuse it.
    """
    return bool(driver.is_closed() or driver.is_in_transaction())


def raw_failure(exc: BaseException, statement: str | None) -> BaseException:
    """What to raise for *exc*, met inside a transaction on the raw connection.

    A cancellation while asyncpg could not roll back the statement it was
    cancelled in stays a cancellation (the caller must see it as such); a
    driver error becomes SQLAlchemy's (`translate_error`); anything else is *exc*.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() and not isinstance(exc, CancelledError):
        return CancelledError()
    return translate_error(exc, statement) or exc


class UnnestInsert:
    """``INSERT INTO table (columns) SELECT ... FROM unnest($1::type[], ...)`` for rows as dicts.

    One statement for any number of rows, with a fixed text (prepared once per
    connection). Each value goes through its column's bind processor for
    *dialect*; JSON travels as text and is cast back in the statement.

    Args:
        table: the table written.
        columns: the columns each row has, in order.
        dialect: the PostgreSQL dialect the processors are for.
        suffix: SQL appended to the statement (``ON CONFLICT ...``, ``RETURNING ...``).
    """

    def __init__(
        self, table: sa.Table, columns: Sequence[str], dialect: Dialect, *, suffix: str = ""
    ) -> None:
        self.columns = tuple(columns)
        arrays: list[str] = []
        selected: list[str] = []
        self._processors: list[Callable[[Any], Any] | None] = []
        for position, name in enumerate(self.columns, start=1):
            column = table.c[name]
            is_json = isinstance(column.type, sa.JSON)
            sql_type = "TEXT" if is_json else column.type.compile(dialect=dialect)
            arrays.append(f"${position}::{sql_type}[]")
            selected.append(f"v{position}::JSON" if is_json else f"v{position}")
            self._processors.append(column.type.dialect_impl(dialect).bind_processor(dialect))
        names = ", ".join(f"v{position}" for position in range(1, len(self.columns) + 1))
        quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in self.columns)
        target = dialect.identifier_preparer.format_table(table)
        source = f"unnest({', '.join(arrays)}) AS t({names})"
        # Identifiers from the schema, quoted by the dialect; every value is a parameter.
        insert = f"INSERT INTO {target} ({quoted}) SELECT {', '.join(selected)} FROM {source}"  # noqa: S608
        self.sql = f"{insert} {suffix}" if suffix else insert

    def arguments(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """One array per column, each value processed as the column binds it.

        Raises:
            KeyError: a row lacks one of the columns.
            ValueError: a value its column refuses (a naive datetime).
        """
        arguments: list[list[Any]] = []
        for name, process in zip(self.columns, self._processors, strict=True):
            values = [row[name] for row in rows]
            arguments.append(values if process is None else [process(value) for value in values])
        return arguments
