"""Consumers and the `Worker`: inbox, retries with delay, dead letters, fan-out, recovery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, case_activity, dead_letters, inbox, insert_rows, outbox
from seawall.errors import Unprocessable
from seawall.messaging import (
    Consumer,
    ConsumerRegistry,
    DeadLetters,
    Delivery,
    Event,
    InProcessBus,
    Message,
    Outbox,
    OutboxRelay,
    Worker,
    record_in_inbox,
)
from seawall.observability import valid_correlation_id
from tests.messaging.conftest import (
    RecordingBus,
    RecordingDelivery,
    add_events,
    count_rows,
    eventually,
    make_event,
    only_sqlite,
    outbox_row,
)

SUBJECTS = ("seawall.cases.>",)


def _activity_row(event: Event) -> dict[str, Any]:
    return {
        "case_id": event.subject or "-",
        "event_id": event.id,
        "event_type": event.type,
        "summary": "handled",
        "correlation_id": event.correlationid,
        "occurred_at": event.time,
        "recorded_at": datetime.now(UTC),
    }


async def _write_activity(event: Event, session: AsyncSession) -> None:
    """A handler's own write: one timeline row per event."""
    await session.execute(case_activity.insert().values(**_activity_row(event)))


class Handler:
    """A handler that records its calls, writes a row, and fails as told."""

    def __init__(self, *, failures: int = 0, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.failures = failures
        self.error = error or RuntimeError("handler broke")

    async def __call__(self, event: Event, session: AsyncSession) -> None:
        self.calls.append(event.id)
        await _write_activity(event, session)
        if self.failures:
            self.failures -= 1
            raise self.error


def _spec(handler: Callable[[Event, AsyncSession], Awaitable[None]], **options: Any) -> Consumer:
    values: dict[str, Any] = {"retry_base": 0.01, "retry_max": 0.05, **options}
    return Consumer(durable="tests", subjects=SUBJECTS, handler=handler, **values)


def _message(event: Event) -> Message:
    return Message(id=event.id, subject="seawall.cases." + event.type, body=_body(event))


def _body(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


async def _inbox_has(database: Database, consumer: str, event_id: str) -> bool:
    where = (inbox.c.consumer == consumer, inbox.c.message_id == event_id)
    return await count_rows(database, inbox, *where) == 1


async def _activity_count(database: Database, event_id: str | None = None) -> int:
    where = () if event_id is None else (case_activity.c.event_id == event_id,)
    return await count_rows(database, case_activity, *where)


# -- the consumer spec and the registry ---------------------------------------------------


def test_the_registry_decorator_registers_a_consumer_once() -> None:
    registry = ConsumerRegistry()

    @registry.consumer(durable="audit", subjects=["seawall.cases.>"], max_deliver=3)
    async def audit(event: Event, session: AsyncSession) -> None: ...

    [registered] = list(registry)
    assert (registered.durable, registered.subjects, registered.handler) == (
        "audit",
        ("seawall.cases.>",),
        audit,
    )
    assert registered.max_deliver == 3
    assert len(registry) == 1
    with pytest.raises(ValueError, match="already registered"):
        registry.consumer(durable="audit", subjects=["seawall.x.>"])(audit)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"durable": "has space"}, "durable name"),
        ({"durable": ""}, "durable name"),
        ({"subjects": ()}, "non-empty"),
        ({"subjects": ("seawall.>.x",)}, "last token"),
        ({"subjects": ("seawall.ca*",)}, "invalid subject"),
        ({"max_deliver": 0}, "at least 1"),
        ({"concurrency": 0}, "at least 1"),
        ({"batch_size": 0}, "at least 1"),
    ],
)
def test_a_consumer_with_bad_options_is_refused(options: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"durable": "ok", "subjects": ("seawall.>",), **options}

    with pytest.raises(ValueError, match=message):
        Consumer(handler=Handler(), **values)


