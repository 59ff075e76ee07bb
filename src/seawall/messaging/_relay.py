"""`OutboxRelay`: publish committed outbox rows to the bus, in order per aggregate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, affected_rows, outbox
from seawall.errors import DatabaseError, PublishError
from seawall.messaging import _wakeup
from seawall.messaging._bus import Bus, Message
from seawall.messaging._event import SUBJECT_PREFIX, subject_for
from seawall.messaging._lease import Lease
from seawall.messaging._outbox import Outbox
from seawall.messaging._stopping import GRACE_SECONDS, Stopper, finish
from seawall.observability import (
    CORRELATION_HEADER,
    RelayMetrics,
    inject_trace_context,
    span,
)

log = structlog.get_logger("seawall.messaging")

NOTIFY_CHANNEL = "seawall_outbox"
# First key of the transaction-scoped advisory locks that keep one aggregate on one relay.
_AGGREGATE_LOCK_SPACE = 730577121

_SELECTED = (
    outbox.c.seq,
    outbox.c.event_id,
    outbox.c.event_type,
    outbox.c.source,
    outbox.c.subject,
    outbox.c.aggregate_type,
    outbox.c.aggregate_id,
    outbox.c.payload,
    outbox.c.correlation_id,
    outbox.c.causation_id,
    outbox.c.occurred_at,
    outbox.c.attempts,
)


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """How far publishing is behind.

    Attributes:
        pending: rows not yet published (parked rows excluded).
        oldest_age_seconds: age of the oldest pending row; 0 when none is pending.
        parked: rows set aside because the broker refused them for good.
        retrying: pending rows waiting for their next attempt after a failure.
    """

    pending: int
    oldest_age_seconds: float
    parked: int
    retrying: int


@dataclass(slots=True)
class _Outcome:
    published: list[int] = field(default_factory=list)
    failed: list[tuple[int, int, str]] = field(default_factory=list)  # seq, attempts, error
    parked: list[tuple[int, str]] = field(default_factory=list)


class OutboxRelay:
    """Publishes committed outbox rows to a `Bus` and marks them published.

    **Claiming.** A relay takes a batch of rows that are unpublished, not parked
    and due, oldest first. On PostgreSQL the batch is locked with ``FOR UPDATE
    SKIP LOCKED`` inside a transaction that lasts until the rows are marked, and
    each aggregate is taken with a transaction-scoped advisory lock, so any number
    of relays share the work and never publish one aggregate's events side by
    side. On SQLite one relay at a time holds the ``outbox-relay`` lease.

    A row is never selected as "after the last sequence number seen": sequence
    order is insert order, not commit order, and a relay reading that way skips
    rows whose transaction commits late.

    **Order.** Events of one aggregate are published one after the other, each
    after the previous one's acknowledgement, and a row whose earlier sibling is
    waiting to be retried waits too. Different aggregates are published
    concurrently, with many acknowledgements in flight. Within one aggregate,
    insert order is commit order as long as writers of an aggregate serialise on
    it (the cases service does: it updates the case row in the same transaction).

    **Failures.** A publish that fails for a reason that may pass (broker down,
    timeout) backs off per row (exponential with jitter, capped); a broker outage
    only delays events. A permanent refusal (too large, rejected) parks the row
    with its error; the rest go on. ``Nats-Msg-Id`` is the event id, so a row
    re-published after a crash is dropped by JetStream inside its window and
    by the consumers' inboxes after it.

    **Waking.** On a commit in this process (`Outbox.add` marks the session),
    on PostgreSQL ``NOTIFY seawall_outbox`` (a trigger on the table), and every
    ``poll_interval`` seconds as a fallback.

    Args:
        database: where the outbox is.
        bus: where events go.
        batch_size: rows claimed per round.
        poll_interval: seconds between polls when nothing wakes the relay.
        retry_base: first back-off after a failed publish, in seconds.
        retry_max: longest back-off, in seconds.
        retention: how long published rows are kept before the purge deletes them.
        purge_interval: seconds between purges; 0 disables them.
        subject_prefix: first token of every subject.
        clock: returns the current UTC time.
        registry: where publishes are counted (``seawall_relay_publishes_total``);
            the default registry if omitted.
    """

    def __init__(
        self,
        database: Database,
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        retention: timedelta = timedelta(hours=24),
        purge_interval: float = 300.0,
        subject_prefix: str = SUBJECT_PREFIX,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        registry: CollectorRegistry | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._db = database
        self._bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.retention = retention
        self.purge_interval = purge_interval
        self.subject_prefix = subject_prefix
        self._clock = clock
        self._postgres = database.dialect == "postgresql"
        self._lease = None if self._postgres else Lease(database, "outbox-relay")
        self._wake = asyncio.Event()
        self._stopper = Stopper()
        self.metrics = RelayMetrics(registry)

    def __repr__(self) -> str:
        return f"OutboxRelay({self._db!r}, {self._bus!r})"

    # -- one round -------------------------------------------------------------

    async def relay_once(self) -> int:
        """Claim one batch, publish it and record the outcome.

        Returns:
            The number of rows published in this round.
        """
        if self._postgres:
            async with self._db.transaction() as session:
                rows = await self._claim(session)
                if not rows:
                    return 0
                outcome = await self._publish(rows)
                await self._record(session, outcome)
            return len(outcome.published)
        assert self._lease is not None
        if not await self._lease.hold():
            return 0
        async with self._db.reading() as session:  # the lease makes this relay the only one
            rows = await self._claim(session)
        if not rows:
            return 0
        outcome = await self._publish(rows)
        async with self._db.transaction() as session:
            await self._record(session, outcome)
        return len(outcome.published)

    async def _claim(self, session: AsyncSession) -> Sequence[sa.RowMapping]:
        now = self._clock()
        earlier = outbox.alias("earlier")
        waiting_sibling = (
            sa.select(sa.literal(1))
            .where(
                earlier.c.aggregate_type == outbox.c.aggregate_type,
                earlier.c.aggregate_id == outbox.c.aggregate_id,
                earlier.c.seq < outbox.c.seq,
                earlier.c.published_at.is_(None),
                earlier.c.parked_at.is_(None),
                earlier.c.next_attempt_at > now,
            )
            .exists()
        )
        due = (
            sa.select(outbox.c.seq, outbox.c.aggregate_type, outbox.c.aggregate_id)
            .where(
                outbox.c.published_at.is_(None),
                outbox.c.parked_at.is_(None),
                sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
                ~waiting_sibling,
            )
            .order_by(outbox.c.seq)
            .limit(self.batch_size)
        )
        if not self._postgres:
            chosen = due.with_only_columns(outbox.c.seq).scalar_subquery()
            query = sa.select(*_SELECTED).where(outbox.c.seq.in_(chosen))
            return (await session.execute(query.order_by(outbox.c.seq))).mappings().all()
        # Lock the oldest due rows first (LIMIT, SKIP LOCKED), then take the advisory
        # lock of each one's aggregate: a lock per candidate row, never one per pending
        # row (a backlog would fill the lock table). A row whose aggregate another
        # relay holds stays row-locked and unpublished until this round commits.
        candidates = due.with_for_update(skip_locked=True).cte("candidates")
        # On the CTE's own columns, so the lock is taken on its (at most batch-size)
        # rows whatever join the planner picks; on outbox's columns it could run on a
        # scan of the whole table.
        aggregate_key = sa.func.hashtext(
            candidates.c.aggregate_type + sa.literal(":") + candidates.c.aggregate_id
        )
        query = (
            sa.select(*_SELECTED)
            .join(candidates, candidates.c.seq == outbox.c.seq)
            .where(
                sa.func.pg_try_advisory_xact_lock(
                    sa.literal(_AGGREGATE_LOCK_SPACE, sa.Integer()), aggregate_key
                )
            )
            .order_by(outbox.c.seq)
        )
        return (await session.execute(query)).mappings().all()

    async def _publish(self, rows: Sequence[sa.RowMapping]) -> _Outcome:
        by_aggregate: dict[tuple[str, str], list[sa.RowMapping]] = defaultdict(list)
        for row in rows:
            by_aggregate[(row["aggregate_type"], row["aggregate_id"])].append(row)
        outcome = _Outcome()

        async def publish_in_order(siblings: list[sa.RowMapping]) -> None:
            for row in siblings:
                try:
                    with span(
                        f"publish {row['event_type']}",
                        kind="producer",
                        attributes={"messaging.message.id": row["event_id"]},
                        correlation_id=row["correlation_id"],
                    ):
                        await self._bus.publish(self.message(row))
                except PublishError as exc:
                    if exc.permanent:
                        outcome.parked.append((row["seq"], str(exc)))
                        continue
                    outcome.failed.append((row["seq"], row["attempts"], str(exc)))
                    return  # the rest of this aggregate waits for this one
                outcome.published.append(row["seq"])

        await asyncio.gather(*(publish_in_order(group) for group in by_aggregate.values()))
        self.metrics.observe(
            published=len(outcome.published),
            failed=len(outcome.failed),
            parked=len(outcome.parked),
        )
        if outcome.failed or outcome.parked:
            log.warning(
                "outbox_publish_failed",
                failed=len(outcome.failed),
                parked=len(outcome.parked),
                error=(outcome.failed or outcome.parked)[0][-1],
            )
        return outcome

    def message(self, row: sa.RowMapping) -> Message:
        """Build the bus message of an outbox row."""
        return outbox_message(row, prefix=self.subject_prefix)

    async def _record(self, session: AsyncSession, outcome: _Outcome) -> None:
        now = self._clock()
        if outcome.published:
            await session.execute(
                outbox.update()
                .where(outbox.c.seq.in_(outcome.published))
                .values(
                    published_at=now,
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=None,
                    last_error=None,
                )
            )
        for seq, attempts, error in outcome.failed:
            await session.execute(
                outbox.update()
                .where(outbox.c.seq == seq)
                .values(
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=self.backoff(attempts + 1)),
                    last_error=error[:2000],
                )
            )
        for seq, error in outcome.parked:
            await session.execute(
                outbox.update()
                .where(outbox.c.seq == seq)
                .values(parked_at=now, attempts=outbox.c.attempts + 1, last_error=error[:2000])
            )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt *attempt* + 1; see `jittered_backoff`."""
        return jittered_backoff(attempt, base=self.retry_base, cap=self.retry_max)

    # -- operator views ----------------------------------------------------------

    async def lag(self) -> OutboxLag:
        """Count the rows waiting to be published and the age of the oldest."""
        return await outbox_lag(self._db, now=self._clock())

    async def requeue(self, seqs: Sequence[int] | None = None) -> int:
        """Put parked rows (all, or the given sequence numbers) back in line.

        Returns:
            How many rows were requeued.
        """
        query = outbox.update().where(outbox.c.parked_at.is_not(None))
        if seqs is not None:
            query = query.where(outbox.c.seq.in_(list(seqs)))
        async with self._db.transaction() as session:
            result = await session.execute(
                query.values(parked_at=None, next_attempt_at=None, last_error=None)
            )
        self.wake()
        return affected_rows(result)

    async def purge_published(self, *, batch: int = 1000) -> int:
        """Delete rows published longer than ``retention`` ago, *batch* rows per transaction.

        Returns:
            How many rows were deleted.
        """
        cutoff = self._clock() - self.retention
        total = 0
        while True:
            chosen = (
                sa.select(outbox.c.seq)
                .where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
                .order_by(outbox.c.published_at)
                .limit(batch)
            )
            if self._postgres:
                chosen = chosen.with_for_update(skip_locked=True)
            async with self._db.transaction() as session:
                result = await session.execute(
                    outbox.delete().where(outbox.c.seq.in_(chosen.scalar_subquery()))
                )
            total += affected_rows(result)
            if affected_rows(result) < batch:
                return total
            if self._stopper.stopping:
                return total
            await asyncio.sleep(0.05)  # let writers in between batches

    # -- running -------------------------------------------------------------------

    def wake(self) -> None:
        """Start the next round now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Ask `run` to finish its current round and return."""
        self._stopper.stop()

    async def run(self, *, concurrency: int = 1) -> None:
        """Relay until `stop` (or cancellation): claim loops, purge, listener.

        Args:
            concurrency: claim loops in this process (PostgreSQL only; SQLite has one).
        """
        _wakeup.register(self._wake)
        loops = [
            asyncio.create_task(self._loop(), name=f"seawall-relay-{i}")
            for i in range(concurrency if self._postgres else 1)
        ]
        if self.purge_interval > 0:
            loops.append(asyncio.create_task(self._purge_forever(), name="seawall-outbox-purge"))
        listener = (
            asyncio.create_task(self._listen_forever(), name="seawall-relay-listen")
            if self._postgres
            else None
        )
        log.info("relay_started", relay=repr(self))
        try:
            await asyncio.gather(*loops)
        finally:
            _wakeup.unregister(self._wake)
            self._stopper.stop()
            if listener is not None:
                listener.cancel()  # asyncpg's own connection: safe to cancel
                await asyncio.gather(listener, return_exceptions=True)
            await finish(loops, GRACE_SECONDS)
            if self._lease is not None:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await self._lease.release()
            log.info("relay_stopped")

    async def _loop(self) -> None:
        failures = 0
        while not self._stopper.stopping:
            self._wake.clear()
            try:
                published = await self.relay_once()
            except (SQLAlchemyError, DatabaseError, OSError) as exc:
                failures += 1
                log.warning("relay_round_failed", error=type(exc).__name__, failures=failures)
                await self._stopper.pause(min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if published >= self.batch_size:
                continue  # a full batch: there is probably more
            await self._stopper.pause(self.poll_interval, wake=self._wake)

    async def _purge_forever(self) -> None:
        while not self._stopper.stopping:
            try:
                removed = await self.purge_published()
                if removed:
                    log.info("outbox_purged", count=removed)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("outbox_purge_failed", error=type(exc).__name__)
            await self._stopper.pause(self.purge_interval)

    async def _listen_forever(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - PostgreSQL only

        dsn = make_url(self._db.url).set(drivername="postgresql")
        dsn_text = dsn.render_as_string(hide_password=False)
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(dsn_text, timeout=5)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(NOTIFY_CHANNEL, lambda *_args: self._wake.set())
                self._wake.set()  # catch up on anything committed while not listening
                await lost.wait()
                log.warning("relay_listen_connection_lost")
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("relay_listen_failed", error=type(exc).__name__)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=1)
            await asyncio.sleep(1.0)


async def outbox_lag(database: Database, *, now: datetime | None = None) -> OutboxLag:
    """Count pending, retrying and parked outbox rows and the age of the oldest pending one."""
    now = now or datetime.now(UTC)
    pending = sa.and_(outbox.c.published_at.is_(None), outbox.c.parked_at.is_(None))
    query = sa.select(
        sa.func.count().filter(pending),
        sa.func.min(outbox.c.created_at).filter(pending),
        sa.func.count().filter(outbox.c.parked_at.is_not(None)),
        sa.func.count().filter(pending, outbox.c.next_attempt_at.is_not(None)),
    ).where(outbox.c.published_at.is_(None))
    async with database.reading() as session:
        count, oldest, parked, retrying = (await session.execute(query)).one()
    if isinstance(oldest, datetime) and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return OutboxLag(
        pending=int(count), oldest_age_seconds=age, parked=int(parked), retrying=int(retrying)
    )


def outbox_message(row: sa.RowMapping, *, prefix: str = SUBJECT_PREFIX) -> Message:
    """Build the bus message of an outbox row: the envelope's JSON on its subject."""
    event = Outbox.envelope(row)
    headers = {CORRELATION_HEADER: event.correlationid} if event.correlationid else {}
    body = event.model_dump_json(exclude_none=True).encode()
    # Inside the relay's publish span, its trace context rides in the envelope as
    # the CloudEvents distributed-tracing extension (consumers read it back).
    inject_trace_context(headers)
    if "traceparent" in headers:
        traced = event.model_dump(mode="json", exclude_none=True)
        traced.update((k, headers[k]) for k in ("traceparent", "tracestate") if k in headers)
        body = json.dumps(traced, separators=(",", ":")).encode()
    return Message(
        id=event.id,
        subject=subject_for(event, prefix=prefix),
        body=body,
        headers=headers,
    )


def jittered_backoff(attempt: int, *, base: float, cap: float) -> float:
    """Delay after failed attempt *attempt*: ``base * 2**(attempt-1)``, capped, halved by jitter.

    The result lies between half the capped exponential and all of it, so
    retries of many rows or messages that failed together spread out.
    """
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy
