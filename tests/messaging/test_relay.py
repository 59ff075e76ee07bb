"""`OutboxRelay`: publish committed rows once, in order per aggregate, with back-off and parking."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from seawall.db import Database, outbox
from seawall.errors import PublishError
from seawall.messaging import (
    Event,
    InProcessBus,
    Message,
    Outbox,
    OutboxRelay,
    outbox_lag,
    outbox_message,
)
from seawall.observability import CORRELATION_HEADER
from tests.messaging.conftest import (
    WAIT_SECONDS,
    Clock,
    RecordingBus,
    add_events,
    count_rows,
    eventually,
    make_event,
    only_postgres,
    only_sqlite,
    outbox_row,
    outbox_rows,
)


def _by_aggregate(bus: RecordingBus) -> dict[str, list[str]]:
    published: dict[str, list[str]] = {}
    for message in bus.published:
        event = Event.model_validate_json(message.body)
        assert event.subject is not None
        published.setdefault(event.subject, []).append(event.id)
    return published


# -- publishing ------------------------------------------------------------------------


async def test_committed_rows_are_published_once_and_marked(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    events = await add_events(database, make_event("c1"), make_event("c2"), make_event("c3"))
    relay = OutboxRelay(database, bus, clock=clock)

    first = await relay.relay_once()
    second = await relay.relay_once()

    assert (first, second) == (3, 0)
    assert sorted(bus.ids) == sorted(event.id for event in events)
    for row in await outbox_rows(database):
        assert row["published_at"] == clock.now
        assert row["attempts"] == 1
        assert row["next_attempt_at"] is None
        assert row["last_error"] is None


async def test_a_rolled_back_event_is_never_published(
    database: Database, bus: RecordingBus
) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await Outbox().add(session, make_event("c1"))
            raise RuntimeError("the change failed")
    relay = OutboxRelay(database, bus)

    published = await relay.relay_once()

    assert published == 0
    assert bus.attempts == []


async def test_the_message_is_the_cloudevents_json_on_the_context_subject(
    database: Database, bus: RecordingBus
) -> None:
    event = make_event("c1", type="case.created", data={"title": "x"}, correlation_id="corr-7")
    await add_events(database, event)
    relay = OutboxRelay(database, bus)

    await relay.relay_once()

    [message] = bus.published
    assert message.id == event.id
    assert message.subject == "seawall.cases.case.created"
    body = json.loads(message.body)
    assert body["specversion"] == "1.0"
    assert body["id"] == event.id
    assert body["type"] == "case.created"
    assert body["source"] == "/seawall/cases"
    assert body["data"] == {"title": "x"}
    assert Event.model_validate_json(message.body) == event
    assert message.headers[CORRELATION_HEADER] == "corr-7"


async def test_the_subject_prefix_is_configurable(database: Database, bus: RecordingBus) -> None:
    await add_events(database, make_event("c1", type="case.closed"))
    relay = OutboxRelay(database, bus, subject_prefix="acme")

    await relay.relay_once()

    assert [message.subject for message in bus.published] == ["acme.cases.case.closed"]


async def test_outbox_message_rebuilds_the_envelope_of_a_row(database: Database) -> None:
    event = make_event("c9", type="case.created", data={"n": 1})
    await add_events(database, event)

    message = outbox_message(await outbox_row(database, event.id), prefix="p")

    assert (message.id, message.subject) == (event.id, "p.cases.case.created")
    assert Event.model_validate_json(message.body) == event


@pytest.mark.parametrize(
    "event",
    [
        Event.create(
            "case.created",
            source="/seawall/cases",
            subject="c1",
            data={"title": "Drücker — 印刷機", "tags": ["a", "b"], "n": 1.5, "none": None},
            correlation_id="corr-1",
            causation_id="cause-1",
        ),
        Event.create(
            "case.closed",
            source="/seawall/cases",
            time=datetime(2026, 12, 6, 19, 0, tzinfo=UTC),  # no microseconds
            data=None,
        ),
        Event.create("case.noted", source="x", subject=None, data={}, correlation_id="c"),
    ],
    ids=["full", "no-data-whole-second", "no-subject"],
)
def test_outbox_message_writes_the_json_the_envelope_model_would(event: Event) -> None:
    row = {
        "event_id": event.id,
        "event_type": event.type,
        "source": event.source,
        "subject": event.subject,
        "occurred_at": event.time,
        "correlation_id": event.correlationid,
        "causation_id": event.causationid,
    }
    expected = json.loads(event.model_dump_json(exclude_none=True))

    from_session = outbox_message({**row, "payload": event.data})
    # The raw driver hands the json column out as the text that was written.
    text = None if event.data is None else json.dumps(event.data, indent=1)
    from_driver = outbox_message({**row, "payload": text})
    # SQLite's raw rows carry the time as the naive UTC text SQLAlchemy stored.
    stored = event.time.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    from_sqlite = outbox_message({**row, "payload": text, "occurred_at": stored})

    assert from_sqlite.body == from_driver.body
    for message in (from_session, from_driver, from_sqlite):
        assert json.loads(message.body) == expected
        assert list(json.loads(message.body)) == list(expected)  # the same field order
        assert Event.model_validate_json(message.body) == event


_AWKWARD_EVENTS = [
    Event.create(
        "case.created",
        source="/seawall/cases",
        subject='c "1" \\ Drücker — 印刷機 🎉',
        data={"title": "Drücker \n\t\u0001 \u2028", "n": 1.5, "none": None, "list": [1, "a"]},
        correlation_id="corr-ü",
        causation_id="cause\u001f\x7f",
    ),
    Event.create(
        "case.closed",
        source="/seawall/cases",
        subject="c2",
        time=datetime(2026, 12, 6, 19, 0, tzinfo=UTC),  # no fraction in the text
        data=None,
    ),
    Event.create(
        "case.noted",
        source="/acme/Billing Svc/",
        time=datetime(1999, 1, 2, 3, 4, 5, 60, tzinfo=UTC),
        data={},
        causation_id="cause-1",
    ),
]


async def test_the_database_writes_the_envelope_to_the_bytes_outbox_message_would(
    database: Database, bus: RecordingBus
) -> None:
    events = _AWKWARD_EVENTS
    async with database.transaction() as session:
        for event in events:  # the last has no subject
            await Outbox().add(session, event, aggregate_id=event.subject or "a3")
    await OutboxRelay(database, bus).relay_once()
    async with database.sessions() as session:
        # The payload's text as written, which the relay sends on.
        query = sa.select(outbox.c.event_id, sa.cast(outbox.c.payload, sa.Text))
        stored = dict((await session.execute(query)).all())

    published = {message.id: message for message in bus.published}
    assert sorted(published) == sorted(event.id for event in events)
    for event in events:
        row = {**await outbox_row(database, event.id), "payload": stored[event.id]}
        if event.data is None:
            assert row["payload"] in (None, "null")  # SQL NULL or JSON null: both "no data"
        expected = outbox_message(row)
        assert published[event.id].body == expected.body
        assert (published[event.id].subject, published[event.id].headers) == (
            expected.subject,
            expected.headers,
        )
        assert Event.model_validate_json(published[event.id].body) == event


async def test_events_of_one_aggregate_are_published_in_insert_order(
    database: Database, bus: RecordingBus
) -> None:
    expected: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    for round_ in range(6):
        for aggregate, ids in expected.items():
            event = make_event(aggregate, data={"n": round_})
            await add_events(database, event)
            ids.append(event.id)
    relay = OutboxRelay(database, bus, batch_size=4)

    while await relay.relay_once():
        pass

    assert _by_aggregate(bus) == expected
    assert len(bus.published) == 18


async def test_a_full_batch_leaves_the_rest_for_the_next_round(
    database: Database, bus: RecordingBus
) -> None:
    await add_events(database, *(make_event(f"c{i}") for i in range(5)))
    relay = OutboxRelay(database, bus, batch_size=2)

    rounds = [await relay.relay_once() for _ in range(4)]

    assert rounds == [2, 2, 1, 0]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        OutboxRelay(Database("sqlite:///:memory:"), RecordingBus(), batch_size=0)


def test_retention_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="retention"):
        OutboxRelay(Database("sqlite:///:memory:"), RecordingBus(), retention=timedelta(hours=-1))


def test_deleting_published_rows_needs_a_bus_with_its_own_log() -> None:
    # The in-process bus redelivers what its consumers missed from published rows.
    bus = InProcessBus()
    with pytest.raises(ValueError, match="in-process bus"):
        OutboxRelay(Database("sqlite:///:memory:"), bus, retention=timedelta(0))


async def test_with_no_retention_a_published_row_is_deleted_and_the_rest_stay(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    a1, a2 = make_event("a"), make_event("a")
    b1, c1, c2 = make_event("b"), make_event("c"), make_event("c")
    await add_events(database, a1, a2, b1, c1, c2)
    bus.refuse[a1.id] = PublishError("broker unavailable")
    bus.refuse[b1.id] = PublishError("message too large", permanent=True)
    relay = OutboxRelay(
        database, bus, retention=timedelta(0), retry_base=10.0, retry_max=10.0, clock=clock
    )

    published = await relay.relay_once()

    assert published == 2
    assert bus.ids == [c1.id, c2.id]
    rows = {row["event_id"]: row for row in await outbox_rows(database)}
    # Published rows are gone; the failed row waits for its retry, its sibling
    # behind it, and the parked row for an operator.
    assert sorted(rows) == sorted([a1.id, a2.id, b1.id])
    assert (rows[a1.id]["attempts"], rows[a1.id]["last_error"]) == (1, "broker unavailable")
    assert rows[a1.id]["next_attempt_at"] is not None
    assert (rows[a2.id]["attempts"], rows[a2.id]["published_at"]) == (0, None)
    assert rows[b1.id]["parked_at"] == clock.now
    lag = await relay.lag()
    assert (lag.pending, lag.retrying, lag.parked) == (2, 1, 1)

    clock.advance(11)
    del bus.refuse[a1.id]
    assert await relay.relay_once() == 2
    assert bus.ids == [c1.id, c2.id, a1.id, a2.id]
    assert [row["event_id"] for row in await outbox_rows(database)] == [b1.id]


async def test_run_with_no_retention_publishes_a_backlog_once_in_order_and_deletes_it(
    database: Database, bus: RecordingBus
) -> None:
    # SQLite's pipelined marks and PostgreSQL's claim loops both delete instead.
    expected = await _backlog(database)
    relay = OutboxRelay(
        database,
        bus,
        batch_size=4,
        poll_interval=30.0,
        purge_interval=0,
        retention=timedelta(0),
    )

    with capture_logs() as logs:
        task = asyncio.create_task(relay.run(concurrency=3))
        try:
            await eventually(lambda: _count(bus, 60), "every row is published")
            await eventually(lambda: _outbox_is_empty(database), "every row is deleted")
        finally:
            relay.stop()
            await asyncio.wait_for(task, WAIT_SECONDS)

    assert len(set(bus.ids)) == len(bus.ids) == 60
    assert _by_aggregate(bus) == expected
    started = [entry for entry in logs if entry["event"] == "relay_started"]
    assert [entry["published_rows"] for entry in started] == ["deleted"]


async def _outbox_is_empty(database: Database) -> bool:
    return await count_rows(database, outbox) == 0


# -- failures --------------------------------------------------------------------------


async def test_a_transient_failure_backs_off_its_row_and_holds_back_its_aggregate_only(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    a1, a2, a3 = make_event("a", data={"n": 1}), make_event("a", data={"n": 2}), make_event("a")
    b1, b2 = make_event("b"), make_event("b")
    await add_events(database, a1, b1, a2, a3, b2)
    bus.refuse[a2.id] = PublishError("broker unavailable")
    relay = OutboxRelay(database, bus, retry_base=10.0, retry_max=10.0, clock=clock)

    published = await relay.relay_once()

    assert published == 3
    assert _by_aggregate(bus) == {"a": [a1.id], "b": [b1.id, b2.id]}
    failed = await outbox_row(database, a2.id)
    assert failed["published_at"] is None
    assert failed["attempts"] == 1
    assert failed["last_error"] == "broker unavailable"
    assert clock.now + timedelta(seconds=5) <= failed["next_attempt_at"]
    assert failed["next_attempt_at"] <= clock.now + timedelta(seconds=10)
    held = await outbox_row(database, a3.id)
    assert (held["published_at"], held["attempts"], held["next_attempt_at"]) == (None, 0, None)


async def test_rows_held_back_wait_for_the_back_off_then_go_in_order(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    a1, a2, a3 = make_event("a"), make_event("a"), make_event("a")
    await add_events(database, a1, a2, a3)
    bus.refuse[a1.id] = PublishError("timeout")
    relay = OutboxRelay(database, bus, retry_base=10.0, retry_max=10.0, clock=clock)
    await relay.relay_once()
    del bus.refuse[a1.id]

    during_back_off = await relay.relay_once()
    attempts_during_back_off = list(bus.attempts)
    clock.advance(11)
    after_back_off = await relay.relay_once()

    assert during_back_off == 0
    assert attempts_during_back_off == [a1.id]
    assert after_back_off == 3
    assert bus.ids == [a1.id, a2.id, a3.id]
    rows = await outbox_rows(database)
    assert [row["attempts"] for row in rows] == [2, 1, 1]
    assert all(row["last_error"] is None and row["next_attempt_at"] is None for row in rows)


async def test_repeated_failures_back_off_longer_up_to_the_cap(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    event = make_event("a")
    await add_events(database, event)
    bus.refuse[event.id] = PublishError("down")
    relay = OutboxRelay(database, bus, retry_base=1.0, retry_max=4.0, clock=clock)
    waits: list[float] = []

    for _ in range(5):
        await relay.relay_once()
        row = await outbox_row(database, event.id)
        waits.append((row["next_attempt_at"] - clock.now).total_seconds())
        clock.advance(60)

    assert (await outbox_row(database, event.id))["attempts"] == 5
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits


def test_backoff_is_exponential_jittered_and_capped() -> None:
    relay = OutboxRelay(
        Database("sqlite:///:memory:"), RecordingBus(), retry_base=0.5, retry_max=60.0
    )

    first = [relay.backoff(1) for _ in range(50)]
    third = [relay.backoff(3) for _ in range(50)]
    late = [relay.backoff(40) for _ in range(50)]

    assert all(0.25 <= w <= 0.5 for w in first)
    assert all(1.0 <= w <= 2.0 for w in third)
    assert all(30.0 <= w <= 60.0 for w in late)


async def test_a_permanent_refusal_parks_the_row_and_the_rest_go_on(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    a1, a2, b1 = make_event("a"), make_event("a"), make_event("b")
    await add_events(database, a1, a2, b1)
    bus.refuse[a1.id] = PublishError("message too large", permanent=True)
    relay = OutboxRelay(database, bus, clock=clock)

    first = await relay.relay_once()
    again = await relay.relay_once()

    assert (first, again) == (2, 0)
    assert sorted(bus.ids) == sorted([a2.id, b1.id])
    assert bus.attempts.count(a1.id) == 1
    parked = await outbox_row(database, a1.id)
    assert parked["parked_at"] == clock.now
    assert parked["published_at"] is None
    assert parked["attempts"] == 1
    assert parked["last_error"] == "message too large"


async def test_requeue_puts_parked_rows_back_in_line(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    e1, e2, e3 = make_event("a"), make_event("b"), make_event("c")
    await add_events(database, e1, e2, e3)
    for event in (e1, e2):
        bus.refuse[event.id] = PublishError("rejected", permanent=True)
    relay = OutboxRelay(database, bus, clock=clock)
    await relay.relay_once()
    bus.refuse.clear()
    seq_of_e1 = (await outbox_row(database, e1.id))["seq"]

    requeued_one = await relay.requeue([seq_of_e1])
    published_one = await relay.relay_once()
    requeued_rest = await relay.requeue()
    published_rest = await relay.relay_once()
    requeued_none = await relay.requeue()

    assert (requeued_one, published_one) == (1, 1)
    assert (requeued_rest, published_rest) == (1, 1)
    assert requeued_none == 0
    assert bus.ids == [e3.id, e1.id, e2.id]
    for row in await outbox_rows(database):
        assert row["parked_at"] is None
        assert row["last_error"] is None
        assert row["published_at"] is not None


async def test_requeue_leaves_rows_that_are_not_parked_alone(
    database: Database, bus: RecordingBus
) -> None:
    event = make_event("a")
    await add_events(database, event)
    relay = OutboxRelay(database, bus)
    await relay.relay_once()
    seq = (await outbox_row(database, event.id))["seq"]

    requeued = await relay.requeue([seq])

    assert requeued == 0
    assert (await outbox_row(database, event.id))["published_at"] is not None


# -- lag and purge ----------------------------------------------------------------------


async def test_lag_is_zero_on_an_empty_outbox(database: Database, clock: Clock) -> None:
    relay = OutboxRelay(database, RecordingBus(), clock=clock)

    lag = await relay.lag()

    assert (lag.pending, lag.retrying, lag.parked, lag.oldest_age_seconds) == (0, 0, 0, 0.0)


async def test_lag_counts_pending_retrying_and_parked_rows_and_the_oldest_age(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    done, parked, retrying, waiting = (make_event(s) for s in ("d", "p", "r", "w"))
    await add_events(database, done, parked, retrying, waiting)
    bus.refuse[parked.id] = PublishError("too big", permanent=True)
    bus.refuse[retrying.id] = PublishError("down")
    bus.refuse[waiting.id] = PublishError("down")
    relay = OutboxRelay(database, bus, retry_base=30.0, clock=clock)
    await relay.relay_once()
    async with database.transaction() as session:
        await session.execute(
            outbox.update()
            .where(outbox.c.event_id == waiting.id)
            .values(next_attempt_at=None, attempts=0, created_at=clock.now - timedelta(hours=2))
        )
        await session.execute(
            outbox.update()
            .where(outbox.c.event_id.in_([done.id, parked.id, retrying.id]))
            .values(created_at=clock.now - timedelta(hours=5))
        )

    lag = await relay.lag()
    same = await outbox_lag(database, now=clock.now)

    assert lag == same
    assert (lag.pending, lag.retrying, lag.parked) == (2, 1, 1)
    # The retrying row is the oldest pending one; published and parked rows do not count.
    assert lag.oldest_age_seconds == pytest.approx(5 * 3600)


async def test_purge_deletes_only_rows_published_before_the_retention(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    old = [make_event(f"old{i}") for i in range(5)]
    recent, unpublished = make_event("recent"), make_event("unpublished")
    await add_events(database, *old, recent)
    relay = OutboxRelay(database, bus, retention=timedelta(hours=1), clock=clock)
    await relay.relay_once()
    await add_events(database, unpublished)
    async with database.transaction() as session:
        await session.execute(
            outbox.update()
            .where(outbox.c.event_id.in_([e.id for e in old]))
            .values(published_at=clock.now - timedelta(hours=3))
        )
        await session.execute(
            outbox.update()
            .where(outbox.c.event_id == recent.id)
            .values(published_at=clock.now - timedelta(minutes=59))
        )

    purged = await relay.purge_published(batch=2)
    again = await relay.purge_published(batch=2)

    assert (purged, again) == (5, 0)
    remaining = [row["event_id"] for row in await outbox_rows(database)]
    assert remaining == [recent.id, unpublished.id]


# -- PostgreSQL: many relays, late commits ----------------------------------------------------


@only_postgres
async def test_the_postgresql_claim_is_planned_once_per_connection(
    database: Database, bus: RecordingBus
) -> None:
    # Its batch size is written into the statement: with a parameter there, and a
    # backlog, PostgreSQL planned the claim anew at every round (about 0.3 ms each).
    async with database.transaction() as session:
        await Outbox().add_all(session, [make_event(f"agg{n}") for n in range(500)])
    async with database.engine.connect() as connection:
        await connection.exec_driver_sql("ANALYZE outbox")
    single = Database(database.url, pool_size=1)  # every round on one connection
    relay = OutboxRelay(single, bus, batch_size=2)
    try:
        for _ in range(10):
            assert await relay.relay_once() == 2
        async with single.engine.connect() as connection:
            plans = await connection.exec_driver_sql(
                "SELECT generic_plans, custom_plans, cardinality(parameter_types)"
                " FROM pg_prepared_statements"
                " WHERE statement LIKE '%FOR UPDATE SKIP LOCKED%'"
                " AND statement NOT LIKE '%pg_prepared_statements%'"
            )
            generic, custom, parameters = plans.one()
    finally:
        await single.dispose()

    assert parameters == 1  # the time; the batch size is part of the statement
    assert generic >= 5  # PostgreSQL tries five custom plans first, then keeps the generic one
    assert custom <= 5
    assert len(bus.ids) == 20


@only_postgres
async def test_a_row_committed_after_a_higher_sequence_number_is_still_published(
    database: Database, bus: RecordingBus
) -> None:
    early, late = make_event("early"), make_event("late")
    relay = OutboxRelay(database, bus)

    async with database.transaction() as slow:
        await Outbox().add(slow, early)  # takes the lower seq, commits last
        await add_events(database, late)
        while_open = await relay.relay_once()
    after_commit = await relay.relay_once()

    assert (while_open, after_commit) == (1, 1)
    assert bus.ids == [late.id, early.id]
    rows = await outbox_rows(database)
    assert [row["event_id"] for row in rows] == [early.id, late.id]
    assert all(row["published_at"] is not None for row in rows)


@only_postgres
async def test_concurrent_relays_publish_each_row_once_in_order_per_aggregate(
    database: Database, bus: RecordingBus
) -> None:
    expected: dict[str, list[str]] = {f"agg{i}": [] for i in range(12)}
    for round_ in range(15):
        batch = [make_event(aggregate, data={"n": round_}) for aggregate in expected]
        await add_events(database, *batch)
        for event in batch:
            assert event.subject is not None
            expected[event.subject].append(event.id)
    other = Database(database.url)
    relays = [OutboxRelay(database, bus, batch_size=7), OutboxRelay(other, bus, batch_size=7)]

    try:
        for _ in range(500):
            rounds = await asyncio.gather(*(relay.relay_once() for relay in relays))
            if sum(rounds) == 0 and (await outbox_lag(database)).pending == 0:
                break
    finally:
        await other.dispose()

    assert len(bus.ids) == len(set(bus.ids)) == 12 * 15
    assert _by_aggregate(bus) == expected
    assert await count_rows(database, outbox, outbox.c.published_at.is_(None)) == 0
    assert await count_rows(database, outbox, outbox.c.attempts != 1) == 0


# -- SQLite: one relay at a time ----------------------------------------------------------


@only_sqlite
async def test_on_sqlite_a_second_relay_waits_while_the_first_holds_the_lease(
    database: Database,
) -> None:
    first_bus, second_bus = RecordingBus(), RecordingBus()
    first = OutboxRelay(database, first_bus)
    second = OutboxRelay(database, second_bus)
    await add_events(database, make_event("a"))
    await first.relay_once()
    later = make_event("b")
    await add_events(database, later)

    by_second = await second.relay_once()
    by_first = await first.relay_once()

    assert by_second == 0
    assert second_bus.attempts == []
    assert by_first == 1
    assert first_bus.ids[-1] == later.id


@only_sqlite
async def test_on_sqlite_the_lease_passes_on_when_a_running_relay_stops(
    database: Database,
) -> None:
    first_bus, second_bus = RecordingBus(), RecordingBus()
    first = OutboxRelay(database, first_bus, purge_interval=0)
    second = OutboxRelay(database, second_bus)
    warm_up = make_event("a")
    await add_events(database, warm_up)
    running = asyncio.create_task(first.run())
    await eventually(lambda: _has(first_bus, warm_up.id), "the first relay publishes")
    first.stop()
    await asyncio.wait_for(running, WAIT_SECONDS)
    event = make_event("b")
    await add_events(database, event)

    published = await second.relay_once()

    assert published == 1
    assert second_bus.ids == [event.id]


# -- running ----------------------------------------------------------------------------------


async def _has(bus: RecordingBus, event_id: str) -> bool:
    return event_id in bus.ids


async def test_run_wakes_on_a_commit_in_this_process_and_stop_ends_it(
    database: Database, bus: RecordingBus
) -> None:
    relay = OutboxRelay(database, bus, poll_interval=30.0, purge_interval=0)
    warm_up = make_event("a")
    await add_events(database, warm_up)
    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _has(bus, warm_up.id), "the first round publishes")
        event = make_event("b")

        await add_events(database, event)

        # Far sooner than the 30 s poll: the commit woke the relay.
        await eventually(lambda: _has(bus, event.id), "the commit wakes the relay", timeout=5.0)
    finally:
        relay.stop()
        await asyncio.wait_for(running, WAIT_SECONDS)
    assert running.done()
    assert running.exception() is None
    assert (await outbox_row(database, event.id))["published_at"] is not None


async def test_run_keeps_going_after_a_failed_publish(
    database: Database, bus: RecordingBus
) -> None:
    first, second = make_event("a"), make_event("a")
    await add_events(database, first, second)
    bus.flaky[first.id] = 2
    relay = OutboxRelay(database, bus, poll_interval=0.02, retry_base=0.01, purge_interval=0)

    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _has(bus, second.id), "both events go out after the retries")
    finally:
        relay.stop()
        await asyncio.wait_for(running, WAIT_SECONDS)

    assert bus.ids == [first.id, second.id]
    assert bus.attempts == [first.id] * 3 + [second.id]
    assert (await outbox_row(database, first.id))["attempts"] == 3


@only_postgres
async def test_run_with_many_claim_loops_publishes_each_row_once_in_order(
    database: Database, bus: RecordingBus
) -> None:
    expected: dict[str, list[str]] = {f"agg{i}": [] for i in range(6)}
    relay = OutboxRelay(database, bus, batch_size=5, poll_interval=30.0, purge_interval=0)
    running = asyncio.create_task(relay.run(concurrency=3))
    try:
        for round_ in range(10):
            batch = [make_event(aggregate, data={"n": round_}) for aggregate in expected]
            await add_events(database, *batch)
            for aggregate, event in zip(expected, batch, strict=True):
                expected[aggregate].append(event.id)

        await eventually(lambda: _count(bus, 60), "every row is published")
    finally:
        relay.stop()
        await asyncio.wait_for(running, WAIT_SECONDS)

    assert len(set(bus.ids)) == len(bus.ids) == 60
    assert _by_aggregate(bus) == expected


async def _backlog(database: Database) -> dict[str, list[str]]:
    """Commit ten rounds of one event for each of six aggregates; their ids per aggregate."""
    expected: dict[str, list[str]] = {f"agg{i}": [] for i in range(6)}
    for round_ in range(10):
        batch = [make_event(aggregate, data={"n": round_}) for aggregate in expected]
        await add_events(database, *batch)
        for aggregate, event in zip(expected, batch, strict=True):
            expected[aggregate].append(event.id)
    return expected


async def _count(bus: RecordingBus, wanted: int) -> bool:
    return len(bus.published) >= wanted


# -- SQLite's pipelined run ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running(relay: OutboxRelay) -> AsyncIterator[None]:
    """Run *relay* (`OutboxRelay.run`) inside the block; stop it and wait for it after."""
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        relay.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)


@only_sqlite
async def test_on_sqlite_run_works_through_a_backlog_once_in_order_and_marks_every_row(
    database: Database, bus: RecordingBus
) -> None:
    # Full batches: the next batch is claimed while one is published, and the
    # "published" updates are written while the next batch goes out.
    expected = await _backlog(database)
    relay = OutboxRelay(database, bus, batch_size=4, poll_interval=30.0, purge_interval=0)

    async with _running(relay):
        await eventually(lambda: _count(bus, 60), "every row is published")
        await eventually(lambda: _nothing_pending(database), "every row is marked")

    assert len(set(bus.ids)) == len(bus.ids) == 60
    assert _by_aggregate(bus) == expected
    rows = await outbox_rows(database)
    assert all(row["attempts"] == 1 and row["published_at"] is not None for row in rows)


async def _nothing_pending(database: Database) -> bool:
    return (await outbox_lag(database)).pending == 0


@only_sqlite
async def test_on_sqlite_a_failure_in_a_pipelined_batch_keeps_its_aggregate_in_order(
    database: Database, bus: RecordingBus
) -> None:
    # a1 fails while the batch after it (holding a2) has been claimed: that batch
    # is dropped, a1's back-off written, and a2 waits for a1.
    a1, b1, a2, b2, a3 = (make_event(name) for name in ("a", "b", "a", "b", "a"))
    await add_events(database, a1, b1, a2, b2, a3)
    bus.flaky[a1.id] = 1
    relay = OutboxRelay(
        database, bus, batch_size=2, poll_interval=0.02, retry_base=0.05, purge_interval=0
    )

    async with _running(relay):
        await eventually(lambda: _count(bus, 5), "every row is published")
        await eventually(lambda: _nothing_pending(database), "every row is marked")

    assert _by_aggregate(bus) == {"a": [a1.id, a2.id, a3.id], "b": [b1.id, b2.id]}
    assert bus.attempts.count(a1.id) == 2
    assert (await outbox_row(database, a1.id))["attempts"] == 2


@only_sqlite
async def test_on_sqlite_run_publishes_at_most_eight_batches_ahead_of_its_marks(
    database: Database, bus: RecordingBus
) -> None:
    events = [make_event(f"agg{i}") for i in range(40)]
    await add_events(database, *events)
    # The marks would wait 30 s; a relay eight batches ahead writes them first.
    relay = OutboxRelay(
        database, bus, batch_size=2, poll_interval=30.0, purge_interval=0, mark_delay=30.0
    )
    async with _running(relay):
        await eventually(lambda: _count(bus, 40), "every row is published")
        marked_while_running = 40 - (await outbox_lag(database)).pending

    assert marked_while_running >= 40 - 8 * 2
    assert bus.ids == [event.id for event in events]


class LockingBus(RecordingBus):
    """Takes SQLite's write lock on another connection at the first publish it sees."""

    def __init__(self, locker: sqlite3.Connection) -> None:
        super().__init__()
        self.locker = locker

    async def publish(self, message: Message) -> None:
        if not self.locker.in_transaction and not self.attempts:
            self.locker.execute("BEGIN IMMEDIATE")
        await super().publish(message)


