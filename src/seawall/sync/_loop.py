"""`PagedSync`: pull a paged change feed and apply each page with its cursor in one transaction.

The loop is generic: *fetch* reads one page of a feed after a cursor, *apply*
writes a page's effects through the session it is given. Each page commits
with the cursor that follows it (`Cursors.advance`), so a process killed at any
instant resumes from the last committed page: no change is skipped and none is
applied twice. The next page is fetched while the current one is applied, so a
run costs about the slower of the two, not their sum.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database
from seawall.errors import SeawallError
from seawall.resilience import RateLimit
from seawall.sync._cursors import Cursors

__all__ = [
    "FULL_SUFFIX",
    "ApplyPage",
    "CursorMoved",
    "FetchPage",
    "Page",
    "PagedSync",
    "SyncProgress",
]

T = TypeVar("T")

log = structlog.get_logger("seawall.sync")

FULL_SUFFIX = ":full"
"""A full resync keeps its own cursor, ``<name>:full``, until it reaches the end."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a change feed.

    Attributes:
        items: the changes, oldest first.
        next_cursor: where the next page starts; stored once this one is applied.
        has_more: whether more changes are waiting now.
    """

    items: Sequence[T]
    next_cursor: str
    has_more: bool


FetchPage = Callable[[str | None], Awaitable[Page[T]]]
"""``async def fetch(cursor) -> Page``: the page after *cursor* (None: from the start)."""

ApplyPage = Callable[[AsyncSession, Page[T]], Awaitable[int]]
"""``async def apply(session, page) -> int``: write the page's effects; how many changes wrote."""


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a run stands; passed to ``on_page`` after each committed page and returned at the end.

    Attributes:
        name: the cursor's name (``crm``, or ``crm:full`` during a full resync).
        started_from: the cursor the run started at (None: the start of the feed).
        cursor: the cursor committed last.
        pages: pages committed by this run.
        items: changes read by this run.
        applied: changes that wrote something (the rest were unchanged or stale).
        has_more: whether the feed said more changes were waiting.
    """

    name: str
    started_from: str | None
    cursor: str | None
    pages: int = 0
    items: int = 0
    applied: int = 0
    has_more: bool = True


class CursorMoved(SeawallError):  # noqa: N818 - leaves name the condition
    """Another runner advanced the cursor while this one applied a page.

    This run's page was rolled back, so nothing was applied twice; the next
    run starts from the cursor the other runner stored.

    Attributes:
        name: the cursor's name.
        expected: the cursor this run had read.
    """

    def __init__(self, *, name: str, expected: str | None) -> None:
        self.name = name
        self.expected = expected
        super().__init__(
            f"another sync advanced cursor {name!r} while this one applied a page; "
            "its page was rolled back, run the sync again to continue from there"
        )


class PagedSync(Generic[T]):
    """Pull a paged change feed into the database, one transaction per page.

    Args:
        name: the cursor's name (one per feed), 1 to 100 characters.
        database: where the cursor and the page's effects are written.
        fetch: reads the page after a cursor.
        apply: writes a page's effects through the session it is given.
        cursors: the cursor store (``sync_cursors`` by default).
        rate_limit: taken once before each page is fetched, if given (for a
            full resync that must leave the source's quota to others).
        on_page: called after each committed page with the run's `SyncProgress`.
    """

    def __init__(
        self,
        name: str,
        *,
        database: Database,
        fetch: FetchPage[T],
        apply: ApplyPage[T],
        cursors: Cursors | None = None,
        rate_limit: RateLimit | None = None,
        on_page: Callable[[SyncProgress], object] | None = None,
    ) -> None:
        if not name or len(name) > 100 - len(FULL_SUFFIX):
            raise ValueError(f"a sync name must be 1 to {100 - len(FULL_SUFFIX)} characters")
        self.name = name
        self.database = database
        self._fetch = fetch
        self._apply = apply
        self.cursors = cursors or Cursors()
        self.rate_limit = rate_limit
        self.on_page = on_page

    def __repr__(self) -> str:
        return f"PagedSync({self.name!r})"

    async def cursor(self, *, full: bool = False) -> str | None:
        """The stored cursor (of the full resync in progress when *full*)."""
        async with self.database.reading() as session:
            return await self.cursors.get(session, self._cursor_name(full))

    async def run(
        self, *, full: bool = False, restart: bool = False, max_pages: int | None = None
    ) -> SyncProgress:
        """Read and apply pages until the feed has no more (or *max_pages* were committed).

        Args:
            full: read the whole feed from its start under the cursor
                ``<name>:full``; a full resync that stopped resumes where it
                stopped, and when it reaches the end the regular cursor is set
                to its end in the same transaction.
            restart: with *full*, forget a full resync in progress and start over.
            max_pages: stop after this many committed pages.

        Returns:
            What the run did.

        Raises:
            CursorMoved: another runner advanced the cursor; this page rolled back.
            Exception: what *fetch* or *apply* raised; the pages committed before stay.
        """
        if max_pages is not None and max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        name = self._cursor_name(full)
        if full and restart:
            async with self.database.transaction() as session:
                await self.cursors.reset(session, name)
        start = await self.cursor(full=full)
        progress = SyncProgress(name=name, started_from=start, cursor=start)
        log.info("sync_started", sync=name, cursor=start)
        pending: asyncio.Task[Page[T]] | None = asyncio.create_task(self._next(start))
        try:
            while pending is not None:
                page = await pending
                pending = None
                last = not page.has_more or (
                    max_pages is not None and progress.pages + 1 >= max_pages
                )
                if not last:
                    # Read ahead: the next page travels while this one is written.
                    pending = asyncio.create_task(self._next(page.next_cursor))
                progress = await self._commit(page, progress, full=full)
                if self.on_page is not None:
                    self.on_page(progress)
                if not page.has_more and full:
                    log.info("sync_full_resync_finished", sync=self.name, cursor=progress.cursor)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
        log.info(
            "sync_finished",
            sync=name,
            pages=progress.pages,
            items=progress.items,
            applied=progress.applied,
            cursor=progress.cursor,
        )
        return progress

    def _cursor_name(self, full: bool) -> str:
        return self.name + FULL_SUFFIX if full else self.name

    async def _next(self, cursor: str | None) -> Page[T]:
        if self.rate_limit is not None:
            await self.rate_limit.acquire(self.name)
        return await self._fetch(cursor)

    async def _commit(self, page: Page[T], progress: SyncProgress, *, full: bool) -> SyncProgress:
        """Apply *page* and advance the cursor in one transaction; the progress after it."""
        applied = 0
        finished_full = full and not page.has_more
        if page.items or page.next_cursor != progress.cursor or finished_full:
            async with self.database.transaction() as session:
                if page.items:
                    applied = await self._apply(session, page)
                moved = await self.cursors.advance(
                    session, progress.name, expected=progress.cursor, new=page.next_cursor
                )
                if not moved:
                    raise CursorMoved(name=progress.name, expected=progress.cursor)
                if finished_full:
                    # The full read reached the feed's end: the regular cursor goes on from here.
                    await self.cursors.set(session, self.name, page.next_cursor)
                    await self.cursors.reset(session, progress.name)
        return SyncProgress(
            name=progress.name,
            started_from=progress.started_from,
            cursor=page.next_cursor,
            pages=progress.pages + 1,
            items=progress.items + len(page.items),
            applied=progress.applied + applied,
            has_more=page.has_more,
        )
