"""SQLAlchemy's aiosqlite adapter, with each statement in one hop to the driver's thread.

aiosqlite runs every sqlite3 call on a thread of its own, and each call is a hop
there and back: a queue, a thread wake-up, and a wake-up of the event loop.
SQLAlchemy's adapter makes three or four of them per statement (open a cursor,
execute, fetch the rows, close the cursor). `one_hop_dbapi` hands SQLAlchemy the
same adapter with a cursor that does all of that in one function on the
driver's thread, and keeps what SQLAlchemy reads afterwards (the description,
the rows, ``rowcount`` and ``lastrowid``).

A transaction's ``BEGIN`` rides along too: `defer_begin` (called by
`_configure_sqlite` when a transaction starts) leaves it for the transaction's
first statement, which sends it in its own hop, and a transaction that ran no
statement commits or rolls back without a hop. A one-event write transaction
goes from five hops to two: the statement, with ``BEGIN IMMEDIATE`` before it,
and ``COMMIT``. Code that uses the driver connection itself inside a
transaction calls `begin_deferred` first.

A write whose result nobody reads (the outbox's rows) can ride along as well
(`ride_along`): it is sent in the connection's next hop, before that hop's
statement, or before its ``COMMIT``. A transaction that stages an event and
commits makes one hop. Every later statement of the transaction sees the row
(it was written first), a savepoint rolled back after it undoes it, and a
rollback drops it unsent. If SQLite refuses it, the statement it rode with
fails with SQLite's error, and the transaction can no longer commit: its
``COMMIT`` fails too, even when the caller went on after the first error.

Server-side cursors (``stream()``) keep SQLAlchemy's own cursor, which sends a
deferred ``BEGIN`` before its statement: they fetch as they go. The hop uses
aiosqlite's ``Connection._execute``, the method its own ``execute_fetchall`` goes
through; `one_hop_dbapi` returns None when an aiosqlite release no longer has
it, and the engine then uses the stock adapter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]
_T = TypeVar("_T")

# The ``BEGIN`` each aiosqlite connection's next statement sends first (`defer_begin`).
_deferred: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# The writes each connection's next hop sends after that ``BEGIN`` (`ride_along`).
_riders: weakref.WeakKeyDictionary[Any, list[_Rider]] = weakref.WeakKeyDictionary()
# Why a connection's transaction cannot commit: a write that rode along failed.
_spoiled: weakref.WeakKeyDictionary[Any, sqlite3.Error] = weakref.WeakKeyDictionary()
# Connections whose COMMIT may run on the event loop's thread (`commit_here`).
_here: weakref.WeakKeyDictionary[Any, _Here] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class _Rider:
    """An ``executemany`` sent with the connection's next hop (`ride_along`)."""

    sql: str
    arguments: Sequence[Sequence[Any]]
    along: bool  # False: its caller sends it now (`begin_deferred`) and sees its error


@dataclass(frozen=True, slots=True)
class _Here:
    """How a connection registered with `commit_here` commits."""

    busy_timeout_ms: int  # what its other statements wait with
    when: Callable[[], bool] | None  # when its COMMIT runs here (None: always)
    held: HeldCommits | None  # where its transactions are held for a group commit

    def busy_timeout_here(self) -> int | None:
        """*busy_timeout_ms* when its COMMIT runs here now; None: on aiosqlite's thread."""
        return self.busy_timeout_ms if self.when is None or self.when() else None


