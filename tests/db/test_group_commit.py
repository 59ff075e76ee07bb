"""Group commit on SQLite's writer: transactions whose writes all rode along, held to
commit with others while other transactions wait for the write turn."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from seawall.db import Database, insert_rows, migrate
from seawall.db._database import _give_up, _Turn
from seawall.messaging import Event, Outbox, _wakeup
from tests.db.test_database import _numbers, _waiting_for_the_turn, _writer_db

T = sa.table("t", sa.column("n"))


async def _stage(database: Database, *numbers: int) -> None:
    """A transaction whose only writes ride along with its commit."""
    async with database.transaction() as session:
        await insert_rows(session, T, [{"n": n} for n in numbers], along=True)


async def _started(awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
    """*awaitable* in a task that has run up to its first wait (for the write turn, here)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def _held_behind(database: Database, n: int, then: Awaitable[Any]) -> None:
    """Stage *n*, and commit while *then* (started here) waits for the turn: held."""
    async with database.transaction() as session:
        await insert_rows(session, T, [{"n": n}], along=True)
        await _started(then)


class _Blocker:
    """A transaction with a statement of its own that holds the turn until `go`."""

    def __init__(self, database: Database, n: int) -> None:
        self.database, self.n = database, n
        self.inside, self.go, self.done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.seen: list[int] = []

    async def __call__(self) -> None:
        async with self.database.transaction() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": self.n})
            self.seen = list((await session.execute(sa.text("SELECT n FROM t"))).scalars())
            self.inside.set()
            await self.go.wait()
        self.done.set()


async def test_a_transaction_whose_writes_rode_along_is_held_then_commits_with_the_next(
    tmp_path: Path, hops: list[str]
) -> None:
    database = await _writer_db(tmp_path)
    try:
        turns_before = database.write_turn_stats.snapshot()
        hops.clear()
        async with database.transaction() as session:
            await insert_rows(session, T, [{"n": 1}], along=True)
            second = await _waiting_for_the_turn(database, 2)
        # Held while the second waited; the second, nobody behind it, committed both:
        # one BEGIN, one COMMIT, one hop.
        await second
        assert hops == ["_commit_batches"]
        assert await _numbers(database) == [1, 2]
        used = database.write_turn_stats.since(turns_before)
        assert (used.held_commits, used.acquired) == (1, 2)  # no turn of its own to commit
    finally:
        await database.dispose()


async def test_a_held_group_is_committed_in_its_place_in_line_when_no_one_commits_it(
    tmp_path: Path, hops: list[str]
) -> None:
    database = await _writer_db(tmp_path)
    blocker = _Blocker(database, 9)
    try:
        hops.clear()
        first = asyncio.create_task(_held_behind(database, 1, blocker()))
        await blocker.inside.wait()
        assert blocker.seen == [9]  # the held row is not written yet: nobody sees it
        assert not first.done()
        blocker.go.set()
        await first
        # The other transaction had a statement: it committed alone; then the first
        # member's place in line came, and committed the group.
        assert hops == ["_run", "_run", "commit", "_commit_batches"]
        assert await _numbers(database) == [1, 9]
    finally:
        await database.dispose()


async def test_a_held_transaction_whose_write_is_refused_fails_alone(tmp_path: Path) -> None:
    database = await _writer_db(tmp_path)
    try:
        await _stage(database, 5)
        with pytest.raises(sa.exc.IntegrityError, match="sent along"):
            async with database.transaction() as session:
                # Two rows, the second refused: the first must go too.
                await insert_rows(session, T, [{"n": 8}, {"n": 5}], along=True)
                second = await _waiting_for_the_turn(database, 6)
        await second  # committed all the same
        assert await _numbers(database) == [5, 6]
        # The one that commits the group has its own write refused: the held one stays.
        async with database.transaction() as session:
            await insert_rows(session, T, [{"n": 7}], along=True)
            refused = await _waiting_for_the_turn(database, 6)
        with pytest.raises(sa.exc.IntegrityError, match="sent along"):
            await refused
        assert await _numbers(database) == [5, 6, 7]
        assert database.write_turn_stats.held_commits == 2
    finally:
        await database.dispose()