def test_a_consumer_wants_the_subjects_its_patterns_match() -> None:
    spec = Consumer(
        durable="x", subjects=("seawall.cases.*.created", "seawall.billing.>"), handler=Handler()
    )

    assert spec.wants("seawall.cases.case.created")
    assert spec.wants("seawall.billing.invoice.paid")
    assert not spec.wants("seawall.cases.case.closed")
    assert not spec.wants("seawall.billing")


def test_consumer_backoff_doubles_per_attempt_up_to_the_cap() -> None:
    spec = Consumer(
        durable="x", subjects=SUBJECTS, handler=Handler(), retry_base=1.0, retry_max=5.0
    )

    assert all(0.5 <= spec.backoff(1) <= 1.0 for _ in range(50))
    assert all(2.0 <= spec.backoff(3) <= 4.0 for _ in range(50))
    assert all(2.5 <= spec.backoff(9) <= 5.0 for _ in range(50))


# -- one delivery: Worker.handle ----------------------------------------------------------


async def test_the_handlers_writes_and_the_inbox_row_commit_together(
    database: Database, bus: RecordingBus
) -> None:
    handler = Handler()
    spec = _spec(handler)
    worker = Worker(database, bus, [spec])
    event = make_event("c1")
    delivery = RecordingDelivery.of(_message(event))

    await worker.handle(spec, delivery)

    assert delivery.outcome == "ack"
    assert handler.calls == [event.id]
    assert await _inbox_has(database, "tests", event.id)
    assert await _activity_count(database, event.id) == 1


async def test_a_failing_handler_writes_nothing_and_is_naked_with_a_delay(
    database: Database, bus: RecordingBus
) -> None:
    handler = Handler(failures=1)
    spec = _spec(handler, retry_base=2.0, retry_max=10.0)
    worker = Worker(database, bus, [spec])
    event = make_event("c1")
    delivery = RecordingDelivery.of(_message(event), attempt=2)

    await worker.handle(spec, delivery)

    [(outcome, delay)] = delivery.settled
    assert outcome == "nak"
    assert delay is not None
    assert 2.0 <= delay <= 4.0
    assert handler.calls == [event.id]
    assert not await _inbox_has(database, "tests", event.id)
    assert await _activity_count(database) == 0
    assert await count_rows(database, dead_letters) == 0


async def test_a_duplicate_delivery_is_acked_without_running_the_handler(
    database: Database, bus: RecordingBus
) -> None:
    handler = Handler()
    spec = _spec(handler)
    worker = Worker(database, bus, [spec])
    message = _message(make_event("c1"))
    first, duplicate = RecordingDelivery.of(message), RecordingDelivery.of(message, attempt=2)

    await worker.handle(spec, first)
    await worker.handle(spec, duplicate)

    assert (first.outcome, duplicate.outcome) == ("ack", "ack")
    assert handler.calls == [message.id]
    assert await _activity_count(database) == 1


async def test_apply_says_whether_the_handler_ran(database: Database, bus: RecordingBus) -> None:
    handler = Handler()
    spec = _spec(handler)
    worker = Worker(database, bus, [spec])
    event = make_event("c1")

    first = await worker.apply(spec, event)
    second = await worker.apply(spec, event)

    assert (first, second) == (True, False)
    assert handler.calls == [event.id]


async def test_on_sqlite_a_delivery_costs_two_hops_with_its_inbox_row_in_the_first(
    database: Database, bus: RecordingBus, hops: list[str]
) -> None:
    if database.dialect != "sqlite":
        pytest.skip("hops to aiosqlite's thread are SQLite's")
    entered: list[str] = []

    async def note(event: Event, session: AsyncSession) -> None:
        entered.append(event.id)

    spec = _spec(note, batch_size=10)
    worker = Worker(database, bus, [spec])
    single, second, third = make_event("c1"), make_event("c2"), make_event("c3")
    async with database.transaction() as session:  # the pool's connection opened beforehand
        await session.execute(sa.text("SELECT 1"))
    hops.clear()

    ran = await worker.apply(spec, single)
    single_hops = list(hops)
    hops.clear()
    ran_batched = await worker.apply_many(spec, [second, third, single])

    # BEGIN IMMEDIATE with the inbox insert, then COMMIT: nothing more on the raw path
    assert single_hops == ["_run", "commit"]
    assert hops == ["_run", "commit"]
    assert (ran, ran_batched) == (True, [True, True, False])
    assert entered == [single.id, second.id, third.id]
    for event in (single, second, third):
        assert await _inbox_has(database, "tests", event.id)


