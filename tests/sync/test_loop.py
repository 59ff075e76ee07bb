"""`PagedSync` and `Cursors` on both databases: one page, one transaction, its cursor with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, case_activity
from seawall.sync import FULL_SUFFIX, CursorMoved, Cursors, Page, PagedSync, SyncProgress


class ListFeed:
    """A change feed over a list: the cursor is the count of items read."""

    def __init__(self, items: Sequence[str], *, page_size: int = 3) -> None:
        self.items = list(items)
        self.page_size = page_size
        self.fetched: list[str | None] = []

    async def fetch(self, cursor: str | None) -> Page[str]:
        self.fetched.append(cursor)
        start = int(cursor or 0)
        chunk = self.items[start : start + self.page_size]
        end = start + len(chunk)
        return Page(chunk, str(end), end < len(self.items))


async def write_items(session: AsyncSession, page: Page[str]) -> int:
    now = datetime.now(UTC)
    await session.execute(
        case_activity.insert(),
        [
            {
                "case_id": item,
                "event_id": item,
                "event_type": "item.synced",
                "summary": item,
                "occurred_at": now,
                "recorded_at": now,
            }
            for item in page.items
        ],
    )
    return len(page.items)


async def written(database: Database) -> list[str]:
    async with database.reading() as session:
        rows = await session.execute(
            sa.select(case_activity.c.case_id).order_by(case_activity.c.id)
        )
        return [str(row[0]) for row in rows]


async def test_a_run_applies_every_page_and_stores_the_last_cursor(database: Database) -> None:
    feed = ListFeed([f"i{n}" for n in range(8)])
    seen: list[SyncProgress] = []
    sync = PagedSync(
        "toy", database=database, fetch=feed.fetch, apply=write_items, on_page=seen.append
    )

    report = await sync.run()

    assert await written(database) == [f"i{n}" for n in range(8)]
    assert (report.pages, report.items, report.applied, report.cursor) == (3, 8, 8, "8")
    assert [progress.cursor for progress in seen] == ["3", "6", "8"]
    assert await sync.cursor() == "8"


async def test_a_second_run_reads_on_from_the_stored_cursor(database: Database) -> None:
    feed = ListFeed([f"i{n}" for n in range(4)])
    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=write_items)
    await sync.run()
    feed.items += ["i4", "i5"]

    report = await sync.run()

    assert report.started_from == "4"
    assert await written(database) == [f"i{n}" for n in range(6)]


async def test_a_failing_page_rolls_back_whole_and_the_next_run_resumes_at_it(
    database: Database,
) -> None:
    feed = ListFeed([f"i{n}" for n in range(9)])
    calls = 0

    async def crash_on_third_page(session: AsyncSession, page: Page[str]) -> int:
        nonlocal calls
        calls += 1
        applied = await write_items(session, page)
        if calls == 3:
            raise RuntimeError("the process dies mid-page")
        return applied

    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=crash_on_third_page)

    with pytest.raises(RuntimeError):
        await sync.run()
    after_crash = await written(database)
    resumed = await PagedSync("toy", database=database, fetch=feed.fetch, apply=write_items).run()

    assert after_crash == [f"i{n}" for n in range(6)]
    assert resumed.started_from == "6"
    assert await written(database) == [f"i{n}" for n in range(9)]


async def test_a_cursor_moved_by_another_runner_rolls_this_page_back(database: Database) -> None:
    feed = ListFeed([f"i{n}" for n in range(6)])

    async def other_runner_first(session: AsyncSession, page: Page[str]) -> int:
        async with database.transaction() as other:
            await Cursors().advance(other, "toy", expected=None, new="3")
        return await write_items(session, page)

    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=other_runner_first)

    with pytest.raises(CursorMoved) as raised:
        await sync.run()

    assert raised.value.name == "toy"
    assert await written(database) == []
    assert await sync.cursor() == "3"


async def test_a_full_resync_resumes_then_hands_its_end_to_the_regular_cursor(
    database: Database,
) -> None:
    feed = ListFeed([f"i{n}" for n in range(7)])
    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=write_items)
    await sync.run()
    feed.fetched.clear()

    first = await sync.run(full=True, max_pages=1)
    full_cursor = await sync.cursor(full=True)
    rest = await sync.run(full=True)

    assert first.name == "toy" + FULL_SUFFIX
    assert full_cursor == "3"
    assert rest.started_from == "3"
    assert feed.fetched == [None, "3", "6"]
    assert await sync.cursor(full=True) is None
    assert await sync.cursor() == "7"


async def test_restart_forgets_a_full_resync_in_progress(database: Database) -> None:
    feed = ListFeed([f"i{n}" for n in range(7)])
    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=write_items)
    await sync.run(full=True, max_pages=1)

    report = await sync.run(full=True, restart=True, max_pages=1)

    assert report.started_from is None


async def test_a_run_with_nothing_new_keeps_the_cursor(database: Database) -> None:
    feed = ListFeed(["i0", "i1"])
    sync = PagedSync("toy", database=database, fetch=feed.fetch, apply=write_items)
    await sync.run()

    report = await sync.run()

    assert (report.pages, report.items, report.applied) == (1, 0, 0)
    assert await sync.cursor() == "2"


async def test_cursor_compare_and_set(database: Database) -> None:
    cursors = Cursors()

    async with database.transaction() as session:
        first = await cursors.advance(session, "feed", expected=None, new="a")
        again = await cursors.advance(session, "feed", expected=None, new="b")
        stale = await cursors.advance(session, "feed", expected="x", new="b")
        moved = await cursors.advance(session, "feed", expected="a", new="b")

    assert (first, again, stale, moved) == (True, False, False, True)
    async with database.reading() as session:
        assert await cursors.get(session, "feed") == "b"


@pytest.mark.parametrize("name", ["", "n" * 101])
def test_names_out_of_range_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        PagedSync(name, database=None, fetch=ListFeed([]).fetch, apply=write_items)  # type: ignore[arg-type]


async def test_cursors_longer_than_the_column_are_refused(database: Database) -> None:
    async with database.transaction() as session:
        with pytest.raises(ValueError, match="at most"):
            await Cursors().advance(session, "feed", expected=None, new="c" * 501)