async def test_when_the_group_cannot_begin_every_member_fails_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/writer.db", timeout=0.3)
    async with database.transaction() as session:
        await session.execute(sa.text("CREATE TABLE t (n INTEGER UNIQUE)"))
    other = sqlite3.connect(tmp_path / "writer.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            async with database.transaction() as session:
                await insert_rows(session, T, [{"n": 1}], along=True)
                second = await _waiting_for_the_turn(database, 2)
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            await second
        other.execute("ROLLBACK")
        assert await _numbers(database) == []
        await _stage(database, 3)  # and the writer works on
        assert await _numbers(database) == [3]
    finally:
        other.close()
        await database.dispose()


async def test_a_held_group_commits_when_its_first_member_s_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    database = await _writer_db(tmp_path)
    blocker = _Blocker(database, 9)
    cancelled = asyncio.create_task(_held_behind(database, 1, blocker()))
    await blocker.inside.wait()
    await asyncio.sleep(0)  # the first member now waits for its place in line
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    blocker.go.set()
    await database.dispose()  # sees the held group committed first
    check = sqlite3.connect(tmp_path / "writer.db")
    try:
        assert sorted(n for (n,) in check.execute("SELECT n FROM t")) == [1, 9]
    finally:
        check.close()


async def test_a_relay_is_woken_when_a_held_outbox_write_commits_not_before(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/outbox.db")
    await migrate(database)
    async with database.transaction() as session:
        await session.execute(sa.text("CREATE TABLE t (n INTEGER UNIQUE)"))
    woken = asyncio.Event()
    _wakeup.register(woken)
    blocker = _Blocker(database, 9)

    async def add_event() -> None:
        async with database.transaction() as session:
            await Outbox().add(
                session, Event.create(type="x.happened", source="test", subject="x-1", data={})
            )
            await _started(blocker())

    try:
        adding = asyncio.create_task(add_event())
        await asyncio.wait_for(blocker.inside.wait(), 5)
        await asyncio.sleep(0.05)
        assert not woken.is_set()  # held: a relay woken now would find nothing
        blocker.go.set()
        await adding
        await asyncio.wait_for(woken.wait(), 5)
        async with database.reading() as session:
            assert await session.scalar(sa.text("SELECT count(*) FROM outbox")) == 1
    finally:
        _wakeup.unregister(woken)
        await database.dispose()


async def test_the_write_turn_goes_first_come_first_served() -> None:
    turn = _Turn()
    await turn.acquire()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await turn.acquire()
        order.append(name)
        turn.release()

    a = await _started(waiter("a"))
    place = turn.place()  # a held group's place: given up, it costs no turn
    b = await _started(waiter("b"))
    c = await _started(waiter("c"))
    c.cancel()
    _give_up(place)
    turn.release()
    await asyncio.gather(a, b)
    with pytest.raises(asyncio.CancelledError):
        await c
    assert order == ["a", "b"]
    assert not turn.held
    assert not turn.line


async def test_a_wait_cancelled_as_the_turn_came_passes_the_turn_on() -> None:
    turn = _Turn()
    await turn.acquire()
    first = await _started(turn.acquire())
    second = await _started(turn.acquire())
    turn.release()  # the turn is first's now, but it is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # passed on to it
    assert turn.held
    turn.release()
    assert not turn.held
    free = turn.place()
    assert free.done()
    assert free.result() is True  # a free turn is taken at once


async def test_a_held_group_with_no_writer_to_be_had_fails_and_never_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = await _writer_db(tmp_path)
    blocker = _Blocker(database, 9)
    original, asked = database._the_writer, []

    async def gone_the_third_time() -> Any:
        asked.append(1)
        if len(asked) == 3:  # the first member's place in line, after both members
            raise OSError("the disk went away")  # as connecting anew would
        return await original()

    monkeypatch.setattr(database, "_the_writer", gone_the_third_time)
    second: asyncio.Future[asyncio.Task[None]] = asyncio.get_running_loop().create_future()

    async def first() -> None:
        async with database.transaction() as session:
            await insert_rows(session, T, [{"n": 1}], along=True)
            second.set_result(await _started(_held_behind(database, 2, blocker())))

    try:
        held = asyncio.create_task(first())
        for member in (held, await asyncio.wait_for(second, 5)):
            with pytest.raises(OSError, match="the disk went away"):
                await asyncio.wait_for(member, 5)
        blocker.go.set()
        await asyncio.wait_for(blocker.done.wait(), 5)
        monkeypatch.undo()
        assert await _numbers(database) == [9]
        assert database.write_turn_stats.held_commits == 2
    finally:
        await database.dispose()