@only_sqlite
async def test_on_sqlite_a_live_batch_costs_one_hop_its_inbox_rows_riding_with_the_commit(
    database: Database, bus: RecordingBus, hops: list[str]
) -> None:
    async def ride_along(event: Event, session: AsyncSession) -> None:
        await insert_rows(session, case_activity, [_activity_row(event)], along=True)

    spec = _spec(ride_along, batch_size=10)
    worker = Worker(database, bus, [spec])
    events = [make_event(f"c{i}") for i in range(3)]
    async with database.transaction() as session:  # the writer connection opened beforehand
        await session.execute(sa.text("SELECT 1"))
    hops.clear()

    outcomes = await _handle_together(worker, spec, *events)

    assert outcomes == ["ack"] * 3
    assert hops == ["_commit"]  # BEGIN IMMEDIATE, the inbox rows, the activity rows, COMMIT
    for event in events:
        assert await _inbox_has(database, "tests", event.id)
        assert await _activity_count(database, event.id) == 1


@only_sqlite
async def test_a_redelivered_event_in_a_live_batch_is_skipped_and_the_others_commit_once(
    database: Database, bus: RecordingBus
) -> None:
    handled: list[str] = []

    async def handler(event: Event, session: AsyncSession) -> None:
        handled.append(event.id)
        await _write_activity(event, session)

    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    seen, fresh = make_event("c1"), make_event("c2")
    assert await worker.apply(spec, seen)

    outcomes = await _handle_together(worker, spec, seen, fresh, fresh)

    assert outcomes == ["ack"] * 3
    # The batch failed on its inbox rows (at the handler's first statement, which
    # they rode with) and rolled back; then each ran alone, the inbox checked first:
    # the redelivered one not at all.
    assert handled == [seen.id, seen.id, fresh.id]  # first when it was applied above
    assert await _activity_count(database, seen.id) == 1
    assert await _activity_count(database, fresh.id) == 1
    assert await _inbox_has(database, "tests", fresh.id)


@only_sqlite
async def test_two_copies_in_one_live_batch_run_once(database: Database, bus: RecordingBus) -> None:
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    event = make_event("c1")

    outcomes = await _handle_together(worker, spec, event, event)

    assert outcomes == ["ack", "ack"]
    assert handler.calls == [event.id]
    assert await _inbox_has(database, "tests", event.id)


# -- batching consumers: deliveries ready together share a transaction ------------------------


class SessionsSeen(Handler):
    """A `Handler` that also notes the session each event was handled in."""

    def __init__(self, *, fail_on: set[str] | None = None) -> None:
        super().__init__()
        # The sessions themselves, kept alive: an id() could be reused by the next one.
        self.sessions: dict[str, AsyncSession] = {}
        self.fail_on = fail_on or set()

    async def __call__(self, event: Event, session: AsyncSession) -> None:
        self.sessions[event.id] = session
        await super().__call__(event, session)
        if event.id in self.fail_on:
            raise RuntimeError("this one breaks")


async def _handle_together(worker: Worker, spec: Consumer, *events: Event) -> list[str]:
    deliveries = [RecordingDelivery.of(_message(event)) for event in events]
    await asyncio.gather(*(worker.handle(spec, delivery) for delivery in deliveries))
    return [delivery.outcome for delivery in deliveries]


async def test_deliveries_ready_together_share_one_transaction_and_one_inbox_insert(
    database: Database, bus: RecordingBus
) -> None:
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    events = [make_event(f"c{i}") for i in range(5)]

    outcomes = await _handle_together(worker, spec, *events)

    assert outcomes == ["ack"] * 5
    assert handler.calls == [event.id for event in events]
    assert len({id(session) for session in handler.sessions.values()}) == 1
    for event in events:
        assert await _inbox_has(database, "tests", event.id)
        assert await _activity_count(database, event.id) == 1


@only_sqlite
async def test_deliveries_that_come_while_a_batch_waits_for_the_write_turn_join_it(
    database: Database, bus: RecordingBus
) -> None:
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    first, *later = [RecordingDelivery.of(_message(make_event(f"c{i}"))) for i in range(3)]

    async with database.write_turn():  # a producer's transaction, say
        handling = [asyncio.create_task(worker.handle(spec, first))]
        await asyncio.sleep(0.05)  # its batch is waiting for the turn now
        handling += [asyncio.create_task(worker.handle(spec, d)) for d in later]
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*handling), 10)

    assert [d.outcome for d in (first, *later)] == ["ack"] * 3
    assert len(handler.calls) == 3
    assert len({id(session) for session in handler.sessions.values()}) == 1  # one transaction


@only_sqlite
async def test_deliveries_whose_batch_never_got_the_write_turn_are_retried_later(
    database_url: str, bus: RecordingBus
) -> None:
    database = Database(database_url, timeout=0.2)
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    deliveries = [RecordingDelivery.of(_message(make_event(f"c{i}"))) for i in range(3)]
    try:
        async with database.write_turn():  # held past the database's timeout
            handling = asyncio.gather(*(worker.handle(spec, d) for d in deliveries))
            await asyncio.wait_for(handling, 10)
        assert [d.outcome for d in deliveries] == ["nak"] * 3
        assert handler.calls == []

        await asyncio.wait_for(asyncio.gather(*(worker.handle(spec, d) for d in deliveries)), 10)
        assert len(handler.calls) == 3
    finally:
        await database.dispose()


async def test_a_batch_is_never_larger_than_its_batch_size(
    database: Database, bus: RecordingBus
) -> None:
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=2)
    worker = Worker(database, bus, [spec])
    events = [make_event(f"c{i}") for i in range(5)]

    await _handle_together(worker, spec, *events)

    per_session: dict[int, int] = {}
    for session in handler.sessions.values():
        per_session[id(session)] = per_session.get(id(session), 0) + 1
    assert sorted(per_session.values()) == [1, 2, 2]


async def test_a_failing_handler_in_a_batch_fails_alone_and_the_others_commit_once(
    database: Database, bus: RecordingBus
) -> None:
    events = [make_event(f"c{i}") for i in range(4)]
    broken = events[2]
    handler = SessionsSeen(fail_on={broken.id})
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])

    outcomes = await _handle_together(worker, spec, *events)

    assert outcomes == ["ack", "ack", "nak", "ack"]
    # The batch ran up to the broken one and was rolled back; then each ran alone.
    assert handler.calls == [e.id for e in events[:3]] + [e.id for e in events]
    for event in events:
        expected = 0 if event is broken else 1
        assert await _activity_count(database, event.id) == expected
        assert await _inbox_has(database, "tests", event.id) is (event is not broken)


async def test_a_batch_skips_events_its_inbox_has_and_copies_within_the_batch(
    database: Database, bus: RecordingBus
) -> None:
    handler = SessionsSeen()
    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])
    seen, fresh = make_event("c1"), make_event("c2")
    await worker.apply(spec, seen)
    handler.calls.clear()

    applied = await worker.apply_many(spec, [seen, fresh, fresh])

    assert applied == [False, True, False]
    assert handler.calls == [fresh.id]
    assert await _activity_count(database) == 2


async def test_unprocessable_in_a_batch_dead_letters_only_that_event(
    database: Database, bus: RecordingBus
) -> None:
    events = [make_event(f"c{i}") for i in range(3)]

    async def handler(event: Event, session: AsyncSession) -> None:
        await _write_activity(event, session)
        if event is events[1] or event.id == events[1].id:
            raise Unprocessable("no such customer")

    spec = _spec(handler, batch_size=10)
    worker = Worker(database, bus, [spec])

    outcomes = await _handle_together(worker, spec, *events)

    assert outcomes == ["ack", "term", "ack"]
    assert await count_rows(database, dead_letters) == 1
    assert await _activity_count(database) == 2


