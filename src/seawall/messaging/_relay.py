"""`OutboxRelay`: publish committed outbox rows to the bus, in order per aggregate."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, affected_rows, outbox, raw_transaction, sqlite_statement
from seawall.errors import DatabaseError, PublishError
from seawall.messaging import _wakeup
from seawall.messaging._bus import Bus, Message
from seawall.messaging._event import SUBJECT_PREFIX, context_of
from seawall.messaging._lease import Lease
from seawall.messaging._stopping import GRACE_SECONDS, Signal, Stopper, finish
from seawall.observability import (
    CORRELATION_HEADER,
    RelayMetrics,
    inject_trace_context,
    span,
    tracing_enabled,
)

log = structlog.get_logger("seawall.messaging")

NOTIFY_CHANNEL = "seawall_outbox"
# When a relay starts its next round (see `OutboxRelay._round`).
_Next = Literal["full", "held back", "idle"]
_FULL: Final[_Next] = "full"
_HELD_BACK: Final[_Next] = "held back"
_IDLE: Final[_Next] = "idle"
# Event loop turns an in-process consumer needs from a publish to asking for the lock.
_CONSUMERS_FIRST = 4
# Pause before looking again at rows another relay held back.
_AGAIN_SECONDS = 0.005
# Attempts of one `_Marks` task at its update before it leaves the rows to the relay.
_MARK_ATTEMPTS = 3
# Batches a SQLite relay may publish ahead of its "published" updates before it waits.
_UNMARKED_BATCHES = 8
# Longest error text kept in ``outbox.last_error``.
_ERROR_CHARS = 2000
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


# What a relay round reads of each row: the envelope's JSON comes written by the
# database (`_envelope_sql`), so the relay's own thread, which also publishes, only
# sends it on.
_CLAIMED: Final = (
    "seq",
    "event_id",
    "event_type",
    "source",
    "aggregate_type",
    "aggregate_id",
    "correlation_id",
    "attempts",
    "envelope",
)


def _envelope_sql(dialect: str, alias: str) -> str:
    """The SQL expression of a row's envelope JSON, as `outbox_message` writes it.

    The same bytes: the fields of ``Event.model_dump_json(exclude_none=True)`` in
    its order, strings escaped as ``json.encoder.encode_basestring`` does (SQLite's
    ``json_quote`` and PostgreSQL's ``to_json`` escape alike), the time in UTC
    with ``Z`` and without a zero fraction, and the payload as stored. The
    database builds it in C, beside the thread that publishes (on SQLite in the
    driver's thread, which lets go of the interpreter lock meanwhile).
    """
    column = functools.partial("{}.{}".format, alias)
    if dialect == "postgresql":
        quote = "to_json({})::TEXT".format
        moment = column("occurred_at")
        time = (
            f"to_char({moment} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN to_char({moment}, 'US') = '000000' THEN '' "
            f"ELSE to_char({moment}, '.US') END"
        )
        payload = f"{column('payload')}::TEXT"
    else:  # SQLite: the naive UTC text SQLAlchemy stored, "YYYY-MM-DD HH:MM:SS.ffffff"
        quote = "json_quote({})".format
        stored = column("occurred_at")
        time = (
            f"replace(substr({stored}, 1, 19), ' ', 'T') || "
            f"CASE WHEN substr({stored}, 20) IN ('', '.000000') THEN '' "
            f"ELSE substr({stored}, 20) END"
        )
        payload = column("payload")

    def optional(key: str, name: str, value: str) -> str:
        return f"CASE WHEN {column(name)} IS NULL THEN '' ELSE ',\"{key}\":' || {value} END"

    return " || ".join(
        (
            """'{"specversion":"1.0","id":'""",
            quote(column("event_id")),
            """',"source":'""",
            quote(column("source")),
            """',"type":'""",
            quote(column("event_type")),
            optional("subject", "subject", quote(column("subject"))),
            f"""',"time":"' || {time} || 'Z","datacontenttype":"application/json"'""",
            optional("data", "payload", payload),
            optional("correlationid", "correlation_id", quote(column("correlation_id"))),
            optional("causationid", "causation_id", quote(column("causation_id"))),
            "'}'",
        )
    )


def _claimed_sql(dialect: str, alias: str) -> str:
    """The select list of a relay round (`_CLAIMED`) over the outbox as *alias*."""
    return ", ".join(
        f"{_envelope_sql(dialect, alias)} AS envelope" if name == "envelope" else f"{alias}.{name}"
        for name in _CLAIMED
    )


# PostgreSQL's round, on the raw connection ($1 = now; `_pg_claim` writes in the batch size).
#
# Lock the oldest due rows first (LIMIT, SKIP LOCKED), leaving out rows whose
# earlier sibling waits for a retry (else a broker outage would fill every batch
# with rows that may not go). Then keep a candidate only when no earlier row of
# its aggregate is pending outside this batch (one another relay holds: without
# this check a later row overtook it, as one run in five of the many-loops test
# showed), and only when this round gets its aggregate's advisory lock.
#
# The lock is tried once per aggregate (`locked`), never once per row: tried per
# row, it could fail for an aggregate's earlier row and succeed for its later one
# within one statement, when the relay holding it committed in between (its
# commit is visible to others a moment before its locks are released), and the
# later row went out first (seen once in CI in the many-loops test). It runs on
# the CTE's own rows, at most batch-size of them, never on a scan of the whole
# table (a backlog would fill the lock table). A row left out stays row-locked
# and unpublished until this round ends.
_PG_CLAIM: Final = f"""
WITH candidates AS (
    SELECT o.seq, o.aggregate_type, o.aggregate_id FROM outbox AS o
    WHERE o.published_at IS NULL AND o.parked_at IS NULL
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $1)
      AND NOT EXISTS (
          SELECT 1 FROM outbox AS earlier
          WHERE earlier.aggregate_type = o.aggregate_type
            AND earlier.aggregate_id = o.aggregate_id
            AND earlier.seq < o.seq
            AND earlier.published_at IS NULL AND earlier.parked_at IS NULL
            AND earlier.next_attempt_at > $1
          OFFSET 0)
    ORDER BY o.seq LIMIT $2
    FOR UPDATE SKIP LOCKED
),
eligible AS MATERIALIZED (
    SELECT c.seq, c.aggregate_type, c.aggregate_id FROM candidates AS c
    WHERE NOT EXISTS (
        SELECT 1 FROM outbox AS earlier
        WHERE earlier.aggregate_type = c.aggregate_type
          AND earlier.aggregate_id = c.aggregate_id
          AND earlier.seq < c.seq
          AND earlier.published_at IS NULL AND earlier.parked_at IS NULL
          AND earlier.seq NOT IN (SELECT seq FROM candidates)
        OFFSET 0)
),
locked AS MATERIALIZED (
    SELECT e.aggregate_type, e.aggregate_id FROM eligible AS e
    GROUP BY e.aggregate_type, e.aggregate_id
    HAVING pg_try_advisory_xact_lock(
        {_AGGREGATE_LOCK_SPACE}, hashtext(e.aggregate_type || ':' || e.aggregate_id))
),
taken AS (
    SELECT {_claimed_sql("postgresql", "o")}
    FROM outbox AS o
    JOIN eligible AS e ON e.seq = o.seq
    JOIN locked AS l
      ON l.aggregate_type = e.aggregate_type AND l.aggregate_id = e.aggregate_id
)
-- One row at least: the candidates' count comes back even when none was taken.
SELECT taken.*, (SELECT count(*) FROM candidates) AS candidates
FROM (SELECT 1) AS one LEFT JOIN taken ON true
ORDER BY taken.seq
"""  # noqa: S608 - column names from the schema; every value is a parameter (or an int)


@functools.cache
def _pg_claim(batch_size: int) -> str:
    """`_PG_CLAIM` with *batch_size* written in as its ``LIMIT``.

    As a parameter, the limit made PostgreSQL plan the statement anew at every
    round (its generic plan, made without knowing the limit, costs more), about
    0.3 ms each time. Written in, one generic plan serves every round: a claim of
    a few rows took 0.11-0.21 ms instead of 0.43-0.58, and a claim of 500 rows
    with 290,000 pending 3.9-4.7 ms instead of 4.6-8.1.
    """
    return _PG_CLAIM.replace("LIMIT $2", f"LIMIT {int(batch_size)}")


_PG_MARK_PUBLISHED: Final = (
    "UPDATE outbox SET published_at = $1, attempts = attempts + 1, next_attempt_at = NULL, "
    "last_error = NULL WHERE seq = ANY($2::BIGINT[])"
)
# With ``retention`` 0 a published row is deleted instead: far less work for
# PostgreSQL than the update, which writes a new version of the whole row and an
# entry in each of its indexes (14.5-23.5 against 35.5-37.5 µs of its CPU per
# row, claim included, in a scratch run of 20,000 rows).
_PG_DELETE_PUBLISHED: Final = "DELETE FROM outbox WHERE seq = ANY($1::BIGINT[])"
_PG_MARK_FAILED: Final = (
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 "
    "WHERE seq = $1"
)
_PG_MARK_PARKED: Final = (
    "UPDATE outbox SET parked_at = $2, attempts = attempts + 1, last_error = $3 WHERE seq = $1"
)


# SQLite's claim, on the raw driver (see `sqlite_statement`); one relay holds the lease.
# :skip is a JSON array of the sequence numbers this relay has claimed and not yet
# marked (`_Marks`): one parameter whatever their number. Timestamps are compared
# as the text SQLAlchemy stores (`_sqlite_time`).
_SQLITE_CLAIM: Final = f"""
SELECT {_claimed_sql("sqlite", "outbox")} FROM outbox WHERE seq IN (
    SELECT o.seq FROM outbox AS o
    WHERE o.published_at IS NULL AND o.parked_at IS NULL
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= :now)
      AND NOT EXISTS (
          SELECT 1 FROM outbox AS earlier
          WHERE earlier.aggregate_type = o.aggregate_type
            AND earlier.aggregate_id = o.aggregate_id
            AND earlier.seq < o.seq
            AND earlier.published_at IS NULL AND earlier.parked_at IS NULL
            AND earlier.next_attempt_at > :now)
      AND o.seq NOT IN (SELECT value FROM json_each(:skip))
    ORDER BY o.seq LIMIT :limit)
