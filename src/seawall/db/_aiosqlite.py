"""SQLAlchemy's aiosqlite adapter, with each statement in one hop to the driver's thread.

aiosqlite runs every sqlite3 call on a thread of its own, and each call is a hop
there and back: a queue, a thread wake-up, and a wake-up of the event loop.
SQLAlchemy's adapter makes three or four of them per statement (open a cursor,
execute, fetch the rows, close the cursor). `one_hop_dbapi` hands SQLAlchemy the
same adapter with a cursor that does all of that in one function on the
driver's thread, and keeps what SQLAlchemy reads afterwards (the description,
the rows, ``rowcount`` and ``lastrowid``). A one-event write transaction goes
from five hops to three (with `_configure_sqlite`'s one-hop ``BEGIN``).

Server-side cursors (``stream()``) keep SQLAlchemy's own cursor: they fetch as
they go. The hop uses aiosqlite's ``Connection._execute``, the method its own
``execute_fetchall`` goes through; `one_hop_dbapi` returns None when an
aiosqlite release no longer has it, and the engine then uses the stock adapter.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, *, many: bool
) -> _Outcome:
    """On the driver's thread: run one statement and keep what a cursor would hold."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor:
    """A DB-API cursor over an aiosqlite connection: each statement is one hop.

    The rows of a statement are fetched in the same hop and handed out from
    memory, as SQLAlchemy's own (buffered) adapter cursor does.
    """

    server_side = False
    __slots__ = ("_adapt_connection", "_description", "_lastrowid", "_rowcount", "_rows")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._description: Any = None
        self._rows: collections.deque[Any] = collections.deque()
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass  # the rows are all fetched already

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._hop(operation, parameters, many=False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._hop(operation, seq_of_parameters, many=True)

    def _hop(self, operation: str, parameters: Any, *, many: bool) -> None:
        driver = self._adapt_connection._connection
        try:
            outcome: _Outcome = await_(
                driver._execute(_run, driver._conn, operation, parameters, many=many)
            )
        except Exception as error:  # translated as SQLAlchemy's own adapter does
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows or ())

    async def _async_soft_close(self) -> None:
        """Nothing to close: the driver's cursor was closed in the hop."""

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    def nextset(self) -> None:
        return None

    def __enter__(self) -> OneHopCursor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or 1, len(rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            return super().cursor(server_side=True)
        return OneHopCursor(self)


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        connection = super().connect(*arg, **kw)
        connection.__class__ = _OneHopConnection  # the same object, one method more
        return connection


def one_hop_dbapi() -> Any:
    """The DB-API module for ``create_async_engine(module=...)``, or None (see the module)."""
    import aiosqlite  # noqa: PLC0415 - only SQLite engines need it

    if not (hasattr(aiosqlite.Connection, "_execute") and hasattr(aiosqlite.Connection, "_conn")):
        return None
    return _OneHopDBAPI(aiosqlite, sqlite3)