async def test_the_last_allowed_attempt_that_fails_is_dead_lettered(
    database: Database, bus: RecordingBus
) -> None:
    handler = Handler(failures=1, error=KeyError("customer"))
    spec = _spec(handler, max_deliver=3)
    worker = Worker(database, bus, [spec])
    event = make_event("c1", type="case.created")
    delivery = RecordingDelivery.of(_message(event), attempt=3)

    await worker.handle(spec, delivery)

    assert delivery.outcome == "term"
    [letter] = await DeadLetters(database).list()
    assert (letter.consumer, letter.message_id, letter.state) == ("tests", event.id, "dead")
    assert letter.event_type == "case.created"
    assert letter.subject == "seawall.cases.case.created"
    assert letter.body == delivery.body.decode()
    assert letter.error == "KeyError: 'customer'"
    assert letter.attempts == 3
    assert letter.history[-1]["attempt"] == 3
    assert letter.history[-1]["error"] == "KeyError: 'customer'"
    assert bus.dead_lettered == [("tests", event.id, "KeyError: 'customer'")]
    assert not await _inbox_has(database, "tests", event.id)
    assert await _activity_count(database) == 0


async def test_unprocessable_dead_letters_at_once(database: Database, bus: RecordingBus) -> None:
    handler = Handler(failures=1, error=Unprocessable("no such customer"))
    spec = _spec(handler, max_deliver=5)
    worker = Worker(database, bus, [spec])
    event = make_event("c1")
    delivery = RecordingDelivery.of(_message(event), attempt=1)

    await worker.handle(spec, delivery)

    assert delivery.outcome == "term"
    [letter] = await DeadLetters(database).list()
    assert letter.error == "unprocessable: no such customer"
    assert letter.attempts == 1
    assert await _activity_count(database) == 0
    assert not await _inbox_has(database, "tests", event.id)


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b'{"hello": "world"}', b'{"specversion": "1.0", "id": "x"}', b"\xff\xfe"],
)
async def test_a_body_that_is_not_an_envelope_is_dead_lettered_with_a_clear_error(
    database: Database, bus: RecordingBus, body: bytes
) -> None:
    handler = Handler()
    spec = _spec(handler)
    worker = Worker(database, bus, [spec])
    delivery = RecordingDelivery(body, message_id="msg-1", subject="seawall.cases.case.created")

    await worker.handle(spec, delivery)

    assert delivery.outcome == "term"
    assert handler.calls == []
    [letter] = await DeadLetters(database).list()
    assert letter.message_id == "msg-1"
    assert letter.event_type is None
    assert letter.subject == "seawall.cases.case.created"
    assert letter.error.startswith("not a CloudEvents envelope: ")
    assert letter.attempts == 1
    assert letter.body == body.decode("utf-8", "replace")


async def test_events_a_handler_emits_are_caused_by_the_event_it_handles(
    database: Database, bus: RecordingBus
) -> None:
    emitted: list[Event] = []

    async def react(event: Event, session: AsyncSession) -> None:
        follow_up = Event.create("case.escalated", source="/seawall/escalations", subject="c1")
        await Outbox().add(session, follow_up)
        emitted.append(follow_up)

    spec = _spec(react)
    worker = Worker(database, bus, [spec])
    trigger = make_event("c1", correlation_id="corr-42")

    await worker.handle(spec, RecordingDelivery.of(_message(trigger)))

    [follow_up] = emitted
    row = await outbox_row(database, follow_up.id)
    assert (row["causation_id"], row["correlation_id"]) == (trigger.id, "corr-42")