class HeldCommits:
    """Transactions whose writes all rode along, held to commit with others (group commit).

    While other transactions wait for the write turn, a transaction on the writer
    connection whose writes all rode along (an event staged by
    `seawall.messaging.Outbox.add`, a consumer's batch of inbox rows) sent nothing
    yet: its commit would be ``BEGIN IMMEDIATE``, its writes and ``COMMIT``, with
    an fsync, all while the others wait. `commit_here` with *held* holds it there
    instead, its writes unsent, and its commit returns at once: the turn passes on.
    The next such transaction that nobody waits behind (or that finds *limit*
    held) commits them all with its own, in one transaction: one ``BEGIN``, one
    ``COMMIT``, one fsync. Each held transaction learns its outcome from its
    future (`take`); the owner (`seawall.db.Database`) sees that the held ones
    commit even when no such transaction comes (`commit_held`).

    A held transaction's writes are invisible to every other until they commit,
    as any uncommitted write is. One whose write SQLite refuses fails alone (each
    is retried in a savepoint of its own); a failed ``BEGIN`` or ``COMMIT`` fails
    them all. Not thread-safe: used under the writer's own lock, one transaction
    at a time.
    """

    __slots__ = ("_members", "_taken", "generation", "limit")

    def __init__(self, *, limit: int = 256) -> None:
        self.limit = limit
        self.generation = 0  # groups taken to commit so far
        self._members: _Members = []
        self._taken: tuple[asyncio.Future[None], bool] | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"HeldCommits({len(self._members)} held, {self.generation} groups)"

    def take(self) -> tuple[asyncio.Future[None], bool] | None:
        """The future of the transaction just held, and whether it began a group; once.

        None when the last commit was not held. The future's result is None once
        the transaction committed, its exception the `sqlite3.Error` that failed it.
        """
        taken, self._taken = self._taken, None
        return taken

    def pending(self) -> asyncio.Future[None] | None:
        """The future of the transaction just held (as `take`, without taking it)."""
        return None if self._taken is None else self._taken[0]

    def _hold(self, riders: list[_Rider]) -> None:
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)  # a caller cancelled meanwhile never reads it
        self._taken = (future, not self._members)
        self._members.append((riders, future))

    def fail(self, error: BaseException) -> None:
        """Fail every transaction held now with *error*: none of their writes was sent."""
        _settle_members(self._take_all(), error)

    def _take_all(self) -> _Members:
        members, self._members = self._members, []
        if members:
            self.generation += 1
        return members


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Resolve a held transaction's *future*, from whatever thread and loop this runs in."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = future.get_loop()
    if loop is running:
        _set(future, error)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_set, future, error)


