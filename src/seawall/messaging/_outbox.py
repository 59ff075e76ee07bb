"""`Outbox`: write events in the same transaction as the change that caused them."""

from __future__ import annotations

from datetime import UTC, datetime

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
    """

    def __init__(self, table: sa.Table = outbox_table) -> None:
        self._table = table

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
        aggregate = aggregate_id or event.subject
        if not aggregate:
            raise ValueError("an outbox event needs a subject or an explicit aggregate_id")
        await session.execute(
            self._table.insert().values(
                event_id=event.id,
                event_type=event.type,
                source=event.source,
                subject=event.subject,
                aggregate_type=aggregate_type or event.aggregate_type,
                aggregate_id=aggregate,
                payload=event.data,
                correlation_id=event.correlationid,
                causation_id=event.causationid,
                occurred_at=event.time,
                created_at=datetime.now(UTC),
                attempts=0,
            )
        )
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
