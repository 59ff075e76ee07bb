"""`Cursors`: where each sync stands in its source's change feed, stored durably.

A cursor (watermark) is an opaque string the source hands out with each page.
It is read at the start of a run and advanced with a compare-and-set inside the
transaction that applied the page, so the page and the new cursor commit
together: a crash leaves both or neither, and a second runner that advanced the
cursor first makes this one's page roll back instead of applying twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import affected_rows, insert_ignoring_conflicts, sync_cursors

__all__ = ["MAX_CURSOR_CHARS", "Cursors"]

MAX_CURSOR_CHARS = 500
"""The longest cursor stored (the column's size)."""


def _check(name: str, cursor: str | None = None) -> None:
    if not name or len(name) > 100:
        raise ValueError("a cursor name must be 1 to 100 characters")
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError(f"a cursor must be at most {MAX_CURSOR_CHARS} characters")


class Cursors:
    """Durable, named cursors in the ``sync_cursors`` table.

    Every method works in the caller's session, so a cursor moves in the same
    transaction as the changes it accounts for.

    Args:
        table: the table (``sync_cursors`` by default).
    """

    def __init__(self, table: sa.Table = sync_cursors) -> None:
        self._table = table

    async def get(self, session: AsyncSession, name: str) -> str | None:
        """The stored cursor of *name*; None when it has none (read from the start)."""
        _check(name)
        value = (
            await session.execute(sa.select(self._table.c.cursor).where(self._table.c.name == name))
        ).scalar_one_or_none()
        return None if value is None else str(value)

    async def advance(
        self, session: AsyncSession, name: str, *, expected: str | None, new: str
    ) -> bool:
        """Move *name* from *expected* to *new*, only if it still is at *expected*.

        Args:
            session: the transaction that applied what lies between the two.
            name: the cursor's name.
            expected: the cursor the caller read (None: it had none).
            new: the cursor after the applied page.

        Returns:
            False when another runner moved the cursor first: the caller must roll
            its transaction back, or the same page would be applied twice.

        Raises:
            ValueError: a name or cursor too long for the table.
        """
        _check(name, new)
        now = datetime.now(UTC)
        table = self._table
        condition: sa.ColumnElement[bool]
        if expected is None:
            result = await session.execute(
                insert_ignoring_conflicts(session, table).values(
                    name=name, cursor=new, updated_at=now
                )
            )
            if affected_rows(result) == 1:
                return True
            # A row without a cursor (reset) counts as "none" too.
            condition = table.c.cursor.is_(None)
        else:
            condition = table.c.cursor == expected
        result = await session.execute(
            table.update().where(table.c.name == name, condition).values(cursor=new, updated_at=now)
        )
        return affected_rows(result) == 1

    async def set(self, session: AsyncSession, name: str, cursor: str) -> None:
        """Store *cursor* for *name* whatever it was (the end of a full resync)."""
        _check(name, cursor)
        now = datetime.now(UTC)
        result = await session.execute(
            self._table.update()
            .where(self._table.c.name == name)
            .values(cursor=cursor, updated_at=now)
        )
        if affected_rows(result) == 0:
            await session.execute(
                self._table.insert().values(name=name, cursor=cursor, updated_at=now)
            )

    async def reset(self, session: AsyncSession, name: str) -> bool:
        """Forget *name*'s cursor (the next run reads from the start); whether it had one."""
        _check(name)
        result = await session.execute(self._table.delete().where(self._table.c.name == name))
        return affected_rows(result) > 0
