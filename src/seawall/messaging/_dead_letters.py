"""`DeadLetters`: the messages consumers gave up on, for operators to read and replay."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, affected_rows, dead_letters, insert_ignoring_conflicts

DeadLetterState = Literal["dead", "replay", "replayed"]

# Entries kept in a dead letter's history (the newest).
HISTORY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message a consumer group gave up on.

    Attributes:
        id: the dead letter's number.
        consumer: the durable name of the group.
        message_id: the message (event) id; a replay keeps it, so the inbox still guards it.
        subject: the subject it was delivered on.
        event_type: the CloudEvents type, when the body could be read.
        body: the message as delivered.
        error: the last attempt's error.
        attempts: deliveries made, replays included.
        history: one entry per failed attempt the giving-up worker saw, then one per
            failed replay: ``{"attempt", "at", "error"}``. Attempts made by another
            worker instance, or before a restart, are in the logs only.
        state: ``dead``, ``replay`` (requested, waiting for a worker) or ``replayed``.
    """

    id: int
    consumer: str
    message_id: str
    subject: str
    event_type: str | None
    body: str
    error: str
    attempts: int
    history: list[dict[str, Any]]
    state: DeadLetterState
    created_at: datetime
    updated_at: datetime
    replayed_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> DeadLetter:
        """Build a dead letter from a ``dead_letters`` row."""
        return cls(**{name: row[name] for name in cls.__slots__})

    def summary(self) -> dict[str, Any]:
        """The fields a list shows (no body, no history)."""
        return {
            "id": self.id,
            "consumer": self.consumer,
            "message_id": self.message_id,
            "event_type": self.event_type,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "updated_at": self.updated_at.isoformat(),
        }


class DeadLetters:
    """The ``dead_letters`` table: record, list, show, request a replay, purge.

    A replay is a request: the row goes to state ``replay`` and a worker running
    that consumer group hands the message to its handler again, through the
    inbox, in the same transaction that marks the row ``replayed``. It works the
    same on every bus, and it reaches only the group that failed.
    """

    def __init__(
        self, database: Database, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = database
        self._clock = clock

    async def record(
        self,
        session: AsyncSession,
        *,
        consumer: str,
        message_id: str,
        subject: str,
        event_type: str | None,
        body: str,
        error: str,
        attempt: int,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Write (or update) the dead letter of *message_id* for *consumer* in *session*.

        Args:
            earlier: history entries of the failed attempts before this one.
        """
        now = self._clock()
        entry = {"attempt": attempt, "at": now.isoformat(), "error": error[:2000]}
        existing = (
            await session.execute(
                sa.select(dead_letters.c.id, dead_letters.c.history, dead_letters.c.attempts)
                .where(dead_letters.c.consumer == consumer, dead_letters.c.message_id == message_id)
                .with_for_update()
            )
        ).first()
        if existing is None:
            values = {
                "consumer": consumer,
                "message_id": message_id,
                "subject": subject,
                "event_type": event_type,
                "body": body,
                "error": error[:2000],
                "attempts": attempt,
                "history": [*earlier, entry][-HISTORY_LIMIT:],
                "state": "dead",
                "created_at": now,
                "updated_at": now,
            }
            await session.execute(insert_ignoring_conflicts(session, dead_letters).values(values))
            return
        history = [*existing.history, *earlier, entry][-HISTORY_LIMIT:]
        await session.execute(
            dead_letters.update()
            .where(dead_letters.c.id == existing.id)
            .values(
                error=error[:2000],
                attempts=existing.attempts + 1,
                history=history,
                state="dead",
                updated_at=now,
            )
        )

    async def list(
        self,
        *,
        consumer: str | None = None,
        state: DeadLetterState | None = "dead",
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[DeadLetter]:
        """Return dead letters, newest first, optionally filtered."""
        query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if consumer is not None:
            query = query.where(dead_letters.c.consumer == consumer)
        if state is not None:
            query = query.where(dead_letters.c.state == state)
        if before_id is not None:
            query = query.where(dead_letters.c.id < before_id)
        async with self._db.reading() as session:
            rows = (await session.execute(query)).mappings().all()
        return [DeadLetter.from_row(row) for row in rows]

    async def get(self, dead_letter_id: int) -> DeadLetter | None:
        """Return one dead letter, or None."""
        async with self._db.reading() as session:
            row = (
                (
                    await session.execute(
                        sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id)
                    )
                )
                .mappings()
                .first()
            )
        return DeadLetter.from_row(row) if row is not None else None

    async def count(self, *, state: DeadLetterState = "dead") -> dict[str, int]:
        """Return how many dead letters each consumer has in *state*."""
        query = (
            sa.select(dead_letters.c.consumer, sa.func.count())
            .where(dead_letters.c.state == state)
            .group_by(dead_letters.c.consumer)
        )
        async with self._db.reading() as session:
            return {consumer: int(n) for consumer, n in (await session.execute(query)).all()}

    async def request_replay(
        self, ids: Sequence[int] | None = None, *, consumer: str | None = None
    ) -> int:
        """Ask the workers to replay dead letters (the given ids, or all of *consumer*, or all).

        Returns:
            How many dead letters were queued for replay.
        """
        query = dead_letters.update().where(dead_letters.c.state == "dead")
        if ids is not None:
            query = query.where(dead_letters.c.id.in_(list(ids)))
        if consumer is not None:
            query = query.where(dead_letters.c.consumer == consumer)
        async with self._db.transaction() as session:
            result = await session.execute(query.values(state="replay", updated_at=self._clock()))
        return affected_rows(result)

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        consumer: str | None = None,
        states: Sequence[DeadLetterState] = ("dead", "replayed"),
    ) -> int:
        """Delete dead letters (the given ids, or all of *consumer*, or all) in *states*.

        Returns:
            How many were deleted.
        """
        query = dead_letters.delete().where(dead_letters.c.state.in_(list(states)))
        if ids is not None:
            query = query.where(dead_letters.c.id.in_(list(ids)))
        if consumer is not None:
            query = query.where(dead_letters.c.consumer == consumer)
        async with self._db.transaction() as session:
            result = await session.execute(query)
        return affected_rows(result)

    async def replay_requests(
        self, consumers: Sequence[str], *, limit: int = 100
    ) -> builtins.list[int]:
        """Return the ids of dead letters of *consumers* waiting to be replayed."""
        query = (
            sa.select(dead_letters.c.id)
            .where(dead_letters.c.state == "replay", dead_letters.c.consumer.in_(list(consumers)))
            .order_by(dead_letters.c.id)
            .limit(limit)
        )
        async with self._db.reading() as session:
            return list((await session.execute(query)).scalars().all())