ORDER BY seq
"""  # noqa: S608 - column names from the schema; every value is a parameter
_SQLITE_MARK_PUBLISHED: Final = (
    "UPDATE outbox SET published_at = :now, attempts = attempts + 1, next_attempt_at = NULL, "
    "last_error = NULL WHERE seq IN (SELECT value FROM json_each(:seqs))"
)
_SQLITE_DELETE_PUBLISHED: Final = (
    "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(:seqs))"
)


def _sqlite_time(moment: datetime) -> str:
    """*moment* as SQLAlchemy stores a `UTCDateTime` on SQLite: naive UTC text."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_row(values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_CLAIMED, values, strict=True))


# An outbox row as a session (``RowMapping``) or asyncpg (``Record``) hands it out.
_Row = Mapping[Any, Any]


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


class _Marks:
    """SQLite's "published" updates, written by a task of their own (`OutboxRelay.run`).

    Published rows wait here until an update marks them, while the relay claims
    and publishes the next batch: the update and its commit run in aiosqlite's
    thread as the event loop publishes, and rows published within ``delay`` of
    each other share one fsync'd transaction instead of taking the write lock
    once per round. The claim skips `taken` rows (claimed by this relay, then
    published or in flight), which stay in that set until their update has
    committed, so this relay never claims a row twice.

    A crash before the update commits leaves rows unmarked, as a crash between a
    publish and its update always could: the next relay publishes them again,
    and ``Nats-Msg-Id`` and the consumers' inboxes drop the copies.
    """

    def __init__(self, write: Callable[[list[int]], Awaitable[None]], *, delay: float) -> None:
        self._write = write
        self.delay = delay
        self.taken: set[int] = set()
        self._queued: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set by `flush`: write without the delay

    def take(self, seqs: Sequence[int]) -> None:
        """Keep *seqs* out of the next claims until they are marked or `release`d."""
        self.taken.update(seqs)

    def release(self, seqs: Sequence[int]) -> None:
        """Let the claim see *seqs* again (their outcome was written another way)."""
        self.taken.difference_update(seqs)

    def add(self, seqs: Sequence[int]) -> None:
        """Mark *seqs* (taken) published soon."""
        if not seqs:
            return
        self._queued.extend(seqs)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="seawall-relay-marks")

    def skip(self) -> str:
        """The claim's ``skip`` parameter: the taken sequence numbers as a JSON array."""
        return json.dumps(list(self.taken)) if self.taken else "[]"

    async def flush(self) -> None:
        """Write every row added so far, after the write under way (if any).

        Raises:
            SQLAlchemyError: the update failed; the rows stay queued.
        """
        self._hurry.set()
        try:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            if self._queued:
                await self._write_queued()
        finally:
            self._hurry.clear()

    async def _drain(self) -> None:
        failures = 0
        while self._queued:
            # Let more rows gather, and let the in-process consumers this publish woke
            # ask for SQLite's write lock first: their commit is what users wait for.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay):
                    await self._hurry.wait()
            try:
                await self._write_queued()
            except (SQLAlchemyError, OSError) as exc:
                failures += 1
                log.warning("outbox_mark_failed", error=type(exc).__name__, failures=failures)
                if failures >= _MARK_ATTEMPTS:
                    return  # the relay's next `add` or `flush` tries again
                await asyncio.sleep(0.1 * 2**failures)
            else:
                failures = 0

    async def _write_queued(self) -> None:
        seqs, self._queued = self._queued, []
        try:
            await self._write(seqs)
        except BaseException:
            self._queued[:0] = seqs
            raise
        self.taken.difference_update(seqs)


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

    **Marking.** On PostgreSQL a round marks its rows published before its
    transaction ends (the rows stay locked until then). On SQLite, `run` hands
    published rows to a task that marks them while the next round claims and
    publishes; rows published within ``mark_delay`` share one transaction, and
    the claim skips rows published but not yet marked. A round with a failed or
    parked row writes everything before the next claim, so that row's later
    siblings see its back-off. `relay_once` marks its rows before it returns.
    With a ``retention`` of 0, "marking" a row published deletes it, in the same
    place and transaction; failed and parked rows stay, as always.

    **Waking.** On a commit in this process (`Outbox.add` marks the session),
    on PostgreSQL ``NOTIFY seawall_outbox`` (a trigger on the table), and every
    ``poll_interval`` seconds as a fallback.

    Args:
        database: where the outbox is.
        bus: where events go.
        batch_size: rows claimed per round. 1,000 drained PostgreSQL faster than 500
            (23,285-25,658 against 19,089-22,916 rows/s in five alternating pairs with
            two claim loops) and than 2,000, whose claims cost PostgreSQL half again
            as much CPU per row; SQLite measured the same with 500 and 1,000.
        poll_interval: seconds between polls when nothing wakes the relay.
        retry_base: first back-off after a failed publish, in seconds.
        retry_max: longest back-off, in seconds.
        retention: how long published rows are kept before the purge deletes them.
            ``timedelta(0)``: delete each row as it is marked published, which
            costs the database far less than the update (see **Marking**). Only
            for a bus that keeps its own log (JetStream): the in-process bus
            redelivers from published rows after a restart.
        purge_interval: seconds between purges; 0 disables them.
        subject_prefix: first token of every subject.
        clock: returns the current UTC time.
        registry: where publishes are counted (``seawall_relay_publishes_total``);
            the default registry if omitted.
        mark_delay: on SQLite, seconds `run` lets published rows gather before
            one transaction marks them all (see **Marking**). 50 ms, not 10: at
            125-250 events/s a 10 ms wait marked about one event per transaction,
            and those transactions queued with the writers'; at 125/s 50 ms took
            15 % fewer turns of the write lock, and it lowered the commit ->
            handler p99 in ten of twelve alternated pairs (docs/BENCHMARKS.md,
            stop 21).
    """

    def __init__(
        self,
        database: Database,
        bus: Bus,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        retention: timedelta = timedelta(hours=24),
        purge_interval: float = 300.0,
        subject_prefix: str = SUBJECT_PREFIX,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        registry: CollectorRegistry | None = None,
        mark_delay: float = 0.05,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if retention < timedelta(0):
            raise ValueError("retention must not be negative")
        if not retention and not bus.durable:
            raise ValueError(
                "the in-process bus redelivers from published outbox rows: "
                "keep them (a retention above 0)"
            )
        self._db = database
        self._bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.retention = retention
        self._delete_published = not retention
        self.purge_interval = purge_interval
        self.subject_prefix = subject_prefix
        self._clock = clock
        self._postgres = database.dialect == "postgresql"
        self._lease = None if self._postgres else Lease(database, "outbox-relay")
        self._marks = None if self._postgres else _Marks(self._mark_published, delay=mark_delay)
        self._next_claim: asyncio.Task[list[dict[str, Any]]] | None = None  # SQLite, `run`
        self._wake = Signal()
        self._backlog = Signal()  # set while rounds come back full
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
        published, _next = await self._round()
        return published

    async def _round(self, *, pipelined: bool = False) -> tuple[int, _Next]:
        """One round: the rows published, and when to start the next one.

        At once after a full batch; soon when rows were held back because
        another relay had their aggregates (it may be done in a moment, and no
        one else would wake this relay for them); else at the next wake-up.
        *pipelined* (`run` on SQLite): see `_round_sqlite`.
        """
        if self._postgres:
            return await self._round_postgres()
        return await self._round_sqlite(pipelined=pipelined)

    async def _round_sqlite(self, *, pipelined: bool) -> tuple[int, _Next]:
        """Claim, publish and mark a batch on SQLite, where this relay holds the lease.

        *pipelined*: while a full batch is being published, the next one is
        claimed, and `_Marks` writes the published rows while the next batch
        goes out, at most ``_UNMARKED_BATCHES`` batches behind. A round with a
        failed or parked row drops the batch claimed meanwhile (it may hold that
        row's later siblings) and writes every outcome before the next claim, so
        those siblings see its back-off.
        """
        assert self._lease is not None
        assert self._marks is not None
        marks = self._marks
        if not await self._lease.hold():
            await self._drop_next_claim()
            return 0, _IDLE
        if len(marks.taken) >= _UNMARKED_BATCHES * self.batch_size:
            # The updates fall behind (the lock is busy, the disk slow): wait for them
            # rather than let the claim's skip list and a crash's re-publishes grow.
            await marks.flush()
        claiming = self._next_claim
        self._next_claim = None
        rows = await (claiming or self._claim_sqlite())
        if not rows:
            return 0, _IDLE
        seqs = [row["seq"] for row in rows]
        next_round = _FULL if len(rows) >= self.batch_size else _IDLE
        if pipelined:
            marks.take(seqs)
            if next_round is _FULL:
                self._next_claim = asyncio.create_task(self._claim_sqlite())
        try:
            outcome = await self._publish(rows)
        except BaseException:
            marks.release(seqs)
            raise
        if pipelined and not outcome.failed and not outcome.parked:
            marks.add(outcome.published)
            return len(outcome.published), next_round
        try:
            await self._drop_next_claim()
            await marks.flush()
            if not self._bus.durable:
                # The in-process consumers this publish woke ask for SQLite's write lock
                # before the relay's bookkeeping does: their commit is what users wait for.
                for _ in range(_CONSUMERS_FIRST):
                    await asyncio.sleep(0)
            if outcome.published:  # one raw statement, as `_Marks` writes them
                await self._mark_published(outcome.published)
            if outcome.failed or outcome.parked:
                async with self._db.transaction() as session:
                    await self._record_failures(session, outcome)
        finally:
            # Written, or to be claimed (and published) again: never skipped for good.
            marks.release(seqs)
        return len(outcome.published), next_round

    async def _claim_sqlite(self) -> list[dict[str, Any]]:
        assert self._marks is not None
        parameters = {
            "now": _sqlite_time(self._clock()),
            "limit": self.batch_size,
            "skip": self._marks.skip(),
        }
        return [
            _sqlite_row(values)
            for values in await sqlite_statement(self._db, _SQLITE_CLAIM, parameters)
        ]

    async def _drop_next_claim(self) -> None:
        """Let the early claim finish (a read, not cancelled mid-statement) and forget it."""
        claiming = self._next_claim
        self._next_claim = None
        if claiming is not None:
            await asyncio.gather(claiming, return_exceptions=True)

    async def _mark_published(self, seqs: list[int]) -> None:
        if self._delete_published:
            parameters: dict[str, str] = {"seqs": json.dumps(seqs)}
            await sqlite_statement(self._db, _SQLITE_DELETE_PUBLISHED, parameters, write=True)
            return
        parameters = {"now": _sqlite_time(self._clock()), "seqs": json.dumps(seqs)}
        await sqlite_statement(self._db, _SQLITE_MARK_PUBLISHED, parameters, write=True)

    async def _round_postgres(self) -> tuple[int, _Next]:
        # On the raw asyncpg connection: through a session, a round of 500 rows cost
        # about twice the CPU of publishing them (result processing per row, JSON
        # decoded only to be encoded again).
        async with raw_transaction(self._db) as (driver, statement):
            statement.sql = claim = _pg_claim(self.batch_size)
            rows = await driver.fetch(claim, self._clock())
            candidates = rows[0]["candidates"]
            if rows[0]["seq"] is None:  # none taken: the count's row alone
                return 0, _HELD_BACK if candidates else _IDLE
            outcome = await self._publish(rows)
            now = self._clock()
            if outcome.published and self._delete_published:
                statement.sql = _PG_DELETE_PUBLISHED
                await driver.execute(_PG_DELETE_PUBLISHED, outcome.published)
            elif outcome.published:
                statement.sql = _PG_MARK_PUBLISHED
                await driver.execute(_PG_MARK_PUBLISHED, now, outcome.published)
            if outcome.failed:
                statement.sql = _PG_MARK_FAILED
                await driver.executemany(
                    _PG_MARK_FAILED,
                    [
                        (seq, now + self._retry_delay(attempts), error)
                        for seq, attempts, error in outcome.failed
                    ],
                )
            if outcome.parked:
                statement.sql = _PG_MARK_PARKED
                await driver.executemany(
                    _PG_MARK_PARKED, [(seq, now, error) for seq, error in outcome.parked]
                )
        if candidates >= self.batch_size:
            return len(outcome.published), _FULL
        return len(outcome.published), _HELD_BACK if candidates > len(rows) else _IDLE

    async def _publish(self, rows: Sequence[_Row]) -> _Outcome:
        """Publish *rows* in waves: each wave takes the next row of every aggregate.

        A wave's messages are in flight together; the next row of an aggregate
        goes out only after the previous one was acknowledged (or parked), and
        none goes out after a failure: the rest of that aggregate waits for it.
        """
        queues: defaultdict[tuple[str, str], deque[_Row]] = defaultdict(deque)
        for row in rows:
            queues[(row["aggregate_type"], row["aggregate_id"])].append(row)
        outcome = _Outcome()
        wave = [queue.popleft() for queue in queues.values()]
        while wave:
            following: list[_Row] = []
            for row, refusal in zip(wave, await self._publish_wave(wave), strict=True):
                if refusal is None:
                    outcome.published.append(row["seq"])
                elif refusal.permanent:
                    outcome.parked.append((row["seq"], str(refusal)[:_ERROR_CHARS]))
                else:
                    outcome.failed.append(
                        (row["seq"], row["attempts"], str(refusal)[:_ERROR_CHARS])
                    )
                    continue  # the rest of this aggregate waits for this one
                queue = queues[(row["aggregate_type"], row["aggregate_id"])]
                if queue:
                    following.append(queue.popleft())
            wave = following
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

    async def _publish_wave(self, rows: list[_Row]) -> list[PublishError | None]:
        if not tracing_enabled():
            return await self._bus.publish_many([self.message(row) for row in rows])
        with contextlib.ExitStack() as spans:
            scopes, messages = [], []
            for row in rows:  # each message carries its own span's trace context
                scopes.append(
                    spans.enter_context(
                        span(
                            f"publish {row['event_type']}",
                            kind="producer",
                            attributes={"messaging.message.id": row["event_id"]},
                            correlation_id=row["correlation_id"],
                        )
                    )
                )
                messages.append(self.message(row))
            refusals = await self._bus.publish_many(messages)
            for scope, refusal in zip(scopes, refusals, strict=True):
                if scope is not None and refusal is not None:
                    scope.fail(str(refusal))
            return refusals

    def message(self, row: _Row) -> Message:
        """Build the bus message of an outbox row."""
        return outbox_message(row, prefix=self.subject_prefix)

    def _retry_delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=self.backoff(attempts + 1))

    async def _record_failures(self, session: AsyncSession, outcome: _Outcome) -> None:
        """Write the back-off of the rows that failed and set aside those parked."""
        now = self._clock()
        for seq, attempts, error in outcome.failed:
            await session.execute(
                outbox.update()
                .where(outbox.c.seq == seq)
                .values(
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=now + self._retry_delay(attempts),
                    last_error=error,
                )
            )
        for seq, error in outcome.parked:
            await session.execute(
                outbox.update()
                .where(outbox.c.seq == seq)
                .values(parked_at=now, attempts=outbox.c.attempts + 1, last_error=error)
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

    async def run(self, *, concurrency: int = 2) -> None:
        """Relay until `stop` (or cancellation): claim loops, purge, listener.

        Args:
            concurrency: claim loops in this process (PostgreSQL only; SQLite has
                one). With two, one loop claims and publishes while the other
                marks its rows and commits, so neither the broker nor the
                database waits for the other (0.63 of raw publish against 0.41
                with one, in one run of ``bench/outbox_relay.py``). Loops after
                the first run only while rounds come back full.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        _wakeup.register(self._wake)
        loops = [
            asyncio.create_task(self._loop(first=i == 0), name=f"seawall-relay-{i}")
            for i in range(concurrency if self._postgres else 1)
        ]
        if self.purge_interval > 0:
            loops.append(asyncio.create_task(self._purge_forever(), name="seawall-outbox-purge"))
        listener = (
            asyncio.create_task(self._listen_forever(), name="seawall-relay-listen")
            if self._postgres
            else None
        )
        log.info(
            "relay_started",
            relay=repr(self),
            published_rows="deleted" if self._delete_published else f"kept {self.retention}",
        )
        try:
            await asyncio.gather(*loops)
        finally:
            _wakeup.unregister(self._wake)
            self._stopper.stop()
            if listener is not None:
                listener.cancel()  # asyncpg's own connection: safe to cancel
                await asyncio.gather(listener, return_exceptions=True)
            await finish(loops, GRACE_SECONDS)
            if self._marks is not None:
                await self._drop_next_claim()
                await self._flush_marks()
            if self._lease is not None:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await self._lease.release()
            log.info("relay_stopped")

    async def _loop(self, *, first: bool = True) -> None:
        """Claim rounds until stopped.

        The first loop wakes on every commit (and poll); the others only while
        there is a backlog (a round came back full), so a trickle of commits
        costs one round each, not one per loop.
        """
        wake = self._wake if first else self._backlog
        failures = 0
        while not self._stopper.stopping:
            if first:
                self._wake.clear()
            try:
                _published, next_round = await self._round(pipelined=True)
            except (SQLAlchemyError, DatabaseError, OSError) as exc:
                failures += 1
                log.warning("relay_round_failed", error=type(exc).__name__, failures=failures)
                await self._stopper.pause(min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if next_round is _FULL:
                self._backlog.set()
                await asyncio.sleep(0)  # there is probably more; let other work in first
                continue
            self._backlog.clear()
            if next_round is _HELD_BACK:
                # Another relay has these rows' aggregates for a moment: look again soon.
                await self._stopper.pause(min(self.poll_interval, _AGAIN_SECONDS), wake=wake)
                continue
            await self._stopper.pause(self.poll_interval, wake=wake)

    async def _flush_marks(self) -> None:
        assert self._marks is not None
        try:
            async with asyncio.timeout(GRACE_SECONDS):
                await self._marks.flush()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Left unmarked: the next relay publishes them again, and the copies are dropped.
            log.warning(
                "outbox_marks_not_written", error=type(exc).__name__, rows=len(self._marks.taken)
            )

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


def outbox_message(row: _Row, *, prefix: str = SUBJECT_PREFIX) -> Message:
    """Build the bus message of an outbox row: the envelope's JSON on its subject.

    A relay's row carries the envelope as the database wrote it (``envelope``,
    see `_envelope_sql`); any other row (from a session, or the raw driver) has it
    written here, to the same bytes, rather than by rebuilding the `Event`
    (validation and ``model_dump_json`` cost more than publishing it). Inside a
    publish span, its trace context is added as the CloudEvents distributed
    tracing extension (consumers read it back).
    """
    correlation_id = row["correlation_id"]
    headers = {CORRELATION_HEADER: correlation_id} if correlation_id else {}
    inject_trace_context(headers)
    envelope: str | None = row.get("envelope")
    if envelope is None:
        envelope = _envelope(row)
    traced = [
        f',"{name}":{_quoted(value)}'
        for name in ("traceparent", "tracestate")
        if (value := headers.get(name)) is not None
    ]
    if traced:
        envelope = f"{envelope[:-1]}{''.join(traced)}}}"
    return Message(
        id=row["event_id"],
        subject=f"{prefix}.{_context(row['source'])}.{row['event_type']}",
        body=envelope.encode(),
        headers=headers,
    )


def _envelope(row: _Row) -> str:
    """The envelope JSON of a row without one (`outbox_message`).

    *row* may come from a session (the payload decoded) or from the raw driver
    (the payload as JSON text; on SQLite, ``occurred_at`` as the naive UTC text
    stored).
    """
    parts = [
        '{"specversion":"1.0","id":',
        _quoted(row["event_id"]),
        ',"source":',
        _quoted(row["source"]),
        ',"type":',
        _quoted(row["event_type"]),
    ]
    subject = row["subject"]
    if subject is not None:
        parts += (',"subject":', _quoted(subject))
    parts += (',"time":"', _utc_text(row["occurred_at"]), 'Z","datacontenttype":"application/json"')
    payload = row["payload"]
    if payload is not None:
        parts += (',"data":', payload if isinstance(payload, str) else _json(payload))
    for name, value in (
        ("correlationid", row["correlation_id"]),
        ("causationid", row["causation_id"]),
    ):
        if value is not None:
            parts += (f',"{name}":', _quoted(value))
    parts.append("}")
    return "".join(parts)


def _utc_text(occurred: datetime | str) -> str:
    """An aware datetime, or SQLite's stored naive-UTC text, as ``isoformat`` writes UTC."""
    if isinstance(occurred, str):  # "YYYY-MM-DD HH:MM:SS.ffffff", from the raw driver
        text = occurred.replace(" ", "T", 1)
        return text.removesuffix(".000000")  # as isoformat leaves out zero microseconds
    return occurred.astimezone(UTC).isoformat().removesuffix("+00:00")


def _json(value: Any) -> str:
    """A decoded payload as compact JSON."""
    return json.dumps(value, separators=(",", ":"))


# A JSON string as pydantic, SQLite's json_quote and PostgreSQL's to_json write it:
# non-ASCII characters as they are, control characters escaped (the C escaper).
_quoted: Callable[[str], str] = json.encoder.encode_basestring
_context = functools.lru_cache(maxsize=1024)(context_of)


def jittered_backoff(attempt: int, *, base: float, cap: float) -> float:
    """Delay after failed attempt *attempt*: ``base * 2**(attempt-1)``, capped, halved by jitter.

    The result lies between half the capped exponential and all of it, so
    retries of many rows or messages that failed together spread out.
    """
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy
