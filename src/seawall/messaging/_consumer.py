"""Consumers: `@consumer` handlers run by a `Worker`, once per event through the inbox."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import (
    Database,
    affected_rows,
    dead_letters,
    dialect_of,
    inbox,
    insert_ignoring_conflicts_for,
    insert_new_rows,
    insert_rows,
    outbox,
)
from seawall.errors import DatabaseError, Unprocessable
from seawall.messaging._bus import Bus, Delivery, InProcessBus, check_durable, check_subjects
from seawall.messaging._dead_letters import HISTORY_LIMIT, DeadLetters
from seawall.messaging._event import SUBJECT_PREFIX, Event, ReceivedEvent, subject_matches
from seawall.messaging._relay import _SELECTED, jittered_backoff, outbox_message
from seawall.messaging._stopping import GRACE_SECONDS, Stopper, finish
from seawall.observability import (
    ConsumerMetrics,
    bind_correlation,
    new_correlation_id,
    span,
    valid_correlation_id,
)

log = structlog.get_logger("seawall.messaging")

EventHandler = Callable[[Event, AsyncSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A handler bound to a consumer group.

    Attributes:
        durable: the group's name. Instances with one name share the work;
            different names each get every event.
        subjects: subject patterns, e.g. ``seawall.cases.>``.
        handler: ``async def handler(event, session)``; its writes commit with the
            inbox row in one transaction.
        max_deliver: attempts before the message is dead-lettered.
        concurrency: messages handled at once per process.
        ack_wait: seconds before an unacknowledged delivery is redelivered (the
            worker pushes it back while a handler is still running).
        retry_base: delay before the first redelivery, in seconds; doubles per attempt.
        retry_max: longest delay between attempts, in seconds.
        batch_size: deliveries that may share one transaction. With more than 1,
            the deliveries that are ready together (up to this many) run one
            after the other in one transaction with one inbox insert; if a
            handler fails, the batch is rolled back and each delivery runs again
            in a transaction of its own. Only for handlers whose effects are all
            in the database: an outside effect (an HTTP call) of a batch that is
            rolled back would happen twice. On SQLite the batch's inbox rows ride
            along with its first statement or its ``COMMIT`` (no hop of their
            own), so a redelivered event is found there: the batch rolls back
            and each delivery runs alone, the inbox checked first.
    """

    durable: str
    subjects: tuple[str, ...]
    handler: EventHandler
    max_deliver: int = 5
    concurrency: int = 8
    ack_wait: float = 30.0
    retry_base: float = 1.0
    retry_max: float = 300.0
    batch_size: int = 1

    def __post_init__(self) -> None:
        check_durable(self.durable)
        check_subjects(self.subjects)
        if self.max_deliver < 1 or self.concurrency < 1 or self.batch_size < 1:
            raise ValueError("max_deliver, concurrency and batch_size must be at least 1")

    def backoff(self, attempt: int) -> float:
        """Delay before redelivering after failed attempt *attempt*; see `jittered_backoff`."""
        return jittered_backoff(attempt, base=self.retry_base, cap=self.retry_max)

    def wants(self, subject: str) -> bool:
        """Whether *subject* matches one of this consumer's patterns."""
        return any(subject_matches(pattern, subject) for pattern in self.subjects)


class ConsumerRegistry:
    """A set of consumers, keyed by durable name; `consumer` is its decorator."""

    def __init__(self) -> None:
        self._consumers: dict[str, Consumer] = {}

    def __iter__(self) -> Iterator[Consumer]:
        return iter(list(self._consumers.values()))

    def __len__(self) -> int:
        return len(self._consumers)

    def add(self, consumer: Consumer) -> Consumer:
        """Register *consumer*; a durable name can be registered once."""
        if consumer.durable in self._consumers:
            raise ValueError(f"a consumer named {consumer.durable!r} is already registered")
        self._consumers[consumer.durable] = consumer
        return consumer

    def consumer(
        self,
        *,
        durable: str,
        subjects: Sequence[str],
        max_deliver: int = 5,
        concurrency: int = 8,
        ack_wait: float = 30.0,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        batch_size: int = 1,
    ) -> Callable[[EventHandler], EventHandler]:
        """Register the decorated ``async def handler(event, session)``; see `Consumer`."""

        def register(handler: EventHandler) -> EventHandler:
            self.add(
                Consumer(
                    durable=durable,
                    subjects=tuple(subjects),
                    handler=handler,
                    max_deliver=max_deliver,
                    concurrency=concurrency,
                    ack_wait=ack_wait,
                    retry_base=retry_base,
                    retry_max=retry_max,
                    batch_size=batch_size,
                )
            )
            return handler

        return register


#: The registry `consumer` adds to and `Worker` runs by default.
registry = ConsumerRegistry()
consumer = registry.consumer


async def record_in_inbox(session: AsyncSession, consumer: str, message_id: str) -> bool:
    """Insert the inbox row of (*consumer*, *message_id*) in *session*'s transaction.

    Returns:
        False when the row already exists: the message was processed before. On
        PostgreSQL a concurrent insert of the same row waits for the other
        transaction and then sees it.
    """
    row = {"consumer": consumer, "message_id": message_id, "processed_at": datetime.now(UTC)}
    if dialect_of(session) == "sqlite":  # one hop, without the session's statement machinery
        return bool(await insert_new_rows(session, inbox, [row], "message_id"))
    result = await session.execute(_inbox_insert("postgresql"), row)
    return affected_rows(result) > 0


async def record_many_in_inbox(
    session: AsyncSession, consumer: str, message_ids: Sequence[str]
) -> set[str]:
    """Insert the inbox rows of *message_ids* for *consumer* with one statement.

    Returns:
        The ids whose row is new (the others were processed before).
    """
    now = datetime.now(UTC)
    rows = [
        {"consumer": consumer, "message_id": message_id, "processed_at": now}
        for message_id in dict.fromkeys(message_ids)
    ]
    if dialect_of(session) == "sqlite":
        return set(await insert_new_rows(session, inbox, rows, "message_id"))
    # An executemany with RETURNING: SQLAlchemy sends it as one multi-row statement
    # ("insertmanyvalues"), compiled once instead of once per batch.
    result = await session.execute(_inbox_insert_returning("postgresql"), rows)
    return set(result.scalars())


@functools.cache
def _inbox_insert(dialect: str) -> Any:
    # Built once per backend: one compiled statement from SQLAlchemy's cache.
    return insert_ignoring_conflicts_for(dialect, inbox)


@functools.cache
def _inbox_insert_returning(dialect: str) -> Any:
    return _inbox_insert(dialect).returning(inbox.c.message_id)


