"""`Database`: one async engine and its session factory."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection, PoolResetState
from sqlalchemy.util import greenlet_spawn

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

from seawall.db._aiosqlite import (
    HeldCommits,
    commit_held,
    commit_here,
    defer_begin,
    forget_begin,
    one_hop_dbapi,
)
from seawall.errors import DatabaseError
from seawall.observability import mask_url

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


# Execution option of the connections `Database.reading` hands out.
_READ_ONLY = "seawall_read_only"


def normalize_url(url: str) -> str:
    """Return *url* with the async driver seawall uses for its backend.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db`` and ``postgresql://...``
    (or ``postgres://``) becomes ``postgresql+asyncpg://...``; explicit drivers stay.

    Raises:
        ValueError: the URL names a backend seawall does not support.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like sqlite:///path or postgresql://host/db")
    if "+" in scheme:
        backend = scheme.split("+", 1)[0]
        if backend not in _ASYNC_DRIVERS:
            raise ValueError(f"unsupported database backend {backend!r}")
        return url
    if scheme not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database backend {scheme!r}")
    return f"{_ASYNC_DRIVERS[scheme]}://{rest}"


def dialect_of(session: AsyncSession) -> str:
    """Return the backend name of *session*'s connection (``sqlite`` or ``postgresql``)."""
    return session.get_bind().dialect.name


def insert_ignoring_conflicts(session: AsyncSession, table: sa.Table) -> Any:
    """Return ``INSERT ... ON CONFLICT DO NOTHING`` into *table* for *session*'s backend."""
    return insert_ignoring_conflicts_for(dialect_of(session), table)


def insert_ignoring_conflicts_for(dialect: str, table: sa.Table) -> Any:
    """Return ``INSERT ... ON CONFLICT DO NOTHING`` into *table* for backend *dialect*."""
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def affected_rows(result: Any) -> int:
    """Return how many rows an INSERT, UPDATE or DELETE result touched."""
    return int(result.rowcount)


@dataclasses.dataclass(slots=True)
class WriteTurnStats:
    """How a SQLite `Database`'s write turn was used in this process, since it was built.

    SQLite takes one writer at a time, so every write transaction of a process
    waits for its turn (`Database.write_turn`). Held seconds over wall-clock
    seconds is how busy the turn is: near 1, writers queue behind each other and
    their wait, not the event loop, is what a request or a consumer waits for
    (docs/BENCHMARKS.md, issue #5). A turn a task takes again inside its own
    transaction is not counted twice. Always zero on PostgreSQL.

    Attributes:
        acquired: turns taken.
        waited_seconds: time spent waiting for them, in all.
        held_seconds: time they were held, in all.
        timeouts: waits that gave up after the database's timeout.
        held_commits: transactions whose commit was held to go with others'
            (a group commit: `Database.transaction`).
    """

    acquired: int = 0
    waited_seconds: float = 0.0
    held_seconds: float = 0.0
    timeouts: int = 0
    held_commits: int = 0

    def snapshot(self) -> WriteTurnStats:
        """A copy of the figures now, to compare with later (`since`)."""
        return dataclasses.replace(self)

    def since(self, earlier: WriteTurnStats) -> WriteTurnStats:
        """What was counted after *earlier*, a `snapshot` of these stats."""
        return WriteTurnStats(
            self.acquired - earlier.acquired,
            self.waited_seconds - earlier.waited_seconds,
            self.held_seconds - earlier.held_seconds,
            self.timeouts - earlier.timeouts,
            self.held_commits - earlier.held_commits,
        )


class _Turn:
    """The write lock of a SQLite `Database` in one event loop, and the task holding it.

    First come, first served: a release hands the turn to the first in line still
    waiting. A place in line may also be a held group's (`Database._see_committed`),
    given up once the group committed without it.
    """

    __slots__ = ("held", "line", "owner", "waiting")

    def __init__(self) -> None:
        self.held = False
        self.line: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.owner: asyncio.Task[Any] | None = None
        self.waiting = 0  # transactions waiting for the turn now (not held groups)

    async def acquire(self) -> None:
        if not self.held:
            self.held = True
            return
        await self.wait(self.place())

    def place(self) -> asyncio.Future[bool]:
        """A place in line: its result is True once the turn is the caller's (to `release`)."""
        place = asyncio.get_running_loop().create_future()
        if self.held:
            self.line.append(place)
        else:
            self.held = True
            place.set_result(True)
        return place

    async def wait(self, place: asyncio.Future[bool]) -> bool:
        """Wait in *place*: True once the turn is the caller's, False if given up.

        Cancelled as the turn came, the turn passes on.
        """
        try:
            return await place
        except BaseException:
            if place.done() and not place.cancelled() and place.result():
                self.release()
            raise

    def release(self) -> None:
        line = self.line
        while line:
            place = line.popleft()
            if not place.done():  # else cancelled, or given up
                place.set_result(True)
                return
        self.held = False


# `Session.info` key of a session on SQLite's writer: the writer's `HeldCommits`.
_HELD = "seawall_held_commits"


def held_commit(session: Session) -> asyncio.Future[None] | None:
    """The future of *session*'s commit, if it was just held to go with others'.

    For ``after_commit`` listeners: SQLAlchemy runs them as soon as the session's
    commit returns, and on SQLite a commit held for a group commit
    (`Database.transaction`) returns before it is done. The future's result is
    None once it committed. None for every other commit: it is done already.
    """
    held: HeldCommits | None = session.info.get(_HELD)
    return None if held is None else held.pending()


# SQLite connections `Database.statement_connection` keeps aside between statements.
_KEPT = 2


@asynccontextmanager
async def _committed(
    session: AsyncSession, *, connect: bool = False
) -> AsyncIterator[AsyncSession]:
    """*session* in a transaction: committed on success, rolled back on error, then closed.

    What ``async with session, session.begin():`` does, with one trip through
    SQLAlchemy's greenlet bridge instead of four, and no task. ``begin`` does no
    I/O, so it is called directly; the commit and the close share one trip (the
    close alone was a trip and a shielded task). Each trip makes a new greenlet,
    and each new greenlet maps a fresh frame stack of 16 KiB and unmaps it at the
    end: 9 µs alone, about 20 µs of the event loop's time in the embedded
    pipeline, where transactions made eight of them per event (docs/BENCHMARKS.md,
    issue #5). *connect*: take the session's connection at once too, when that
    does no I/O either (SQLite's writer connection, whose ``BEGIN`` waits for the
    first statement), so the first write needs no trip for it.

    The close on the way out after an error is shielded from cancellation, as
    `AsyncSession`'s own is; an error in it gives way to the one that got there.
    """
    sync = session.sync_session
    try:
        sync.begin()
        if connect:
            sync.connection()
        yield session
        await greenlet_spawn(_commit_and_close, sync)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(greenlet_spawn(_roll_back_and_close, sync))
        raise


async def pooled_connection(connection: AsyncConnection) -> PoolProxiedConnection:
    """`AsyncConnection.get_raw_connection`, without its bridge when *connection* is live.

    A live connection holds its pooled connection, so reading it needs no I/O and
    no hop through SQLAlchemy's greenlet bridge, which cost the event loop 15 µs
    each time here. A closed or invalidated one goes the usual way (and fails
    there, or connects again).
    """
    sync = connection.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection
    return await connection.get_raw_connection()


def _give_up(place: asyncio.Future[bool]) -> None:
    """Give up a held group's place in line for the turn: the group committed without it."""
    if not place.done():
        place.set_result(False)


def _commit_and_close(session: Session) -> None:
    try:
        try:
            session.commit()
        except BaseException:
            # As `session.begin()`'s own exit does: a failed COMMIT (a write that rode
            # along was refused) leaves the transaction open, and the close alone
            # would not end it. The commit's error is the one that counts.
            with contextlib.suppress(Exception):
                session.rollback()
            raise
    finally:
        session.close()


def _roll_back_and_close(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


class Database:
    """An async engine with its session factory.

    SQLite runs in WAL mode with a busy timeout, and every transaction starts with
    ``BEGIN IMMEDIATE`` so that concurrent writers queue on the lock instead of
    failing when a read transaction upgrades to a write.

    Attributes:
        write_turn_stats: how SQLite's write turn was used (`WriteTurnStats`);
            ``/metrics`` exposes it as ``seawall_db_write_turn_*``.

    Args:
        url: a SQLAlchemy URL; see `normalize_url`.
        pool_size: connections kept per process (PostgreSQL).
        timeout: seconds to wait for a connection or for SQLite's write lock.
        echo: log every statement (debugging only).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        timeout: float = 5.0,
        echo: bool = False,
    ) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: statement parameters hold request bodies and keys; an
        # error's text (which may reach a log) must never carry them.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        self._begins_lazily = False
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": timeout}
            # One hop to aiosqlite's thread per statement instead of three or four.
            if (dbapi := one_hop_dbapi()) is not None:
                options["module"] = dbapi
            # Its BEGIN waits for the first statement: a transaction begins with no I/O.
            self._begins_lazily = dbapi is not None
            # The pool's rollback on return is done by `_configure_sqlite`'s reset
            # listener, only when SQLite says a transaction is still open.
            options["pool_reset_on_return"] = None
        else:
            options.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=timeout,
                connect_args={"timeout": timeout},
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        self._busy_timeout_ms = int(timeout * 1000)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, busy_timeout_ms=self._busy_timeout_ms)
        else:
            _check_connections_at_checkout(self.engine)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self.timeout = timeout
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] | None = (
            weakref.WeakKeyDictionary() if self.dialect == "sqlite" else None
        )
        self.write_turn_stats = WriteTurnStats()
        self._last_turn: tuple[weakref.ref[asyncio.AbstractEventLoop], _Turn] | None = None
        # SQLite: the connection write transactions take over from each other (`transaction`),
        # and who has it now (one transaction at a time, whatever its event loop).
        self._writer: AsyncConnection | None = None
        self._writer_taken = threading.Lock()
        # SQLite: connections kept out of the pool between raw statements
        # (`statement_connection`), and a count of `dispose` calls (one taken before a
        # dispose is closed when it comes back).
        self._kept: list[AsyncConnection] = []
        self._kept_lock = threading.Lock()
        self._disposals = 0
        # SQLite: the writer's transactions held for a group commit, and the tasks that
        # see a group committed when its first member's caller no longer can (`_commit_held`).
        self._held = HeldCommits() if self.dialect == "sqlite" else None
        self._flushes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Database({mask_url(self.url)!r})"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Yield a session inside one transaction: committed on success, rolled back on error.

        On SQLite, the transactions of this process take turns on an asyncio lock
        before ``BEGIN IMMEDIATE``: a writer that found SQLite's lock taken would
        sleep in its busy handler (1, 2, 5, 10 ... 100 ms) instead of starting as
        soon as the other one commits.

        On SQLite the transaction that has the turn also takes over the writer
        connection from the one before it, instead of checking a connection out of
        the pool and back in: 13-18 % less of the event loop for a one-event
        transaction (docs/BENCHMARKS.md, issue #5). A transaction nested in
        another of the same task gets a connection of its own, as before. After a
        transaction that failed, the writer goes back to the pool (which rolls
        back whatever was left open) and the next one connects anew.

        Group commit, on SQLite: a transaction whose writes all rode along with its
        commit (`seawall.messaging.Outbox.add`, a consumer's inbox rows), ending
        while other transactions wait for the turn, is held: its writes stay unsent
        and the turn passes on at once. The next such transaction with nobody
        waiting behind it commits those held with its own, in one ``BEGIN
        IMMEDIATE ... COMMIT`` and one fsync; if none comes first, the first one
        held does when its place in line for the turn comes. Either way this
        returns once its writes are committed (and raises if they are not), as
        any transaction does; meanwhile nobody sees them. One whose write SQLite
        refuses fails alone. While nobody waits for the turn, nothing is held.

        Raises:
            sqlalchemy.exc.OperationalError: on SQLite, other transactions of this
                process held the write lock for longer than the database's timeout
                (as SQLite's own busy timeout would).
        """
        if self._write_locks is None:
            async with _committed(self.sessions()) as session:
                yield session
            return
        held: tuple[asyncio.Future[None], bool] | None = None
        async with self.write_turn():
            if not self._writer_taken.acquire(blocking=False):
                # Nested in a transaction of this task (or of another event loop's).
                async with _committed(self.sessions()) as session:
                    yield session
                return
            try:
                async with self._on_the_writer() as session:
                    yield session
            finally:
                assert self._held is not None
                if (held := self._held.take()) is not None:
                    self.write_turn_stats.held_commits += 1
                self._writer_taken.release()
        if held is not None:  # its commit goes with others', after the turn
            future, first = held
            if first:
                assert self._held is not None
                await self._see_committed(future, self._held.generation)
            try:
                await future
            except sqlite3.Error as exc:
                raise sqlite_error("COMMIT", exc, self.engine.dialect) from exc

    async def _see_committed(self, future: asyncio.Future[None], generation: int) -> None:
        """See a group of held transactions committed: the first of them does (`HeldCommits`).

        The next transaction on the writer that nobody waits behind commits the
        group with its own. If none comes before, the first member's place in line
        for the turn does (without counting as a waiter, so it makes nobody hold),
        which bounds a group by the line there was when it began. A place given
        up (the group committed meanwhile) costs no turn.
        """
        turn = self._turn()
        place = turn.place()
        future.add_done_callback(lambda _: _give_up(place))
        try:
            mine = await turn.wait(place)
        except BaseException:
            self._commit_held_later(generation)  # cancelled: a task of its own sees to it
            raise
        if mine and not await self._commit_held_in_turn(turn, generation):
            self._commit_held_later(generation)

    async def _commit_held_in_turn(self, turn: _Turn, generation: int) -> bool:
        """Under the turn just taken: commit the held group *generation*, release the turn.

        Returns:
            False when it could not (the writer was in use from another event loop).
        """
        stats, taken = self.write_turn_stats, time.perf_counter()
        stats.acquired += 1
        turn.owner = asyncio.current_task()
        try:
            assert self._held is not None
            if self._held.generation != generation:
                return True  # committed meanwhile
            if not self._writer_taken.acquire(blocking=False):
                return False
            try:
                try:
                    writer = await pooled_connection(await self._the_writer())
                except Exception as exc:  # no writer to be had: they fail, nothing written
                    self._held.fail(exc)
                    return True
                await commit_held(writer.dbapi_connection, self._held)
            finally:
                self._writer_taken.release()
            return True
        finally:
            turn.owner = None
            turn.release()
            stats.held_seconds += time.perf_counter() - taken

    def _commit_held_later(self, generation: int) -> None:
        flush = asyncio.create_task(self._commit_held(generation))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _commit_held(self, generation: int) -> None:
        """`_see_committed` without a place in line: the turn taken like any other.

        For a group whose first member's caller was cancelled (in a task of its
        own), and for one that `dispose` finds.
        """
        held = self._held
        assert held is not None
        while held.generation == generation:
            turn = self._turn()
            await turn.acquire()
            if not await self._commit_held_in_turn(turn, generation):
                await asyncio.sleep(0.001)

    @asynccontextmanager
    async def _on_the_writer(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction on the writer connection (held: `_writer_taken`)."""
        writer = await self._the_writer()
        try:
            async with _committed(
                self.sessions(bind=writer, info={_HELD: self._held}), connect=self._begins_lazily
            ) as session:
                yield session
        except BaseException:
            # Back to the pool, whose reset rolls back whatever is still open.
            disposed, self._writer = self._writer is not writer, None
            with contextlib.suppress(Exception):
                await self._let_go(writer, disposed=disposed)
            raise
        if self._writer is not writer:
            await self._let_go(writer, disposed=True)

    async def _the_writer(self) -> AsyncConnection:
        """The writer connection, connected if it is not (held: `_writer_taken`)."""
        writer = self._writer
        if writer is None or writer.closed or writer.invalidated:
            writer = self._writer = await self.engine.connect()
            # Used by one transaction at a time, under the turn: its commits run on the
            # loop's thread while other transactions wait for the turn, and some are held
            # to commit together. (Weakly: the module's registry must not keep this
            # Database alive.)
            wanted = weakref.WeakMethod(self._turn_wanted)
            commit_here(
                (await pooled_connection(writer)).dbapi_connection,
                busy_timeout_ms=self._busy_timeout_ms,
                when=lambda: (method := wanted()) is not None and method(),
                held=self._held,
            )
        return writer

    @staticmethod
    async def _let_go(writer: AsyncConnection, *, disposed: bool) -> None:
        if not writer.closed and not writer.invalidated:  # the pool's again: no longer ours alone
            commit_here((await pooled_connection(writer)).dbapi_connection, busy_timeout_ms=None)
        if disposed:  # its pool is gone (`dispose`): closed for good, not checked in to it
            await writer.invalidate()
        await writer.close()

    @asynccontextmanager
    async def statement_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement on its driver (`seawall.db.sqlite_statement`).

        On SQLite up to two are kept aside between statements instead of going back to
        the pool: a checkout and a check-in cost the event loop about 60 µs, twice a
        statement's own hop to aiosqlite's thread, and the outbox relay sends one
        statement per round (docs/BENCHMARKS.md, issue #5). One whose statement failed
        goes back to the pool, which resets it.
        """
        if self._write_locks is None:
            async with self.engine.connect() as pooled:
                yield pooled
            return
        with self._kept_lock:
            kept = self._kept.pop() if self._kept else None
            disposals = self._disposals
        if kept is None or kept.closed or kept.invalidated:
            connection = await self.engine.connect()
        else:
            connection = kept
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(Exception):
                await self._let_go(connection, disposed=disposals != self._disposals)
            raise
        with self._kept_lock:
            keep = disposals == self._disposals and len(self._kept) < _KEPT
            if keep:
                self._kept.append(connection)
        if not keep:
            await self._let_go(connection, disposed=disposals != self._disposals)

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """On SQLite, wait for this process's turn at the write lock (see `transaction`).

        For writes that do not go through `transaction` (`sqlite_statement`). Nothing
        to wait for on PostgreSQL.

        Raises:
            sqlalchemy.exc.OperationalError: on SQLite, the turn did not come within
                the database's timeout.
        """
        if self._write_locks is None:
            yield
            return
        turn = self._turn()
        if turn.owner is asyncio.current_task():
            yield  # nested in a transaction of this task: SQLite itself decides, as before
            return
        stats = self.write_turn_stats
        asked = time.perf_counter()
        try:
            if not turn.held:  # free: taken at once, no wait to time (a timeout costs 8 µs)
                await turn.acquire()
            else:
                # Not `asyncio.wait_for`: on Python 3.11 it runs the acquire in a task of
                # its own, so even a free lock cost two turns of the event loop.
                turn.waiting += 1
                try:
                    async with asyncio.timeout(self.timeout):
                        await turn.acquire()
                finally:
                    turn.waiting -= 1
        except TimeoutError as exc:
            stats.timeouts += 1
            stats.waited_seconds += time.perf_counter() - asked
            # What SQLite's own busy timeout raises, so callers handle both alike.
            locked = sqlite3.OperationalError("database is locked (by this process)")
            raise OperationalError("BEGIN IMMEDIATE", None, locked) from exc
        taken = time.perf_counter()
        stats.acquired += 1
        stats.waited_seconds += taken - asked
        turn.owner = asyncio.current_task()
        try:
            yield
        finally:
            turn.owner = None
            turn.release()
            stats.held_seconds += time.perf_counter() - taken

    def _turn_wanted(self) -> bool:
        """Whether other transactions of this event loop wait for the write turn now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: nobody of ours waits
            return False
        last = self._last_turn
        if last is not None and last[0]() is loop:
            return last[1].waiting > 0
        turn = self._write_locks.get(loop) if self._write_locks is not None else None
        return turn is not None and turn.waiting > 0

    def _turn(self) -> _Turn:
        # One per event loop: its futures belong to the loop they wait in. The last one
        # is kept at hand: a weak dictionary's lookup makes a weak reference each time
        # (570 ns a lookup, 260 with the last one at hand), twice a transaction.
        loop = asyncio.get_running_loop()
        last = self._last_turn
        if last is not None and last[0]() is loop:
            return last[1]
        assert self._write_locks is not None
        turn = self._write_locks.get(loop)
        if turn is None:
            turn = self._write_locks[loop] = _Turn()
        self._last_turn = (weakref.ref(loop), turn)
        return turn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """Yield a session for reads only.

        On SQLite its transaction starts with a plain (deferred) ``BEGIN`` instead of
        ``BEGIN IMMEDIATE``, so pollers and reports do not take the write lock and
        never make a writer wait. Do not write through it.
        """
        async with self.sessions() as session:
            await session.connection(execution_options={_READ_ONLY: True})
            yield session

    async def ping(self, *, timeout: float = 2.0) -> None:
        """Run ``SELECT 1`` (on SQLite as a read, which never waits for the write lock).

        Raises:
            DatabaseError: the database did not answer within *timeout* seconds.
        """
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execution_options(**{_READ_ONLY: True})
                await conn.execute(sa.text("SELECT 1"))
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            raise DatabaseError(
                f"database is unreachable ({type(exc).__name__}); check SEAWALL_DATABASE_URL"
            ) from exc

    async def dispose(self) -> None:
        """Close every pooled connection, and SQLite's writer and kept connections.

        One in use closes when its transaction or statement ends. Transactions held
        for a group commit (`HeldCommits`) are committed first.
        """
        running = asyncio.get_running_loop()
        if flushes := [flush for flush in self._flushes if flush.get_loop() is running]:
            await asyncio.wait(flushes, timeout=self.timeout)
        if self._held is not None and len(self._held):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._commit_held(self._held.generation)
        with self._kept_lock:
            kept, self._kept = self._kept, []
            self._disposals += 1
        for connection in kept:
            with contextlib.suppress(Exception):
                await connection.close()
        writer, self._writer = self._writer, None
        if writer is not None and self._writer_taken.acquire(blocking=False):
            try:  # else the transaction using it closes it when it ends
                with contextlib.suppress(Exception):
                    await writer.close()
            finally:
                self._writer_taken.release()
        await self.engine.dispose()


def _check_connections_at_checkout(engine: AsyncEngine) -> None:
    """Replace a pooled connection the server closed before handing it out.

    Instead of ``pool_pre_ping``, which costs three round trips (``BEGIN``,
    ``;``, ``ROLLBACK``) at every checkout: about a third of the CPU of a
    one-row transaction here, and of every consumer's delivery. A server that
    restarts or ends an idle session closes the socket, asyncpg sees it, and
    the pool connects anew. A connection lost without a word fails its first
    statement instead, as a disconnect: SQLAlchemy then discards the pool.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def sqlite_error(statement: str, exc: sqlite3.Error, dialect: Dialect) -> StatementError:
    """The SQLAlchemy error a session would raise for the driver's *exc* (pure).

    For statements sent to the sqlite3/aiosqlite connection directly. The statement
    is kept, never its parameters (they hold request bodies).
    """
    return DBAPIError.instance(
        statement, None, exc, sqlite3.Error, hide_parameters=True, dialect=dialect
    )


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            # FULL, not WAL's usual NORMAL: a 2xx promises the write survives a power cut.
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={busy_timeout_ms}",
        ):
            cursor.execute(pragma)
        cursor.close()

    # Each call into aiosqlite is a hop to its thread and back. A one-event write
    # transaction took eight; these two listeners took three of them away, and the
    # one-hop cursor (`_aiosqlite`) three more. Two are left: the statement, with the
    # `BEGIN` this listener leaves to it, and `COMMIT`.

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        statement = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        if defer_begin(conn.connection.dbapi_connection, statement):
            return  # sent by the transaction's first statement, in its hop
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            await_(driver.execute_fetchall(statement))  # one hop
        except sqlite3.Error as exc:
            raise sqlite_error(statement, exc, conn.dialect) from exc

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        # The pool would roll back every connection it gets back, even after a
        # commit; aiosqlite hops to its thread for that too.
        forget_begin(dbapi_connection)  # a transaction that never began leaves nothing open
        if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
            return
        try:
            still_open = dbapi_connection.driver_connection.in_transaction
        except ValueError:  # aiosqlite's "no active connection": closed, nothing to reset
            return
        if still_open:
            dbapi_connection.rollback()
