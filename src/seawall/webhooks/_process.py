"""Processing stored webhooks: handlers per provider and type, retry-and-park, replay.

A ``webhook.received`` event reaches `WebhookProcessor.process` through a
consumer and its inbox. The processor loads the stored delivery, runs the
handlers registered for its provider and type inside a savepoint, and records
the outcome on the ``webhook_events`` row in the same transaction:

- every handler returned: ``processed``; no handler: ``ignored``;
- a handler raised `AwaitingRecord` ("the record this refers to is not there
  yet"): its writes are undone and the delivery is ``parked`` until the next
  time on the schedule (short retries first, then a longer horizon), or until
  `release_waiting` names the record it waits for; past the schedule it is
  ``failed``;
- any other exception propagates: the consumer retries with backoff and
  dead-letters it in the end.

Parked deliveries come back as ``webhook.retried`` events (`release_due`,
`release_waiting`); a ``webhook.replayed`` event (`seawall.webhooks.WebhookLog.replay`)
re-runs processing (never verification) and skips a delivery already processed
unless forced.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, dialect_of, webhook_events
from seawall.errors import SeawallError, Unprocessable
from seawall.messaging import Event, Outbox
from seawall.webhooks._receive import WEBHOOK_SOURCE

__all__ = [
    "PARK_SCHEDULE",
    "AwaitingRecord",
    "WebhookEvent",
    "WebhookHandler",
    "WebhookHandlers",
    "WebhookProcessor",
    "replay_event",
]

_log = structlog.get_logger("seawall.webhooks")

PARK_SCHEDULE: Final = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 12 * 3600.0, 86400.0)
"""Seconds a parked delivery waits before each new try: 2 days in all, then it fails."""
_ERROR_LIMIT: Final = 2000


class AwaitingRecord(SeawallError):  # noqa: N818 - leaves name the condition
    """Raised by a webhook handler: the record this event refers to does not exist yet.

    The delivery is parked and tried again later, or as soon as
    `WebhookProcessor.release_waiting` is called with *waiting_for*.

    Attributes:
        waiting_for: a key naming the awaited record (``case:gh-1347``), if known.
    """

    def __init__(self, reason: str, *, waiting_for: str | None = None) -> None:
        self.waiting_for = waiting_for
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A stored delivery, as handlers see it.

    Attributes:
        id: the stored event's id.
        provider: the provider's configured name.
        type: the event type (``issues.opened``, ``charge.succeeded``), if known.
        delivery_id: the provider's delivery id, if it sent one.
        body: the raw body.
        headers: the delivery's headers (no signatures or credentials).
        received_at: when it arrived.
        attempts: how many times processing ran before this one.
    """

    id: str
    provider: str
    type: str | None
    delivery_id: str | None
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    received_at: datetime
    attempts: int

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            seawall.errors.Unprocessable: the body is not JSON (the delivery can never succeed).
        """
        try:
            return json.loads(self.body)
        except ValueError:
            raise Unprocessable(f"webhook {self.id} has no JSON body") from None


WebhookHandler = Callable[[WebhookEvent, AsyncSession], Awaitable[None]]
"""``async def handler(event, session)``: its effects go through *session*, in one transaction."""


class WebhookHandlers:
    """Handlers by provider and event type; types match as shell patterns (``charge.*``)."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str, str, WebhookHandler]] = []

    def __repr__(self) -> str:
        return f"WebhookHandlers({[(p, t) for p, t, _ in self._handlers]})"

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, provider: str, types: str | Sequence[str], handler: WebhookHandler) -> None:
        """Run *handler* for *provider*'s events whose type matches one of *types*."""
        for pattern in [types] if isinstance(types, str) else types:
            self._handlers.append((provider, pattern, handler))

    def on(
        self, provider: str, types: str | Sequence[str] = "*"
    ) -> Callable[[WebhookHandler], WebhookHandler]:
        """Decorator form of `add`."""

        def register(handler: WebhookHandler) -> WebhookHandler:
            self.add(provider, types, handler)
            return handler

        return register

    def matching(self, provider: str, event_type: str | None) -> list[WebhookHandler]:
        """The handlers for one delivery, in registration order, each once."""
        found: list[WebhookHandler] = []
        for wanted, pattern, handler in self._handlers:
            if wanted != provider or handler in found:
                continue
            if pattern == "*" or (
                event_type is not None and fnmatch.fnmatchcase(event_type, pattern)
            ):
                found.append(handler)
        return found


def _retry_event(webhook_id: str, provider: str, kind: str, *, force: bool = False) -> Event:
    return Event.create(
        kind,
        source=WEBHOOK_SOURCE,
        subject=webhook_id,
        data={"id": webhook_id, "provider": provider, "force": force},
    )


def replay_event(webhook_id: str, provider: str, *, force: bool = False) -> Event:
    """The ``webhook.replayed`` event that runs a stored delivery's processing again."""
    return _retry_event(webhook_id, provider, "webhook.replayed", force=force)