@only_sqlite
async def test_on_sqlite_a_failure_that_cannot_be_written_is_claimed_and_tried_again(
    database_url: str,
) -> None:
    database = Database(database_url, timeout=0.2)
    locker = sqlite3.connect(
        database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    bus = LockingBus(locker)
    event = make_event("a")
    bus.flaky[event.id] = 1
    await add_events(database, event)
    relay = OutboxRelay(database, bus, poll_interval=0.02, purge_interval=0)
    try:
        async with _running(relay):
            # The failed publish's back-off cannot be written while the lock is held.
            await eventually(lambda: _tried(bus, 1), "the first attempt")
            await asyncio.sleep(0.5)
            locker.execute("ROLLBACK")
            await eventually(lambda: _has(bus, event.id), "the event goes out in a later round")
            await eventually(lambda: _nothing_pending(database), "and is marked")
    finally:
        locker.close()
        await database.dispose()

    assert bus.attempts == [event.id, event.id]


async def _tried(bus: RecordingBus, times: int) -> bool:
    return len(bus.attempts) >= times


@only_sqlite
async def test_on_sqlite_stop_writes_the_marks_still_waiting(
    database: Database, bus: RecordingBus
) -> None:
    event = make_event("a")
    relay = OutboxRelay(database, bus, poll_interval=30.0, purge_interval=0, mark_delay=30.0)
    async with _running(relay):
        await add_events(database, event)
        await eventually(lambda: _has(bus, event.id), "the event is published")
        waiting = (await outbox_lag(database)).pending

    assert waiting == 1  # published, its mark held back for mark_delay
    assert (await outbox_lag(database)).pending == 0
    assert bus.ids == [event.id]


@only_sqlite
async def test_on_sqlite_a_mark_that_finds_the_lock_taken_is_retried_and_nothing_goes_twice(
    database_url: str, bus: RecordingBus
) -> None:
    database = Database(database_url, timeout=0.2)
    locker = sqlite3.connect(
        database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    first, second = make_event("a"), make_event("b")
    relay = OutboxRelay(database, bus, poll_interval=0.02, purge_interval=0, mark_delay=0.1)
    try:
        async with _running(relay):
            await add_events(database, first)
            await eventually(lambda: _has(bus, first.id), "the first event is published")
            await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # before its mark
            await asyncio.sleep(1.0)  # rounds claim meanwhile; the marks fail and back off
            locker.execute("ROLLBACK")
            await add_events(database, second)
            await eventually(lambda: _has(bus, second.id), "the second event is published")
            await eventually(lambda: _nothing_pending(database), "both rows are marked")
    finally:
        locker.close()
        await database.dispose()

    assert bus.attempts == [first.id, second.id]


async def test_run_also_purges_old_published_rows(
    database: Database, bus: RecordingBus, clock: Clock
) -> None:
    event = make_event("a")
    await add_events(database, event)
    async with database.transaction() as session:
        await session.execute(
            outbox.update().values(published_at=clock.now - timedelta(days=3), attempts=1)
        )
    relay = OutboxRelay(database, bus, poll_interval=30.0, purge_interval=30.0, clock=clock)

    async with _running(relay):
        await eventually(
            lambda: _is_empty(database), "the purge loop removes the old published row"
        )

    assert bus.attempts == []


async def _is_empty(database: Database) -> bool:
    return await count_rows(database, outbox, sa.true()) == 0


class GatedBus(RecordingBus):
    """Publishes only once `gate` is open, so a relay's round can be held mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def publish(self, message: Message) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().publish(message)


@only_postgres
async def test_a_relay_locks_only_its_batch_so_another_shares_a_backlog(
    database: Database,
) -> None:
    await add_events(database, *(make_event(f"agg-{i}") for i in range(60)))
    held_bus = GatedBus()
    first = OutboxRelay(database, held_bus, batch_size=10)
    second_bus = RecordingBus()
    second = OutboxRelay(database, second_bus, batch_size=10)

    holding = asyncio.create_task(first.relay_once())
    await asyncio.wait_for(held_bus.entered.wait(), 10)
    published_meanwhile = await second.relay_once()
    held_bus.gate.set()

    assert published_meanwhile == 10
    assert await holding == 10
    first_ids = {m.id for m in held_bus.published}
    assert not first_ids & {m.id for m in second_bus.published}


@only_sqlite
async def test_on_sqlite_relay_once_marks_its_batch_with_one_raw_statement(
    database: Database, bus: RecordingBus, clock: Clock, hops: list[str]
) -> None:
    # Not through a session: a round of 1,000 rows spent as long compiling and
    # committing its UPDATE as publishing them (docs/BENCHMARKS.md, issue #5).
    relay = OutboxRelay(database, bus, clock=clock)
    assert await relay.relay_once() == 0  # the lease taken
    await add_events(database, make_event("c1"), make_event("c2"), make_event("c3"))
    hops.clear()

    assert await relay.relay_once() == 3

    assert hops == ["_execute_fetchall", "_execute_fetchall"]  # the claim, the mark
    for row in await outbox_rows(database):
        assert row["published_at"] == clock.now
        assert row["attempts"] == 1