async def test_events_a_failing_handler_emits_are_rolled_back_with_it(
    database: Database, bus: RecordingBus
) -> None:
    async def react(event: Event, session: AsyncSession) -> None:
        follow_up = Event.create("case.escalated", source="/seawall/escalations", subject="c1")
        await Outbox().add(session, follow_up)
        raise RuntimeError("after emitting")

    spec = _spec(react)
    worker = Worker(database, bus, [spec])
    delivery = RecordingDelivery.of(_message(make_event("c1")))

    await worker.handle(spec, delivery)

    assert delivery.outcome == "nak"
    assert await count_rows(database, outbox) == 0


async def test_an_event_without_correlation_gets_a_fresh_one_for_its_effects(
    database: Database, bus: RecordingBus
) -> None:
    emitted: list[Event] = []

    async def react(event: Event, session: AsyncSession) -> None:
        emitted.append(Event.create("case.escalated", source="/seawall/x", subject="c1"))

    spec = _spec(react)
    worker = Worker(database, bus, [spec])
    trigger = Event.create("case.created", source="/seawall/cases", subject="c1")
    assert trigger.correlationid is None

    await worker.handle(spec, RecordingDelivery.of(_message(trigger)))

    [follow_up] = emitted
    assert valid_correlation_id(follow_up.correlationid)
    assert follow_up.causationid == trigger.id


# -- on the in-process bus ----------------------------------------------------------------------


