"""`Outbox`: write events in the same transaction as the change that caused them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import outbox as outbox_table
from seawall.messaging import _wakeup
from seawall.messaging._event import Event


class Outbox:
    """The transactional outbox.

    `add` inserts the event into the ``outbox`` table through the caller's
    session; it commits or rolls back with the caller's transaction, which is
    what makes "the case exists" and "its event will be published" one fact.
    `add_all` does the same for many events at once; `row` is the row both write.
    """

    def __init__(self, table: sa.Table = outbox_table) -> None:
        self._table = table
        # Built once: an executemany reuses the compiled statement from the cache.
        self._insert = table.insert()

    def row(
        self,
        event: Event,
        *,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """The ``outbox`` row that stages *event*: the one place such a row is built.

        Args:
            event: the envelope to publish.
            aggregate_type: defaults to the event type's first segment.
            aggregate_id: defaults to the event's subject; the relay keeps the
                events of one aggregate in order.
            now: the row's ``created_at`` (defaults to now, UTC).

        Raises:
            ValueError: no aggregate id was given and the event has no subject.
        """
        aggregate = aggregate_id or event.subject
        if not aggregate:
            raise ValueError("an outbox event needs a subject or an explicit aggregate_id")
        return {
            "event_id": event.id,
            "event_type": event.type,
            "source": event.source,
            "subject": event.subject,
            "aggregate_type": aggregate_type or event.aggregate_type,
            "aggregate_id": aggregate,
            "payload": event.data,
            "correlation_id": event.correlationid,
            "causation_id": event.causationid,
            "occurred_at": event.time,
            "created_at": now or datetime.now(UTC),
            "attempts": 0,
        }

    async def add(
        self,
        session: AsyncSession,
        event: Event,
        *,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Stage *event* for publishing inside *session*'s transaction.

        Args:
            session: the caller's session, inside the transaction of the change.
            event: the envelope to publish.
            aggregate_type: defaults to the event type's first segment.
            aggregate_id: defaults to the event's subject; the relay keeps the
                events of one aggregate in order.

        Raises:
            ValueError: no aggregate id was given and the event has no subject.
        """
        row = self.row(event, aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        await session.execute(self._insert, row)
        _wakeup.mark(session.sync_session)

    async def add_all(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """Stage many events in *session*'s transaction with one ``executemany``.

        The rows are those `add` writes (each event's aggregate is its type's first
        segment and its subject); a writer that commits many changes at once, such
        as the webhook receiver's group commit, pays one round trip for them all.

        Args:
            session: the caller's session, inside the transaction of the changes.
            events: the envelopes to publish, in order.

        Raises:
            ValueError: an event has no subject; nothing is staged.
        """
        if not events:
            return
        now = datetime.now(UTC)
        rows = [self.row(event, now=now) for event in events]
        await session.execute(self._insert, rows)
        _wakeup.mark(session.sync_session)

    @staticmethod
    def envelope(row: sa.RowMapping) -> Event:
        """Rebuild the envelope of an outbox row (for relays and tools)."""
        return Event(
            id=row["event_id"],
            source=row["source"],
            type=row["event_type"],
            subject=row["subject"],
            time=row["occurred_at"],
            data=row["payload"],
            correlationid=row["correlation_id"],
            causationid=row["causation_id"],
        )
