"""`WebhookLog`: the stored deliveries, listed, shown and replayed by id or by filter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from seawall.db import Database, webhook_events
from seawall.messaging import Outbox
from seawall.webhooks._process import replay_event

__all__ = ["STATUSES", "StoredWebhook", "WebhookFilter", "WebhookLog"]

STATUSES: Final = ("received", "processed", "ignored", "parked", "failed")
"""Where a stored delivery stands."""
_MAX_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """Which stored deliveries to look at; every field set must match.

    Attributes:
        provider: the provider's configured name.
        event_type: the type, ``*`` matching any run of characters (``charge.*``).
        status: one of `STATUSES`.
        since: received at or after.
        until: received before.
    """

    provider: str | None = None
    event_type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")

    @property
    def empty(self) -> bool:
        """Whether it selects everything."""
        return all(getattr(self, name) is None for name in self.__slots__)

    def where(self) -> list[Any]:
        """The SQL conditions."""
        table = webhook_events.c
        conditions: list[Any] = []
        if self.provider is not None:
            conditions.append(table.provider == self.provider)
        if self.event_type is not None:
            escaped = self.event_type.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(table.event_type.like(escaped.replace("*", "%"), escape="\\"))
        if self.status is not None:
            conditions.append(table.status == self.status)
        if self.since is not None:
            conditions.append(table.received_at >= self.since)
        if self.until is not None:
            conditions.append(table.received_at < self.until)
        return conditions


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """One stored delivery and where its processing stands."""

    id: str
    provider: str
    delivery_id: str | None
    event_type: str | None
    status: str
    attempts: int
    last_error: str | None
    correlation_id: str | None
    received_at: datetime
    processed_at: datetime | None
    next_attempt_at: datetime | None
    waiting_for: str | None
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts, without the body and headers."""
        return {
            "id": self.id,
            "provider": self.provider,
            "delivery_id": self.delivery_id,
            "type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "correlation_id": self.correlation_id,
            "received_at": self.received_at.isoformat(),
            "processed_at": self.processed_at.isoformat() if self.processed_at else None,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "waiting_for": self.waiting_for,
        }

    def detail(self) -> dict[str, Any]:
        """`summary` plus the headers and the body (parsed when it is JSON)."""
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body.decode("utf-8", "replace")
        return {**self.summary(), "headers": self.headers, "body": body}


def _stored(row: Any) -> StoredWebhook:
    return StoredWebhook(
        id=row["id"],
        provider=row["provider"],
        delivery_id=row["delivery_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        correlation_id=row["correlation_id"],
        received_at=row["received_at"],
        processed_at=row["processed_at"],
        next_attempt_at=row["next_attempt_at"],
        waiting_for=row["waiting_for"],
        headers=dict(row["headers"] or {}),
        body=bytes(row["body"]),
    )


class WebhookLog:
    """The event log of stored webhook deliveries.

    Args:
        database: where ``webhook_events`` is.
        outbox: the outbox writer for replays.
    """

    def __init__(self, database: Database, *, outbox: Outbox | None = None) -> None:
        self.database = database
        self._outbox = outbox or Outbox()

    async def list(
        self, selection: WebhookFilter | None = None, *, limit: int = 50
    ) -> list[StoredWebhook]:
        """The deliveries *selection* picks, newest first, at most *limit*."""
        if not 1 <= limit <= _MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {_MAX_LIMIT}")
        query = (
            sa.select(webhook_events)
            .where(*(selection or WebhookFilter()).where())
            .order_by(webhook_events.c.received_at.desc(), webhook_events.c.id)
            .limit(limit)
        )
        async with self.database.reading() as session:
            rows = (await session.execute(query)).mappings().all()
        return [_stored(row) for row in rows]

    async def get(self, webhook_id: str) -> StoredWebhook | None:
        """One delivery by id, or None."""
        async with self.database.reading() as session:
            row = (
                (
                    await session.execute(
                        sa.select(webhook_events).where(webhook_events.c.id == webhook_id)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _stored(row)

    async def replay(
        self,
        ids: Sequence[str] | None = None,
        selection: WebhookFilter | None = None,
        *,
        force: bool = False,
        limit: int = 1000,
    ) -> int:
        """Run processing again for the deliveries named or selected (never verification).

        One ``webhook.replayed`` outbox event per delivery, all in one
        transaction. Without *force*, the processor skips a delivery already
        processed or ignored, so nothing is done twice by accident.

        Args:
            ids: the deliveries to replay.
            selection: or every delivery this filter picks (at most *limit*).
            force: run the handlers even for a delivery already processed.
            limit: the most deliveries one call replays.

        Returns:
            How many replays were queued.

        Raises:
            ValueError: neither ids nor a non-empty selection (replaying
                everything must be asked for with an explicit filter).
        """
        if not ids and (selection is None or selection.empty):
            raise ValueError("name deliveries, or give a filter")
        query = sa.select(webhook_events.c.id, webhook_events.c.provider)
        if ids:
            query = query.where(webhook_events.c.id.in_(list(ids)))
        if selection is not None:
            query = query.where(*selection.where())
        async with self.database.transaction() as session:
            rows = (await session.execute(query.limit(limit))).all()
            for webhook_id, provider in rows:
                await self._outbox.add(session, replay_event(webhook_id, provider, force=force))
        return len(rows)