class CountingWorker(Worker):
    """A worker that notes each delivery it is handed, and each it has settled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []
        self.finished: list[str] = []

    async def handle(self, spec: Consumer, delivery: Delivery) -> None:
        self.started.append(delivery.message_id)
        try:
            await super().handle(spec, delivery)
        finally:
            self.finished.append(delivery.message_id)


def _quiet(
    bus: InProcessBus, durable: str, *workers: CountingWorker
) -> Callable[[], Awaitable[bool]]:
    """A check: nothing queued for *durable* and nothing being handled."""

    async def check() -> bool:
        return bus.pending(durable) == 0 and all(
            len(worker.started) == len(worker.finished) for worker in workers
        )

    return check


@asynccontextmanager
async def _running(bus: InProcessBus, *workers: Worker) -> AsyncIterator[None]:
    try:
        for worker in workers:
            await worker.start()
        yield
    finally:
        await bus.close()


async def test_a_failed_message_is_retried_after_a_delay_until_it_succeeds(
    database: Database,
) -> None:
    bus = InProcessBus()
    handler = Handler(failures=2)
    worker = Worker(database, bus, [_spec(handler, max_deliver=5)])
    event = make_event("c1")
    await add_events(database, event)

    async with _running(bus, worker):
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _inbox_has(database, "tests", event.id), "the third try commits")

    assert handler.calls == [event.id] * 3
    assert await _activity_count(database) == 1
    assert await count_rows(database, dead_letters) == 0


async def test_a_message_that_keeps_failing_is_dead_lettered_after_max_deliver(
    database: Database,
) -> None:
    bus = InProcessBus()
    handler = Handler(failures=1000)
    worker = Worker(database, bus, [_spec(handler, max_deliver=3)])
    event = make_event("c1")
    await add_events(database, event)

    async with _running(bus, worker):
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _dead_lettered(database), "the message is dead-lettered")

    assert handler.calls == [event.id] * 3
    [letter] = await DeadLetters(database).list()
    assert (letter.message_id, letter.state, letter.attempts) == (event.id, "dead", 3)
    assert letter.error == "RuntimeError: handler broke"
    assert letter.history[-1]["attempt"] == 3
    assert not await _inbox_has(database, "tests", event.id)


async def test_the_dead_letter_history_has_an_entry_per_failed_attempt(
    database: Database,
) -> None:
    bus = InProcessBus()
    handler = Handler(failures=1000)
    worker = Worker(database, bus, [_spec(handler, max_deliver=3)])
    event = make_event("c1")
    await add_events(database, event)

    async with _running(bus, worker):
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _dead_lettered(database), "the message is dead-lettered")

    [letter] = await DeadLetters(database).list()
    # DeadLetter.history: "one entry per failed attempt".
    assert [entry["attempt"] for entry in letter.history] == [1, 2, 3]
    assert all(entry["error"] == "RuntimeError: handler broke" for entry in letter.history)


async def _dead_lettered(database: Database) -> bool:
    return await count_rows(database, dead_letters) == 1


async def test_workers_with_one_durable_name_share_the_events(database: Database) -> None:
    bus = InProcessBus()
    handler = Handler()
    workers = [CountingWorker(database, bus, [_spec(handler, concurrency=2)]) for _ in range(2)]
    events = [make_event(f"c{i}") for i in range(20)]
    await add_events(database, *events)

    async with _running(bus, *workers):
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _inbox_size(database, "tests", 20), "every event is handled")
        await eventually(_quiet(bus, "tests", *workers), "the group is idle")

    delivered = workers[0].started + workers[1].started
    assert sorted(delivered) == sorted(event.id for event in events)
    assert sorted(handler.calls) == sorted(event.id for event in events)
    assert await _activity_count(database) == 20


async def test_each_durable_name_gets_every_event(database: Database) -> None:
    bus = InProcessBus()
    audit, search = Handler(), Handler()
    worker = CountingWorker(
        database,
        bus,
        [
            Consumer(durable="audit", subjects=SUBJECTS, handler=audit),
            Consumer(durable="search", subjects=("seawall.cases.case.created",), handler=search),
        ],
    )
    created, updated = make_event("c1", type="case.created"), make_event("c1")
    await add_events(database, created, updated)

    async with _running(bus, worker):
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _inbox_size(database, "audit", 2), "audit handles both")
        await eventually(lambda: _inbox_size(database, "search", 1), "search handles one")
        await eventually(_quiet(bus, "audit", worker), "audit is idle")
        await eventually(_quiet(bus, "search", worker), "search is idle")

    assert sorted(audit.calls) == sorted([created.id, updated.id])
    assert search.calls == [created.id]
    assert len(worker.started) == 3
    assert await _activity_count(database) == 3


async def _inbox_size(database: Database, consumer: str, size: int) -> bool:
    return await count_rows(database, inbox, inbox.c.consumer == consumer) == size


async def test_a_new_worker_gets_published_events_its_group_has_not_recorded(
    database: Database,
) -> None:
    handled, dead, fresh, other = (make_event(s) for s in ("h", "d", "f", "o"))
    pending = make_event("p")
    elsewhere = make_event("x", source="/seawall/billing", type="invoice.paid")
    await add_events(database, handled, dead, fresh, other, elsewhere)
    await OutboxRelay(database, RecordingBus()).relay_once()  # published to no one
    await add_events(database, pending)  # committed, not yet published
    async with database.transaction() as session:
        await record_in_inbox(session, "tests", handled.id)
        await record_in_inbox(session, "another-group", other.id)
        await DeadLetters(database).record(
            session,
            consumer="tests",
            message_id=dead.id,
            subject="seawall.cases.case.updated",
            event_type=dead.type,
            body=_body(dead).decode(),
            error="boom",
            attempt=5,
        )
    bus = InProcessBus()
    handler = Handler()
    worker = CountingWorker(database, bus, [_spec(handler)])

    async with _running(bus, worker):
        await eventually(lambda: _inbox_size(database, "tests", 3), "recovered events are handled")
        await eventually(_quiet(bus, "tests", worker), "the group is idle")

    assert sorted(worker.started) == sorted([fresh.id, other.id])
    assert sorted(handler.calls) == sorted([fresh.id, other.id])
    assert (await outbox_row(database, pending.id))["published_at"] is None


async def test_recovery_hands_events_to_a_group_in_outbox_order(database: Database) -> None:
    events = [make_event("c1", data={"n": n}) for n in range(5)]
    await add_events(database, *events)
    await OutboxRelay(database, RecordingBus()).relay_once()
    bus = InProcessBus()
    handler = Handler()
    worker = Worker(database, bus, [_spec(handler, concurrency=1)])

    async with _running(bus, worker):
        await eventually(lambda: _inbox_size(database, "tests", 5), "recovered events are handled")

    assert handler.calls == [event.id for event in events]


# -- housekeeping ---------------------------------------------------------------------------


async def test_purge_inbox_deletes_only_rows_older_than_the_retention(
    database: Database, bus: RecordingBus
) -> None:
    now = datetime.now(UTC)
    ages = {f"old-{i}": timedelta(days=8 + i) for i in range(5)} | {
        "recent": timedelta(days=6),
        "new": timedelta(0),
    }
    async with database.transaction() as session:
        await session.execute(
            inbox.insert(),
            [
                {"consumer": "tests", "message_id": name, "processed_at": now - age}
                for name, age in ages.items()
            ],
        )
    worker = Worker(database, bus, [], inbox_retention=timedelta(days=7))

    purged = await worker.purge_inbox(batch=2)

    assert purged == 5
    async with database.sessions() as session:
        left = set((await session.execute(sa.select(inbox.c.message_id))).scalars())
    assert left == {"recent", "new"}


async def test_record_in_inbox_reports_whether_the_row_is_new(database: Database) -> None:
    async with database.transaction() as session:
        first = await record_in_inbox(session, "g", "m1")
    async with database.transaction() as session:
        again = await record_in_inbox(session, "g", "m1")
        other_group = await record_in_inbox(session, "h", "m1")

    assert (first, again, other_group) == (True, False, True)


async def test_an_event_goes_from_the_outbox_through_the_relay_to_its_handler_once(
    database: Database,
) -> None:
    """End to end: a write and its event, the relay, the worker, one effect."""
    bus = InProcessBus()
    handler = Handler()
    worker = Worker(database, bus, [_spec(handler)])
    event = make_event("c1", type="case.created")

    async with _running(bus, worker):
        await add_events(database, event)
        await OutboxRelay(database, bus).relay_once()
        await eventually(lambda: _inbox_has(database, "tests", event.id), "the event is handled")

    assert handler.calls == [event.id]
    assert (await outbox_row(database, event.id))["published_at"] is not None
    assert await _activity_count(database, event.id) == 1


async def test_extension_attributes_of_other_producers_reach_the_handler(
    database: Database,
) -> None:
    seen: list[Event] = []
    registry = ConsumerRegistry()

    @registry.consumer(durable="ext", subjects=["seawall.>"])
    async def handler(event: Event, session: AsyncSession) -> None:
        seen.append(event)

    worker = Worker(database, InProcessBus(), registry)
    event = make_event()
    body = json.dumps({**json.loads(event.model_dump_json()), "traceparent": "00-abc-def-01"})
    delivery = RecordingDelivery(body.encode(), message_id=event.id, subject="seawall.x.y.z")

    await worker.handle(next(iter(registry)), delivery)

    assert delivery.outcome == "ack"
    assert seen[0].id == event.id
    assert seen[0].model_extra == {"traceparent": "00-abc-def-01"}


async def test_a_batch_stopped_midway_hands_its_deliveries_back_as_failed_attempts(
    database: Database, bus: RecordingBus
) -> None:
    entered, never = asyncio.Event(), asyncio.Event()

    async def stuck(event: Event, session: AsyncSession) -> None:
        entered.set()
        await never.wait()

    spec = _spec(stuck, batch_size=10)
    worker = Worker(database, bus, [spec])
    deliveries = [RecordingDelivery.of(_message(make_event(f"c{i}"))) for i in range(3)]
    handling = asyncio.gather(*(worker.handle(spec, d) for d in deliveries))
    await asyncio.wait_for(entered.wait(), 10)

    draining = worker._batches["tests"]._draining  # what a shutdown cancels
    assert draining is not None
    draining.cancel()
    await asyncio.wait_for(handling, 10)

    assert [d.settled[0][0] for d in deliveries] == ["nak", "nak", "nak"]
    assert await count_rows(database, inbox) == 0