class WebhookProcessor:
    """Runs the handlers of stored deliveries and keeps their status.

    Args:
        handlers: the registry.
        schedule: seconds before each new try of a parked delivery.
        outbox: the outbox writer for retries and replays.
    """

    def __init__(
        self,
        handlers: WebhookHandlers,
        *,
        schedule: Sequence[float] = PARK_SCHEDULE,
        outbox: Outbox | None = None,
    ) -> None:
        if not schedule or any(not delay > 0 for delay in schedule):
            raise ValueError("the schedule needs at least one positive delay")
        self.handlers = handlers
        self.schedule = tuple(schedule)
        self._outbox = outbox or Outbox()

    def __repr__(self) -> str:
        return f"WebhookProcessor({self.handlers!r})"

    async def process(self, event: Event, session: AsyncSession) -> None:
        """The consumer's handler for ``webhook.received``, ``.retried`` and ``.replayed``.

        Raises:
            seawall.errors.Unprocessable: the event names no stored delivery.
            Exception: what a handler raised (other than `AwaitingRecord`).
        """
        data = event.data or {}
        webhook_id = data.get("id") or event.subject
        if not isinstance(webhook_id, str):
            raise Unprocessable("a webhook event must name its delivery")
        query = sa.select(webhook_events).where(webhook_events.c.id == webhook_id)
        if dialect_of(session) == "postgresql":
            query = query.with_for_update()
        row = (await session.execute(query)).mappings().first()
        if row is None:
            raise Unprocessable(f"no stored webhook {webhook_id!r}")
        forced = bool(data.get("force"))
        if row["status"] in {"processed", "ignored"} and not forced:
            _log.info("webhook_already_processed", webhook_id=webhook_id, status=row["status"])
            return
        delivery = WebhookEvent(
            id=row["id"],
            provider=row["provider"],
            type=row["event_type"],
            delivery_id=row["delivery_id"],
            body=bytes(row["body"]),
            headers=dict(row["headers"] or {}),
            received_at=row["received_at"],
            attempts=row["attempts"],
        )
        handlers = self.handlers.matching(delivery.provider, delivery.type)
        now = datetime.now(UTC)
        update = webhook_events.update().where(webhook_events.c.id == webhook_id)
        if not handlers:
            await session.execute(
                update.values(status="ignored", processed_at=now, attempts=row["attempts"] + 1)
            )
            return
        try:
            async with session.begin_nested():
                for handler in handlers:
                    await handler(delivery, session)
        except AwaitingRecord as waiting:
            await self._park(session, update, row["attempts"], waiting, now, webhook_id)
            return
        await session.execute(
            update.values(
                status="processed",
                processed_at=now,
                attempts=row["attempts"] + 1,
                last_error=None,
                next_attempt_at=None,
                waiting_for=None,
            )
        )

    async def _park(
        self,
        session: AsyncSession,
        update: Any,
        attempts: int,
        waiting: AwaitingRecord,
        now: datetime,
        webhook_id: str,
    ) -> None:
        tries = attempts + 1
        reason = str(waiting)[:_ERROR_LIMIT]
        if tries > len(self.schedule):
            await session.execute(
                update.values(
                    status="failed",
                    attempts=tries,
                    last_error=f"still waiting after {tries} tries: {reason}",
                    next_attempt_at=None,
                )
            )
            _log.warning("webhook_park_expired", webhook_id=webhook_id, attempts=tries)
            return
        due = now + timedelta(seconds=self.schedule[tries - 1])
        await session.execute(
            update.values(
                status="parked",
                attempts=tries,
                last_error=reason,
                next_attempt_at=due,
                waiting_for=waiting.waiting_for,
            )
        )
        _log.info(
            "webhook_parked",
            webhook_id=webhook_id,
            attempts=tries,
            waiting_for=waiting.waiting_for,
            next_attempt_at=due.isoformat(),
        )

    async def release_waiting(self, session: AsyncSession, *waiting_for: str) -> int:
        """Release, in the caller's transaction, the deliveries parked for any of *waiting_for*.

        Call it where the awaited record is created (``case:<id>``, and
        ``case:<external id>``): the deliveries go back to processing as soon as
        that transaction commits. One indexed query, whatever the number of keys.

        Returns:
            How many were released.
        """
        if not waiting_for:
            return 0
        rows = (
            await session.execute(
                sa.select(webhook_events.c.id, webhook_events.c.provider).where(
                    webhook_events.c.status == "parked",
                    webhook_events.c.waiting_for.in_(waiting_for),
                )
            )
        ).all()
        await self._requeue(session, rows)
        return len(rows)

    async def release_due(
        self, database: Database, *, now: datetime | None = None, limit: int = 500
    ) -> int:
        """Send the parked deliveries whose time has come back to processing.

        Returns:
            How many were released.
        """
        moment = now or datetime.now(UTC)
        async with database.transaction() as session:
            query = (
                sa.select(webhook_events.c.id, webhook_events.c.provider)
                .where(
                    webhook_events.c.status == "parked",
                    webhook_events.c.next_attempt_at <= moment,
                )
                .order_by(webhook_events.c.next_attempt_at)
                .limit(limit)
            )
            if dialect_of(session) == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            await self._requeue(session, rows)
        return len(rows)

    async def _requeue(self, session: AsyncSession, rows: Sequence[Any]) -> None:
        for webhook_id, provider in rows:
            await session.execute(
                webhook_events.update()
                .where(webhook_events.c.id == webhook_id)
                .values(status="received", next_attempt_at=None)
            )
            await self._outbox.add(session, _retry_event(webhook_id, provider, "webhook.retried"))
