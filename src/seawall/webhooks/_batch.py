"""`GroupCommit`: one writer stores the deliveries waiting, in one transaction.

A delivery costs a transaction of four inserts and a commit when it is stored
alone; stored with the others that arrived meanwhile, it costs a share of one.
Each request hands its delivery to the writer and waits: its answer is known,
and the ``200`` may go out, only once the transaction holding its rows and its
outbox event has committed. There is no timer: while one transaction is in
flight the next deliveries queue, and the writer takes them all (up to
*max_batch*) as soon as it is free, so a lone delivery is written at once.

Duplicates are decided as one delivery at a time would decide them. Two copies
in the same batch: the later is a duplicate of the earlier (and shares its
fate). A key already taken in the database (by an earlier batch, or by another
process racing on PostgreSQL, which waits for that transaction): ``INSERT ...
ON CONFLICT DO NOTHING RETURNING`` claims the keys of the whole batch, in key
order so that two processes lock them in the same order, and a delivery that
did not get all its keys is a duplicate, whose other keys are given back in the
same transaction.

On PostgreSQL the transaction runs on the raw asyncpg connection
(`AsyncpgBackend`: no session, and one connection checked out, and pinged,
for as long as deliveries keep coming); elsewhere in a session
(`SessionBackend`). Both raise SQLAlchemy's errors.

A row the database refuses (an integrity or data error) fails its batch; the
batch is then stored one delivery per transaction, so that only the bad row's
request gets the error. Any other failure (the database is down or locked)
fails every request of the batch with the same error (a driver that cannot
connect at all becomes `seawall.errors.DatabaseError`), which the app answers
with ``503``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, webhook_dedup, webhook_events
from seawall.errors import DatabaseError
from seawall.messaging import Event, Outbox

__all__ = [
    "BatchBackend",
    "BatchStatements",
    "GroupCommit",
    "Outcome",
    "PendingDelivery",
    "SessionBackend",
    "plan_claims",
]

_log = structlog.get_logger("seawall.webhooks")

MAX_BATCH: Final = 256
"""Deliveries per transaction at most (about 0.5 MB of 2 KB bodies)."""

Outcome = tuple[Literal["accepted", "duplicate"], str | None]
"""What became of a delivery: its status and its stored id (a duplicate: the first's)."""


@dataclass(slots=True)
class PendingDelivery:
    """A trusted delivery waiting for the writer, with everything its rows need.

    Built in the request's own task, so that the correlation id in its row and
    its event is the request's, not the writer's.

    Attributes:
        provider: the provider's name.
        keys: the dedupe keys it is recognised by (``id:…``, ``sha256:…``).
        row: its ``webhook_events`` row (``id`` is its webhook id).
        event: its ``webhook.received`` event.
        expires_at: when its dedupe keys may be forgotten.
    """

    provider: str
    keys: tuple[str, ...]
    row: dict[str, Any]
    event: Event
    expires_at: datetime

    @property
    def webhook_id(self) -> str:
        """The id it is stored under, if it is accepted."""
        return str(self.row["id"])


@dataclass(slots=True)
class _Waiting:
    delivery: PendingDelivery
    answer: asyncio.Future[Outcome]


# Statements are built once; each execution reuses the compiled form from the cache.
_RELEASE: Final = webhook_dedup.delete().where(
    webhook_dedup.c.provider == sa.bindparam("p"),
    webhook_dedup.c.key == sa.bindparam("k"),
    webhook_dedup.c.webhook_id == sa.bindparam("w"),
)
_HOLDERS: Final = sa.select(webhook_dedup.c.key, webhook_dedup.c.webhook_id).where(
    webhook_dedup.c.provider == sa.bindparam("p"),
    webhook_dedup.c.key.in_(sa.bindparam("keys", expanding=True)),
)
_STORE: Final = webhook_events.insert()


class BatchStatements(Protocol):
    """The statements of one batch's transaction, whichever way they reach the database."""

    async def claim(self, claims: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """Insert the ``webhook_dedup`` rows no one holds yet; the ``(provider, key)`` claimed."""
        ...

    async def release(self, released: list[tuple[str, str, str]]) -> None:
        """Delete these ``(provider, key, webhook_id)`` claims again."""
        ...

    async def holders(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The webhook id holding each of these ``(provider, key)``, where one does."""
        ...

    async def store(self, rows: list[dict[str, Any]]) -> None:
        """Insert these ``webhook_events`` rows."""
        ...

    async def stage(self, events: list[Event]) -> None:
        """Stage these events in the outbox."""
        ...


class BatchBackend(Protocol):
    """Runs a batch's transaction; may hold a connection while batches keep coming."""

    def transaction(self) -> AbstractAsyncContextManager[BatchStatements]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def release(self) -> None:
        """Give back what was held between batches: the writer has nothing left to do."""
        ...


def _claim_statement(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(webhook_dedup)
        .on_conflict_do_nothing()
        .returning(webhook_dedup.c.provider, webhook_dedup.c.key)
    )


class GroupCommit:
    """Stores webhook deliveries in shared transactions, one writer per instance.

    Args:
        database: where the rows go.
        outbox: writes the ``webhook.received`` events (`Outbox.add_all`).
        max_batch: deliveries per transaction at most.
    """

    def __init__(self, database: Database, outbox: Outbox, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.database = database
        self.max_batch = max_batch
        self._backend: BatchBackend
        if database.dialect == "postgresql":
            # The raw asyncpg connection: no session, no pool ping per batch.
            from seawall.webhooks._batch_postgres import AsyncpgBackend  # noqa: PLC0415

            self._backend = AsyncpgBackend(database, outbox)
        else:
            self._backend = SessionBackend(database, outbox)
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"GroupCommit(waiting={len(self._waiting)}, max_batch={self.max_batch})"

    async def store(self, delivery: PendingDelivery) -> Outcome:
        """Store *delivery* with the others waiting; return once its transaction committed.

        Returns:
            ``("accepted", its id)``, or ``("duplicate", the first delivery's id)``.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: its transaction failed; nothing of it
                is stored.
            seawall.errors.DatabaseError: the database could not be reached.

        Cancelling the wait before the writer took the delivery withdraws it.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append(_Waiting(delivery, answer))
        if self._writer is None or self._writer.done():
            # A context of its own: the writer's logs carry no request's correlation id.
            self._writer = loop.create_task(
                self._write(), name="seawall-webhook-writer", context=contextvars.Context()
            )
        return await answer

    async def _write(self) -> None:
        batch: list[_Waiting] = []
        try:
            while True:
                while self._waiting:
                    batch = self._waiting[: self.max_batch]
                    del self._waiting[: self.max_batch]
                    # A request cancelled before its turn withdraws its delivery.
                    batch = [waiting for waiting in batch if not waiting.answer.done()]
                    if batch:
                        await self._commit(batch)
                    batch = []
                # Nothing waits: give the connection back. Deliveries that came in
                # meanwhile found this task alive, so it must take them itself.
                await self._backend.release()
                if not self._waiting:
                    return
        except BaseException:
            # Cancelled (the loop is closing): nobody may wait forever for an answer.
            for waiting in [*batch, *self._waiting]:
                waiting.answer.cancel()
            self._waiting.clear()
            await self._backend.release()
            raise

    async def _commit(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._transaction([waiting.delivery for waiting in batch])
        except (IntegrityError, DataError) as exc:
            if len(batch) == 1:
                _answer(batch[0].answer, error=exc)
                return
            # One row the database refuses must not fail the others: one by one.
            _log.warning("webhook_batch_split", deliveries=len(batch), error=type(exc).__name__)
            for waiting in batch:
                await self._commit([waiting])
            return
        except (OSError, TimeoutError) as exc:
            # The driver could not even connect: a `DatabaseError`, which the app answers 503.
            unreachable = DatabaseError(
                f"database is unreachable ({type(exc).__name__}); the delivery was not stored"
            )
            unreachable.__cause__ = exc
            for waiting in batch:
                _answer(waiting.answer, error=unreachable)
            return
        except Exception as exc:  # handed to every request of the batch, which raises it
            for waiting in batch:
                _answer(waiting.answer, error=exc)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            _answer(waiting.answer, outcome=outcome)

    async def _transaction(self, deliveries: Sequence[PendingDelivery]) -> list[Outcome]:
        """Store *deliveries* in one transaction; their outcomes, once it committed."""
        copy_of, claims = plan_claims(deliveries)
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        async with self._backend.transaction() as statements:
            claimed = await statements.claim(claims)
            stored: list[PendingDelivery] = []
            refused: list[int] = []
            for index, delivery in enumerate(deliveries):
                if index in copy_of:
                    continue
                if all((delivery.provider, key) in claimed for key in delivery.keys):
                    stored.append(delivery)
                    outcomes[index] = ("accepted", delivery.webhook_id)
                else:
                    refused.append(index)
            if refused:
                duplicates = [deliveries[i] for i in refused]
                # Give back the keys the duplicates did get; find who holds the others.
                released = [
                    (delivery.provider, key, delivery.webhook_id)
                    for delivery in duplicates
                    for key in delivery.keys
                    if (delivery.provider, key) in claimed
                ]
                if released:
                    await statements.release(released)
                wanted = sorted(
                    {
                        (delivery.provider, key)
                        for delivery in duplicates
                        for key in delivery.keys
                        if (delivery.provider, key) not in claimed
                    }
                )
                holders = await statements.holders(wanted)
                for index, delivery in zip(refused, duplicates, strict=True):
                    first = next(
                        (
                            holders[(delivery.provider, k)]
                            for k in delivery.keys
                            if (delivery.provider, k) in holders
                        ),
                        None,
                    )
                    outcomes[index] = ("duplicate", first)
            if stored:
                await statements.store([delivery.row for delivery in stored])
                await statements.stage([delivery.event for delivery in stored])
        for index, first_index in sorted(copy_of.items()):
            earlier = outcomes[first_index]
            outcomes[index] = ("duplicate", earlier[1] if earlier else None)
        return [outcome or ("duplicate", None) for outcome in outcomes]


def plan_claims(
    deliveries: Sequence[PendingDelivery],
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Which deliveries copy an earlier one of the batch, and the keys the rest claim (pure).

    Returns:
        ``{index of a copy: index of the first delivery holding one of its keys}``,
        and the ``webhook_dedup`` rows to claim, in ``(provider, key)`` order.
    """
    copy_of: dict[int, int] = {}
    holder: dict[tuple[str, str], int] = {}
    for index, delivery in enumerate(deliveries):
        taken = [
            holder[(delivery.provider, k)]
            for k in delivery.keys
            if (delivery.provider, k) in holder
        ]
        if taken:
            copy_of[index] = taken[0]
            continue
        for key in delivery.keys:
            holder[(delivery.provider, key)] = index
    claims = [
        {
            "provider": provider,
            "key": key,
            "webhook_id": deliveries[index].webhook_id,
            "expires_at": deliveries[index].expires_at,
        }
        for (provider, key), index in sorted(holder.items())
    ]
    return copy_of, claims


class SessionStatements:
    """The batch's statements through a SQLAlchemy session (SQLite, and the reference path)."""

    def __init__(self, session: AsyncSession, claim: Any, outbox: Outbox) -> None:
        self._session = session
        self._claim = claim
        self._outbox = outbox

    async def claim(self, claims: list[dict[str, Any]]) -> set[tuple[str, str]]:
        result = await self._session.execute(self._claim, claims)
        return {(row[0], row[1]) for row in result}

    async def release(self, released: list[tuple[str, str, str]]) -> None:
        await self._session.execute(
            _RELEASE, [{"p": provider, "k": key, "w": owner} for provider, key, owner in released]
        )

    async def holders(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        by_provider: dict[str, list[str]] = {}
        for provider, key in wanted:
            by_provider.setdefault(provider, []).append(key)
        found: dict[tuple[str, str], str] = {}
        for provider, keys in by_provider.items():
            rows = await self._session.execute(_HOLDERS, {"p": provider, "keys": keys})
            found.update(((provider, key), str(owner)) for key, owner in rows)
        return found

    async def store(self, rows: list[dict[str, Any]]) -> None:
        await self._session.execute(_STORE, rows)

    async def stage(self, events: list[Event]) -> None:
        await self._outbox.add_all(self._session, events)


class SessionBackend:
    """Each batch in a session of its own, from `Database.transaction`."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._database = database
        self._outbox = outbox
        self._claim = _claim_statement(database.dialect)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SessionStatements]:
        async with self._database.transaction() as session:
            yield SessionStatements(session, self._claim, self._outbox)

    async def release(self) -> None:
        """Nothing is held between batches."""


def _answer(
    answer: asyncio.Future[Outcome],
    *,
    outcome: Outcome | None = None,
    error: BaseException | None = None,
) -> None:
    if answer.done():  # the request was cancelled meanwhile
        return
    if error is not None:
        answer.set_exception(error)
    else:
        assert outcome is not None
        answer.set_result(outcome)