def _set(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its transaction's caller was cancelled while it waited
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


# Transactions held for a group commit: the writes of each, and the future it waits on.
_Members = list[tuple[list[_Rider], asyncio.Future[None]]]


class _RiderError(Exception):
    """On the driver's thread: a write that rode along failed (with *error*)."""

    def __init__(self, rider: _Rider, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.rider = rider
        self.error = error


def ride_along(
    dbapi_connection: Any, sql: str, arguments: Sequence[Sequence[Any]], *, along: bool = True
) -> bool:
    """Send *sql* for each of *arguments* in the connection's next hop (see the module).

    For writes inside a transaction whose results nobody reads. The caller
    learns of a refusal from the statement (or the ``COMMIT``) it rode with.
    With *along* False the caller sends it at once with `begin_deferred` (with
    the ``BEGIN`` and the writes staged before it, in one hop) and gets its
    refusal there, like any statement's: that alone does not spoil the
    transaction.

    Returns:
        False, with nothing staged, when *dbapi_connection* is not a one-hop
        connection: the caller runs the statement itself.

    Raises:
        RuntimeError: the connection is in no transaction (the writes would
            commit on their own).
    """
    if not isinstance(dbapi_connection, _OneHopConnection):
        return False
    driver = dbapi_connection._connection
    if driver not in _deferred and not driver.in_transaction:
        raise RuntimeError("writes can only ride along inside a transaction")
    _riders.setdefault(driver, []).append(_Rider(sql, arguments, along))
    return True


def defer_begin(dbapi_connection: Any, statement: str) -> bool:
    """Leave *statement* (a ``BEGIN``) to the connection's next statement, in its hop.

    Returns:
        False, with nothing deferred, when *dbapi_connection* is not a one-hop
        connection: the caller sends the ``BEGIN`` itself.
    """
    if not isinstance(dbapi_connection, _OneHopConnection):
        return False
    _deferred[dbapi_connection._connection] = statement
    return True


def forget_begin(dbapi_connection: Any) -> bool:
    """Drop a deferred ``BEGIN`` that no statement sent; whether there was one.

    A transaction that ends with its ``BEGIN`` still deferred never started:
    nothing to commit or roll back. Writes still waiting to ride along are
    dropped too (they belong to the transaction that ends), and so is a failure
    that spoiled it.
    """
    driver = getattr(dbapi_connection, "_connection", None)
    if driver is None:
        return False
    _riders.pop(driver, None)
    _spoiled.pop(driver, None)
    return _deferred.pop(driver, None) is not None


def commit_here(
    dbapi_connection: Any,
    *,
    busy_timeout_ms: int | None,
    when: Callable[[], bool] | None = None,
    held: HeldCommits | None = None,
) -> bool:
    """Run the connection's ``COMMIT`` (and what goes with it) on the calling thread.

    For a connection used by one transaction at a time, each statement awaited in
    turn: this process's SQLite writer. The commit of a transaction whose writes
    all rode along (an event staged by `seawall.messaging.Outbox.add`, a batch of
    inbox rows) is then its whole transaction: ``BEGIN IMMEDIATE``, the writes
    and ``COMMIT``, run at once on the event loop's thread instead of a hop to
    aiosqlite's thread and back. Under load the hop cost more than the work: the
    wake-up of the thread, its wait for the GIL (held by a busy loop), and the
    loop's wake-up after, each while the write turn was held (docs/BENCHMARKS.md,
    issue #5). The loop waits for the fsync instead, so *when* can keep that to
    the moments it pays.

    A ``BEGIN IMMEDIATE`` sent here does not wait for another process's write
    lock: it tries once, and when the lock is taken the commit goes to
    aiosqlite's thread as before, to wait there with the busy timeout.

    Args:
        dbapi_connection: SQLAlchemy's DB-API connection.
        busy_timeout_ms: the connection's ``busy_timeout``, restored after a
            ``BEGIN`` tried without it; None to send its commits to aiosqlite's
            thread again.
        when: asked at each commit; it runs here only when this says so (for
            the writer: when other transactions wait for the write turn, so the
            loop stays free during the fsync when nobody waits for it).
        held: with *when*, a transaction whose writes all rode along is held
            there, uncommitted, while *when* says so, and committed with the
            next that is not (`HeldCommits`).

    Returns:
        False when *dbapi_connection* is not a one-hop connection (nothing changes).
    """
    if not isinstance(dbapi_connection, _OneHopConnection):
        return False
    driver = dbapi_connection._connection
    if busy_timeout_ms is None:
        _here.pop(driver, None)
    else:
        _here[driver] = _Here(busy_timeout_ms, when, held)
    return True


async def begin_deferred(dbapi_connection: Any) -> None:
    """Send the connection's deferred ``BEGIN`` and staged writes now (one hop), if any.

    For code that runs statements on the driver connection itself inside a
    transaction begun through SQLAlchemy: without it they would run, and commit,
    outside that transaction. Also how a write staged with ``along=False`` is sent.

    Raises:
        sqlite3.Error: the ``BEGIN`` failed (the write lock stayed busy), or a
            staged write was refused.
    """
    driver: Any = getattr(dbapi_connection, "_connection", None)
    if driver is None:
        return
    begin, riders = _deferred.pop(driver, None), _riders.pop(driver, None)
    if begin is None and not riders:
        return
    try:
        await driver._execute(_send, driver._conn, begin, riders)
    except BaseException as error:  # the hop is over (a cancelled one may still run on)
        raise _after_failed_hop(driver, begin, riders, error) from None


async def fetch_in_transaction(
    dbapi_connection: Any, sql: str, parameters: Sequence[Any]
) -> list[Any] | None:
    """Run *sql* in the connection's transaction, in one hop; return its rows.

    The deferred ``BEGIN`` and the writes riding along go first, in the same hop,
    as a statement through SQLAlchemy's cursor would send them (`OneHopCursor`),
    without SQLAlchemy's statement machinery around it.

    Returns:
        None, with nothing sent, when *dbapi_connection* is not a one-hop
        connection: the caller runs the statement another way.

    Raises:
        sqlite3.Error: SQLite refused the ``BEGIN``, a write riding along, or *sql*.
    """
    if not isinstance(dbapi_connection, _OneHopConnection):
        return None
    outcome = await _statement_hop(dbapi_connection._connection, sql, parameters, many=False)
    return outcome[1] or []


async def _statement_hop(driver: Any, sql: str, parameters: Any, *, many: bool) -> _Outcome:
    """One statement, after the deferred ``BEGIN`` and the writes riding along, in one hop.

    Raises:
        BaseException: what `_after_failed_hop` makes of the hop's failure.
    """
    begin, riders = _deferred.pop(driver, None), _riders.pop(driver, None)
    try:
        outcome: _Outcome = await driver._execute(
            _run, driver._conn, sql, parameters, many=many, begin=begin, riders=riders
        )
    except BaseException as error:  # the hop is over (a cancelled one may still run on)
        raise _after_failed_hop(driver, begin, riders, error) from None
    return outcome


def _after_failed_hop(
    driver: Any, begin: str | None, riders: list[_Rider] | None, error: BaseException
) -> BaseException:
    """Put back what a failed hop carried and did not send; return the error to raise.

    A ``BEGIN IMMEDIATE`` that found the write lock busy (or a hop that never
    reached the thread) leaves no transaction open; the transaction's next
    statement must try it again, with the writes that rode along, else they
    would run, and commit, on their own. A write that rode along and failed (or
    may have: a cancelled hop) spoils the transaction: it cannot commit.
    """
    if isinstance(error, _RiderError):
        if not error.rider.along:  # the caller's own statement: its error, as usual
            return error.error
        failure = _sent_along(error)
        _spoiled[driver] = failure
        return failure
    if not isinstance(error, Exception):  # cancelled: the writes may run on, or not
        if riders:
            _spoiled[driver] = sqlite3.OperationalError("writes sent along were interrupted")
        return error
    if begin is None:
        if riders:  # sent inside an open transaction, before what failed
            with contextlib.suppress(ValueError):
                if not driver.in_transaction:  # ... which SQLite itself rolled back
                    _spoiled[driver] = sqlite3.OperationalError("the transaction was rolled back")
        return error
    try:
        begun = bool(driver.in_transaction)
    except ValueError:  # aiosqlite's "no active connection": closed, nothing to begin
        return error
    if not begun:
        _deferred[driver] = begin
        # Not those sent at once: their callers got this error for them.
        if kept := [rider for rider in riders or () if rider.along]:
            _riders[driver] = [*kept, *_riders.get(driver, ())]
    return error


def _sent_along(error: _RiderError) -> sqlite3.Error:
    """The error a write that rode along failed with, naming it."""
    return type(error.error)(f"{error.error} (in {error.rider.sql!r}, sent along)")


def _send(connection: sqlite3.Connection, begin: str | None, riders: list[_Rider] | None) -> None:
    """On the driver's thread: *begin*, then the writes that ride along."""
    if begin is None and not riders:
        return
    cursor = connection.cursor()
    try:
        _send_on(cursor, begin, riders)
    finally:
        cursor.close()


def _send_on(cursor: sqlite3.Cursor, begin: str | None, riders: list[_Rider] | None) -> None:
    if begin is not None:
        cursor.execute(begin)
    for rider in riders or ():
        try:
            cursor.executemany(rider.sql, rider.arguments)
        except sqlite3.Error as error:
            raise _RiderError(rider, error) from error


def _run(
    connection: sqlite3.Connection,
    operation: str,
    parameters: Any,
    *,
    many: bool,
    begin: str | None,
    riders: list[_Rider] | None = None,
) -> _Outcome:
    """On the driver's thread: run one statement (after *begin* and *riders*).

    Returns what a cursor holds afterwards.
    """
    cursor = connection.cursor()
    try:
        _send_on(cursor, begin, riders)
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
            outcome = await_(_statement_hop(driver, operation, parameters, many=many))
        except Exception as failure:
            self._adapt_connection._handle_exception(failure)  # as SQLAlchemy's adapter does
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


class _StreamingCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """SQLAlchemy's server-side cursor, sending a deferred ``BEGIN`` before its statement.

    SQLAlchemy creates a statement's cursor before it begins the transaction, so
    the ``BEGIN`` cannot go at the cursor's creation.
    """

    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._begin()
        return super().execute(operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._begin()
        return super().executemany(operation, seq_of_parameters)

    def _begin(self) -> None:
        try:
            await_(begin_deferred(self._adapt_connection))
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            return _StreamingCursor(self)
        return OneHopCursor(self)

    def commit(self) -> None:
        driver = self._connection
        if (spoiled := _spoiled.pop(driver, None)) is not None:
            _riders.pop(driver, None)
            raise type(spoiled)(f"cannot commit: {spoiled}")
        busy_timeout_ms, held = None, None
        if (setting := _here.get(driver)) is not None:
            busy_timeout_ms = setting.busy_timeout_here()
            if setting.when is not None:
                held = setting.held
        riders = _riders.pop(driver, None)
        if held is not None and driver in _deferred:  # nothing sent: the commit is all of it
            if riders and busy_timeout_ms is not None and len(held) < held.limit:
                del _deferred[driver]  # held, unsent: the turn passes on (`HeldCommits`)
                held._hold(riders)
                return
            if len(held):  # those held commit with this one (or as this empty one)
                _deferred.pop(driver)
                self._commit_group(held._take_all(), riders, busy_timeout_ms)
                return
        if riders:
            # The writes that rode along go with the COMMIT (and the BEGIN, if unsent).
            begin = _deferred.pop(driver, None)
            try:
                if busy_timeout_ms is None or not _commit_here(
                    driver, begin, riders, busy_timeout_ms
                ):
                    await_(driver._execute(_commit, driver._conn, begin, riders))
            except BaseException as error:
                failure = _after_failed_hop(driver, begin, riders, error)
                if not isinstance(failure, Exception):
                    raise
                self._handle_exception(failure)
            return
        if forget_begin(self):  # it never began: nothing to commit
            return
        if busy_timeout_ms is None:
            super().commit()
            return
        try:
            _on_this_thread(driver, driver._conn.commit)
        except Exception as error:
            self._handle_exception(error)

    def _commit_group(
        self,
        members: _Members,
        riders: list[_Rider] | None,
        busy_timeout_ms: int | None,
    ) -> None:
        """Commit the held *members* and this transaction's *riders* (if any) together."""
        driver = self._connection
        batches = [batch for batch, _ in members]
        if riders:
            batches.append(riders)
        try:
            outcome = None
            if busy_timeout_ms is not None:
                outcome = _group_here(driver, members, batches, busy_timeout_ms)
            if outcome is None:
                outcome = await_(_group_hop(driver, members, batches))
        except BaseException as error:
            if not riders:
                if isinstance(error, Exception):
                    return  # an empty transaction: only the members' outcome, told to them
                raise
            failure = _after_failed_hop(driver, _GROUP_BEGIN, riders, error)
            if not isinstance(failure, Exception):
                raise
            self._handle_exception(failure)
        if riders and (refused := outcome[-1]) is not None:
            self._handle_exception(_sent_along(refused))

    def rollback(self) -> None:
        if not forget_begin(self):  # writes that never rode along: nothing to undo
            super().rollback()


def _commit(connection: sqlite3.Connection, begin: str | None, riders: list[_Rider]) -> None:
    """On the driver's thread: *begin*, the writes that ride along, then ``COMMIT``."""
    _send(connection, begin, riders)
    connection.commit()


# What a group of held transactions (`HeldCommits`) begins with: the writer's BEGIN.
_GROUP_BEGIN = "BEGIN IMMEDIATE"
# Each batch's refusal in a group commit (None: committed).
_Refusals = list["_RiderError | None"]


def _commit_batches(
    connection: sqlite3.Connection,
    begin: str,
    batches: list[list[_Rider]],
    busy_timeout_ms: int | None,
) -> list[_RiderError | None] | None:
    """*begin*, each batch of writes, then ``COMMIT``: several transactions' in one (one fsync).

    With *busy_timeout_ms*, the ``BEGIN`` does not wait for another process's write
    lock (`_begin_at_once`).

    Returns:
        Each batch's refusal (None: committed), or None, with nothing sent, when
        the lock was taken. A refused batch is undone alone: on a refusal every
        batch is sent again in a savepoint of its own.

    Raises:
        sqlite3.Error: the ``BEGIN`` or the ``COMMIT`` failed (nothing committed).
    """
    if busy_timeout_ms is None:
        connection.execute(begin)
    elif not _begin_at_once(connection, begin, busy_timeout_ms):
        return None
    refused: list[_RiderError | None] = [None] * len(batches)
    cursor = connection.cursor()
    try:
        cursor.execute("SAVEPOINT seawall_group")
        try:
            for riders in batches:
                _send_on(cursor, None, riders)
        except _RiderError:
            cursor.execute("ROLLBACK TO seawall_group")
            for index, riders in enumerate(batches):
                cursor.execute("SAVEPOINT seawall_member")
                try:
                    _send_on(cursor, None, riders)
                except _RiderError as error:
                    refused[index] = error
                    cursor.execute("ROLLBACK TO seawall_member")
                cursor.execute("RELEASE seawall_member")
        cursor.execute("RELEASE seawall_group")
        connection.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.rollback()
        raise
    finally:
        cursor.close()
    return refused


async def commit_held(dbapi_connection: Any, held: HeldCommits) -> None:
    """Commit the transactions *held* (if any) on the writer's connection, in one go.

    For the writer's owner, under the write turn, between transactions. Each held
    transaction learns its outcome from its future; this raises nothing of theirs.
    """
    if not (members := held._take_all()):
        return
    driver = dbapi_connection._connection
    setting = _here.get(driver)
    batches = [batch for batch, _ in members]
    # Here while others wait for the turn, as any commit of the writer (`commit_here`).
    busy_timeout_ms = None if setting is None else setting.busy_timeout_here()
    with contextlib.suppress(Exception):
        here = busy_timeout_ms is not None
        if here and _group_here(driver, members, batches, busy_timeout_ms or 0) is not None:
            return
        await _group_hop(driver, members, batches)


def _group_here(
    driver: Any, members: _Members, batches: list[list[_Rider]], busy_timeout_ms: int
) -> _Refusals | None:
    """`_commit_batches` on this thread, *members* told how it went; None if the lock was taken.

    Raises:
        sqlite3.Error: the ``BEGIN`` or the ``COMMIT`` failed (the members are told).
    """
    try:
        outcome = _on_this_thread(
            driver, _commit_batches, driver._conn, _GROUP_BEGIN, batches, busy_timeout_ms
        )
    except Exception as error:
        _settle_members(members, error)
        raise
    if outcome is not None:
        _settle_members(members, outcome)
    return outcome


def _group_hop(
    driver: Any, members: _Members, batches: list[list[_Rider]]
) -> asyncio.Future[_Refusals]:
    """`_commit_batches` on aiosqlite's thread; *members* are told when it is done, whoever waits.

    A caller cancelled meanwhile (the future returned is shielded) leaves the
    others' outcome intact.
    """
    hop = asyncio.ensure_future(
        driver._execute(_commit_batches, driver._conn, _GROUP_BEGIN, batches, None)
    )
    hop.add_done_callback(lambda done: _settle_members(members, _outcome_of(done)))
    return asyncio.shield(hop)


def _outcome_of(hop: asyncio.Future[Any]) -> _Refusals | BaseException:
    if hop.cancelled():
        return sqlite3.OperationalError("the group's commit was interrupted")
    return hop.exception() or hop.result()


def _settle_members(members: _Members, outcome: _Refusals | BaseException) -> None:
    """Tell each held transaction of *members* how its commit went (*outcome*: each's, or all's)."""
    for index, (_, future) in enumerate(members):
        if isinstance(outcome, BaseException):
            _settle(future, outcome)
        else:
            refused = outcome[index]
            _settle(future, None if refused is None else _sent_along(refused))


def _commit_here(
    driver: Any, begin: str | None, riders: list[_Rider], busy_timeout_ms: int
) -> bool:
    """`_commit` on this thread (`commit_here`); False, with nothing sent, if the lock was taken.

    Raises:
        _RiderError: a write that rode along was refused (the transaction is open).
        sqlite3.Error: the ``BEGIN`` or the ``COMMIT`` failed.
    """
    return _on_this_thread(driver, _commit_at_once, driver._conn, begin, riders, busy_timeout_ms)


def _commit_at_once(
    connection: sqlite3.Connection, begin: str | None, riders: list[_Rider], busy_timeout_ms: int
) -> bool:
    """`_commit`, its *begin* not waiting for another process's write lock: False if taken."""
    if begin is not None and not _begin_at_once(connection, begin, busy_timeout_ms):
        return False
    _send(connection, None, riders)
    connection.commit()
    return True


def _begin_at_once(connection: sqlite3.Connection, begin: str, busy_timeout_ms: int) -> bool:
    """*begin* without waiting for another process's write lock; whether it began."""
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        connection.execute(begin)
    except sqlite3.OperationalError as exc:
        # SQLITE_BUSY, or one of its extended codes (a WAL being recovered, say).
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            return False
        raise
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return True


def _on_this_thread(driver: Any, fn: Callable[..., _T], *args: Any) -> _T:
    """*fn* on the calling thread, where aiosqlite would have sent it to its own."""
    if not getattr(driver, "_running", True):
        raise ValueError("Connection closed")  # what aiosqlite's own hop says
    return fn(*args)


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