class Worker:
    """Runs consumers on a bus: inbox, retries with delay, dead letters, replays, purges.

    For each delivery, the handler's writes and the inbox row ``(durable, event id)``
    commit in one transaction, and the delivery is acknowledged only after that
    commit. A delivery whose inbox row exists is acknowledged without running the
    handler. A failed attempt is redelivered after an exponential, jittered delay;
    after ``max_deliver`` attempts (or at once on `Unprocessable`, or for a body
    that is not an envelope) the message is written to ``dead_letters`` and
    terminated. Handlers run with the event's correlation id and with the event
    as the cause, so events they emit carry ``causationid`` = the event's id.

    On `InProcessBus`, whose queues do not survive the process, `start` first
    hands each group the published events its inbox and dead letters do not know.

    Args:
        database: where the inbox, the handlers' data and the dead letters live.
        bus: where messages come from.
        consumers: what to run; the default registry by default.
        inbox_retention: how long inbox rows are kept (the duplicate guard's memory).
        replay_poll: seconds between looks for replay requests.
        purge_interval: seconds between inbox purges; 0 disables them.
        subject_prefix: the relay's subject prefix (for the in-process recovery).
        registry: where deliveries are counted (``seawall_consumer_*``); the
            default registry if omitted.
    """

    def __init__(
        self,
        database: Database,
        bus: Bus,
        consumers: Iterable[Consumer] = registry,
        *,
        inbox_retention: timedelta = timedelta(days=7),
        replay_poll: float = 1.0,
        purge_interval: float = 3600.0,
        subject_prefix: str = SUBJECT_PREFIX,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._db = database
        self._bus = bus
        self.consumers = {c.durable: c for c in consumers}
        self.metrics = ConsumerMetrics(registry)
        self.inbox_retention = inbox_retention
        self.replay_poll = replay_poll
        self.purge_interval = purge_interval
        self.subject_prefix = subject_prefix
        self.dead_letters = DeadLetters(database)
        self._stopper = Stopper()
        # Failed attempts per (durable, message id) until success or dead letter.
        self._failures: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
        self._batches: dict[str, _Batches] = {}

    def __repr__(self) -> str:
        return f"Worker({sorted(self.consumers)}, {self._bus!r})"

    async def start(self) -> None:
        """Subscribe every consumer (and, on `InProcessBus`, recover queued messages)."""
        for spec in self.consumers.values():
            await self._bus.subscribe(
                spec.durable,
                spec.subjects,
                functools.partial(self.handle, spec),
                concurrency=spec.concurrency,
                ack_wait=spec.ack_wait,
            )
        if isinstance(self._bus, InProcessBus):
            recovered = await self._recover(self._bus)
            if recovered:
                log.info("consumer_messages_recovered", count=recovered)
        log.info("worker_started", consumers=sorted(self.consumers), bus=self._bus.kind)

    async def run(self) -> None:
        """`start`, then `serve` until cancelled."""
        await self.start()
        await self.serve()

    async def serve(self) -> None:
        """Serve replay requests and purge the inbox until `stop` (after `start`)."""
        tasks = [asyncio.create_task(self._replay_forever(), name="seawall-dlq-replay")]
        if self.purge_interval > 0:
            tasks.append(asyncio.create_task(self._purge_forever(), name="seawall-inbox-purge"))
        try:
            await asyncio.gather(*tasks)
        finally:
            self._stopper.stop()
            await finish(tasks, GRACE_SECONDS)

    def stop(self) -> None:
        """Ask `serve` to return after the replay or purge it is running."""
        self._stopper.stop()

    # -- one delivery -----------------------------------------------------------------

    async def handle(self, spec: Consumer, delivery: Delivery) -> None:
        """Process one delivery for *spec* and settle it (ack, delayed nak or dead letter)."""
        started = time.perf_counter()
        try:
            event = ReceivedEvent.model_validate_json(delivery.body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
            )
            await self._give_up(spec, delivery, None, f"not a CloudEvents envelope: {problems}")
            return
        self.metrics.observe_lag(spec.durable, (datetime.now(UTC) - event.time).total_seconds())
        heartbeat = (
            asyncio.create_task(self._heartbeat(delivery, spec.ack_wait))
            if type(delivery).in_progress is not Delivery.in_progress
            else None
        )
        try:
            with span(
                f"process {event.type}",
                kind="consumer",
                attributes={
                    "messaging.message.id": event.id,
                    "messaging.consumer.group.name": spec.durable,
                    "seawall.attempt": delivery.attempt,
                },
                carrier=event.model_extra,  # traceparent: the tracing extension
                correlation_id=event.correlationid,
            ):
                if spec.batch_size > 1:
                    applied = await self._batch_of(spec).submit(event)
                else:
                    applied = await self.apply(spec, event)
        except Unprocessable as exc:
            await self._give_up(spec, delivery, event, f"unprocessable: {exc}")
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if delivery.attempt >= spec.max_deliver:
                await self._give_up(spec, delivery, event, error)
                return
            self._remember_failure(spec.durable, event.id, delivery.attempt, error)
            delay = spec.backoff(delivery.attempt)
            log.warning(
                "consumer_attempt_failed",
                consumer=spec.durable,
                event_id=event.id,
                attempt=delivery.attempt,
                retry_in=round(delay, 3),
                error=type(exc).__name__,
            )
            await delivery.nak(delay)
            self.metrics.observe(spec.durable, "retried", time.perf_counter() - started)
            return
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
        self._failures.pop((spec.durable, event.id), None)
        await delivery.ack()
        self.metrics.observe(
            spec.durable, "handled" if applied else "duplicate", time.perf_counter() - started
        )
        if not applied:
            log.debug("consumer_duplicate_skipped", consumer=spec.durable, event_id=event.id)

    async def apply(self, spec: Consumer, event: Event) -> bool:
        """Run *spec*'s handler for *event* with its inbox row, in one transaction.

        Returns:
            False when the inbox already had the event (nothing ran).
        """

        async def first_time(session: AsyncSession) -> bool:
            return await record_in_inbox(session, spec.durable, event.id)

        return await self._run(spec, event, first_time)

    async def apply_many(self, spec: Consumer, events: Sequence[Event]) -> list[bool]:
        """Run *spec*'s handler for each of *events* in one transaction, with one inbox insert.

        An event whose inbox row exists (or that came earlier in *events*) is
        skipped. If a handler raises, nothing of the batch is committed.

        Returns:
            For each event, whether its handler ran.
        """
        async with self._db.transaction() as session:
            return await self._apply_in(spec, session, events)

    async def _apply_in(
        self, spec: Consumer, session: AsyncSession, events: Sequence[Event]
    ) -> list[bool]:
        """`apply_many` in *session*'s transaction (one event: `apply`'s single inbox row)."""
        if len(events) == 1:
            first = await record_in_inbox(session, spec.durable, events[0].id)
            return await self._handle_fresh(
                spec, session, events, {events[0].id} if first else set()
            )
        fresh = await record_many_in_inbox(session, spec.durable, [e.id for e in events])
        return await self._handle_fresh(spec, session, events, fresh)

    async def _apply_riding(
        self, spec: Consumer, session: AsyncSession, events: Sequence[Event]
    ) -> list[bool]:
        """A live batch on SQLite: *events*' inbox rows ride along, then the handlers run.

        No hop of its own: the rows go with the transaction's next statement, or with
        its ``COMMIT``. A row already in the inbox (a redelivery) makes that fail,
        and the transaction with it; `_Batches` then runs each delivery alone, with
        the inbox checked first. So the handler of a redelivered event may run in a
        transaction that is rolled back: batching consumers' handlers have only
        database effects (see `Consumer`). A second copy in *events* is skipped.
        """
        ids = dict.fromkeys(event.id for event in events)
        now = datetime.now(UTC)
        rows = [
            {"consumer": spec.durable, "message_id": message_id, "processed_at": now}
            for message_id in ids
        ]
        await insert_rows(session, inbox, rows, along=True)
        return await self._handle_fresh(spec, session, events, set(ids))

    @staticmethod
    async def _handle_fresh(
        spec: Consumer, session: AsyncSession, events: Sequence[Event], fresh: set[str]
    ) -> list[bool]:
        """Run the handler for each event whose id is in *fresh*, once per id; which ran."""
        applied: list[bool] = []
        for event in events:
            first = event.id in fresh
            fresh.discard(event.id)  # a second copy in the batch is a duplicate
            if first:
                with bind_correlation(*_context_of(event)):
                    await spec.handler(event, session)
            applied.append(first)
        return applied

    def _batch_of(self, spec: Consumer) -> _Batches:
        batches = self._batches.get(spec.durable)
        if batches is None:
            batches = self._batches[spec.durable] = _Batches(self, spec)
        return batches

    async def _run(self, spec: Consumer, event: Event, admit: _Hook) -> bool:
        """Run the handler in one transaction after *admit* (which writes the inbox row)."""
        async with self._db.transaction() as session:
            if not await admit(session):
                return False
            with bind_correlation(*_context_of(event)):
                await spec.handler(event, session)
        return True

    def _remember_failure(self, durable: str, message_id: str, attempt: int, error: str) -> None:
        key = (durable, message_id)
        entries = self._failures.pop(key, [])
        entries.append(
            {"attempt": attempt, "at": datetime.now(UTC).isoformat(), "error": error[:2000]}
        )
        self._failures[key] = entries[-HISTORY_LIMIT:]
        while len(self._failures) > _FAILURES_KEPT:
            self._failures.popitem(last=False)

    async def _give_up(
        self, spec: Consumer, delivery: Delivery, event: Event | None, error: str
    ) -> None:
        message_id = event.id if event else delivery.message_id
        earlier = self._failures.get((spec.durable, message_id), [])
        try:
            async with self._db.transaction() as session:
                await self.dead_letters.record(
                    session,
                    consumer=spec.durable,
                    message_id=message_id,
                    subject=delivery.subject,
                    event_type=event.type if event else None,
                    body=delivery.body.decode("utf-8", "replace"),
                    error=error,
                    attempt=delivery.attempt,
                    earlier=earlier,
                )
        except (SQLAlchemyError, DatabaseError, OSError) as exc:
            # Not recorded, so not given up: try again later.
            log.warning("dead_letter_failed", consumer=spec.durable, error=type(exc).__name__)
            await delivery.nak(spec.backoff(delivery.attempt))
            return
        self._failures.pop((spec.durable, message_id), None)
        log.error(
            "consumer_dead_lettered",
            consumer=spec.durable,
            message_id=message_id,
            attempts=delivery.attempt,
            error=error[:300],
        )
        self.metrics.messages.labels(spec.durable, "dead_lettered").inc()
        await self._bus.dead_letter(spec.durable, delivery, error)
        await delivery.term()

    @staticmethod
    async def _heartbeat(delivery: Delivery, ack_wait: float) -> None:
        while True:
            await asyncio.sleep(max(0.5, ack_wait / 3))
            with contextlib.suppress(Exception):
                await delivery.in_progress()

    # -- replays ---------------------------------------------------------------------

    async def replay(self, dead_letter_id: int) -> bool:
        """Hand a dead letter in state ``replay`` to its handler again, through the inbox.

        The row turns ``replayed`` in the handler's transaction; if the handler
        fails, it goes back to ``dead`` with one more attempt in its history.

        Returns:
            Whether this worker took the replay (False if another did, or it is
            not waiting for one, or its consumer does not run here).
        """
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
        if row is None or row["state"] != "replay" or row["consumer"] not in self.consumers:
            return False
        spec = self.consumers[row["consumer"]]
        taken = False

        async def take(session: AsyncSession) -> bool:
            nonlocal taken
            now = datetime.now(UTC)
            result = await session.execute(
                dead_letters.update()
                .where(dead_letters.c.id == dead_letter_id, dead_letters.c.state == "replay")
                .values(state="replayed", replayed_at=now, updated_at=now)
            )
            taken = affected_rows(result) > 0
            if taken and not await record_in_inbox(session, spec.durable, row["message_id"]):
                return False  # processed meanwhile: the replay is done, nothing runs
            return taken

        try:
            event = ReceivedEvent.model_validate_json(row["body"])
            if event.id != row["message_id"]:
                raise Unprocessable("the body's id does not match the dead letter's message id")
            await self._run(spec, event, take)
        except Exception as exc:
            async with self._db.transaction() as session:
                await self.dead_letters.record(
                    session,
                    consumer=spec.durable,
                    message_id=row["message_id"],
                    subject=row["subject"],
                    event_type=row["event_type"],
                    body=row["body"],
                    error=f"replay: {type(exc).__name__}: {exc}",
                    attempt=row["attempts"] + 1,
                )
            log.warning("dead_letter_replay_failed", id=dead_letter_id, error=type(exc).__name__)
            return True
        if taken:
            log.info("dead_letter_replayed", id=dead_letter_id, consumer=spec.durable)
        return taken

    async def _replay_forever(self) -> None:
        durables = sorted(self.consumers)
        while not self._stopper.stopping:
            try:
                for dead_letter_id in await self.dead_letters.replay_requests(durables):
                    await self.replay(dead_letter_id)
            except (SQLAlchemyError, DatabaseError, OSError) as exc:
                log.warning("dead_letter_replay_poll_failed", error=type(exc).__name__)
            await self._stopper.pause(self.replay_poll)

    # -- housekeeping ----------------------------------------------------------------

    async def purge_inbox(self, *, batch: int = 1000) -> int:
        """Delete inbox rows older than ``inbox_retention``, *batch* rows per transaction."""
        cutoff = datetime.now(UTC) - self.inbox_retention
        total = 0
        while True:
            chosen = (
                sa.select(inbox.c.consumer, inbox.c.message_id)
                .where(inbox.c.processed_at < cutoff)
                .limit(batch)
            )
            async with self._db.transaction() as session:
                result = await session.execute(
                    inbox.delete().where(
                        sa.tuple_(inbox.c.consumer, inbox.c.message_id).in_(chosen)
                    )
                )
            total += affected_rows(result)
            if affected_rows(result) < batch or self._stopper.stopping:
                return total
            await asyncio.sleep(0.05)

    async def _purge_forever(self) -> None:
        while not self._stopper.stopping:
            try:
                removed = await self.purge_inbox()
                if removed:
                    log.info("inbox_purged", count=removed)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("inbox_purge_failed", error=type(exc).__name__)
            await self._stopper.pause(self.purge_interval)

    async def _recover(self, bus: InProcessBus) -> int:
        """Queue, per group, published events that its inbox and dead letters do not have."""
        total = 0
        for spec in self.consumers.values():
            seen = sa.select(inbox.c.message_id).where(inbox.c.consumer == spec.durable)
            dead = sa.select(dead_letters.c.message_id).where(
                dead_letters.c.consumer == spec.durable
            )
            query = (
                sa.select(*_SELECTED)
                .where(
                    outbox.c.published_at.is_not(None),
                    # Older events may have left the inbox already: not redelivered.
                    outbox.c.published_at >= datetime.now(UTC) - self.inbox_retention,
                    outbox.c.event_id.not_in(seen),
                    outbox.c.event_id.not_in(dead),
                )
                .order_by(outbox.c.seq)
            )
            async with self._db.reading() as session:
                rows = (await session.execute(query)).mappings().all()
            for row in rows:
                message = outbox_message(row, prefix=self.subject_prefix)
                if spec.wants(message.subject):
                    bus.deliver(spec.durable, message)
                    total += 1
        return total


_Hook = Callable[[AsyncSession], Awaitable[bool]]


def _context_of(event: Event) -> tuple[str, str | None]:
    """The correlation and causation ids a handler of *event* runs with."""
    correlation = event.correlationid
    if correlation is None or not valid_correlation_id(correlation):
        correlation = new_correlation_id()
    return correlation, event.id if valid_correlation_id(event.id) else None


class _Batches:
    """Group commit for one batching consumer: deliveries ready together share a transaction.

    The first delivery to arrive starts a drain task. Each batch is formed once its
    transaction has begun (on SQLite, once it has the write turn): whatever came
    in meanwhile, up to ``batch_size``, and nothing waits for a batch to fill.
    Deliveries that arrive while a batch runs wait for the next one.
    """

    def __init__(self, worker: Worker, spec: Consumer) -> None:
        self._worker = worker
        self._spec = spec
        self._waiting: list[tuple[Event, asyncio.Future[bool]]] = []
        self._batch: list[tuple[Event, asyncio.Future[bool]]] = []  # the one running
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> bool:
        """Apply *event* in the next batch; raises what its handler raised."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain(), name="seawall-consumer-batch")
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._run_next()
        finally:
            self._draining = None
            # Cancelled (a shutdown): nothing of these committed; as a failed attempt,
            # each delivery is handed back for a later redelivery.
            for _event, future in [*self._batch, *self._waiting]:
                if not future.done():
                    future.set_exception(RuntimeError("the consumer's batch was stopped"))
            self._batch, self._waiting = [], []

    def _take(self) -> list[tuple[Event, asyncio.Future[bool]]]:
        size = self._spec.batch_size
        self._batch, self._waiting = self._waiting[:size], self._waiting[size:]
        return self._batch

    async def _run_next(self) -> None:
        worker, spec = self._worker, self._spec
        riding = False
        try:
            async with worker._db.transaction() as session:
                # Formed now: the deliveries that came in while the transaction waited
                # for its turn go in it too, instead of each waiting for a turn of its own.
                events = [event for event, _ in self._take()]
                if riding := worker._db.dialect == "sqlite":
                    applied = await worker._apply_riding(spec, session, events)
                else:
                    applied = await worker._apply_in(spec, session, events)
        except Exception as exc:
            formed = bool(self._batch)
            if not formed:  # the transaction never began (the turn or the database did not come)
                self._take()
            # Riding, a redelivered event fails the batch: each runs alone, inbox first.
            if not formed or (len(self._batch) == 1 and not riding):
                for _event, future in self._batch:  # each delivery is retried later
                    if not future.done():
                        future.set_exception(exc)
            else:
                log.info(
                    "consumer_batch_rolled_back",
                    consumer=spec.durable,
                    size=len(self._batch),
                    error=type(exc).__name__,
                )
                await self._alone()
            self._batch = []
            return
        for (_event, future), ran in zip(self._batch, applied, strict=True):
            if not future.done():
                future.set_result(ran)
        self._batch = []

    async def _alone(self) -> None:
        """The batch's deliveries each in a transaction of its own: only the failing one fails."""
        for event, future in self._batch:
            try:
                ran = await self._worker.apply(self._spec, event)
            except Exception as exc:  # handed to the delivery's own handling
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(ran)


# Messages whose failed attempts a worker remembers for their dead letter's history.
_FAILURES_KEPT = 10_000
