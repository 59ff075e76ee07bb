"""`Outbox`: write events in the same transaction as the change that caused them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import dialect_of, insert_rows
from seawall.db import outbox as outbox_table
from seawall.messaging import _wakeup
from seawall.messaging._event import Event


class Outbox:
    """The transactional outbox.

    `add` inserts the event into the ``outbox`` table through the caller's
    session; it commits or rolls back with the caller's transaction, which is
    what makes "the case exists" and "its event will be published" one fact.
    `add_all` does the same for many events at once; `row` is the row both write.
    A writer on the raw driver connection inserts `rows` into `table` itself and
    calls `committed` once its transaction has committed.
    """

    def __init__(self, table: sa.Table = outbox_table) -> None:
        self._table = table
        # Built once: an executemany reuses the compiled statement from the cache.
        self._insert = table.insert()

    @property
    def table(self) -> sa.Table:
        """The ``outbox`` table the events go to."""
        return self._table

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

        On SQLite the row goes to the database with the transaction's next
        statement, or with its ``COMMIT`` (`seawall.db.insert_rows` with
        ``along``): a refusal (an event id already in the outbox) is that
        statement's error, and the transaction can then no longer commit.

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
        if dialect_of(session) == "sqlite":
            # Sent with the transaction's next statement or its COMMIT: no hop of its own.
            await insert_rows(session, self._table, [row], along=True)
        else:
            await session.execute(self._insert, row)
        _wakeup.mark(session.sync_session)

    async def add_all(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """Stage many events in *session*'s transaction with one statement.

        The rows are those `add` writes (each event's aggregate is its type's first
        segment and its subject), written by `seawall.db.insert_rows` on the
        driver connection; a writer that commits many changes at once (the webhook
        receiver's group commit, a sync's page) pays one round trip for them all
        (on SQLite none of its own: they go with the next statement or the
        ``COMMIT``, as in `add`).

        Args:
            session: the caller's session, inside the transaction of the changes.
            events: the envelopes to publish, in order.

        Raises:
            ValueError: an event has no subject; nothing is staged.
        """
        if not events:
            return
        await insert_rows(session, self._table, self.rows(events), along=True)
        _wakeup.mark(session.sync_session)

    def rows(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        """The rows `add_all` writes for *events*, all created now.

        Raises:
            ValueError: an event has no subject.
        """
        now = datetime.now(UTC)
        return [self.row(event, now=now) for event in events]

    @staticmethod
    def committed() -> None:
        """Wake this process's relays: outbox rows were committed without a session.

        A session that `add` or `add_all` wrote through wakes them on its own at
        commit; a writer on the raw driver connection calls this after its commit.
        Relays in other processes hear PostgreSQL's ``NOTIFY`` either way.
        """
        _wakeup.notify()

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
