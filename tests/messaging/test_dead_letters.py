"""`DeadLetters` (list, show, count, request a replay, purge) and replays through the inbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, case_activity, dead_letters, inbox
from seawall.errors import Unprocessable
from seawall.messaging import Consumer, DeadLetters, Event, Worker, record_in_inbox
from tests.messaging.conftest import (
    WAIT_SECONDS,
    Clock,
    RecordingBus,
    RecordingDelivery,
    count_rows,
    eventually,
    make_event,
)

SUBJECT = "seawall.cases.case.updated"


async def _record(
    letters: DeadLetters,
    database: Database,
    *,
    consumer: str = "tests",
    message_id: str | None = None,
    event: Event | None = None,
    error: str = "boom",
    attempt: int = 5,
) -> int:
    """Write a dead letter and return its id."""
    event = event or make_event("c1")
    async with database.transaction() as session:
        await letters.record(
            session,
            consumer=consumer,
            message_id=message_id or event.id,
            subject=SUBJECT,
            event_type=event.type,
            body=event.model_dump_json(exclude_none=True),
            error=error,
            attempt=attempt,
        )
    [letter] = await letters.list(consumer=consumer, state=None, limit=1)
    return letter.id


class Handler:
    """Counts its calls, writes a timeline row, and raises `error` while it is set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    async def __call__(self, event: Event, session: AsyncSession) -> None:
        self.calls.append(event.id)
        await session.execute(
            case_activity.insert().values(
                case_id=event.subject or "-",
                event_id=event.id,
                event_type=event.type,
                summary="handled",
                occurred_at=event.time,
                recorded_at=event.time,
            )
        )
        if self.error is not None:
            raise self.error


def _worker(database: Database, handler: Handler, **options: Any) -> Worker:
    spec = Consumer(durable="tests", subjects=("seawall.cases.>",), handler=handler)
    return Worker(database, RecordingBus(), [spec], **options)


# -- the table --------------------------------------------------------------------------


async def test_record_writes_a_dead_letter_with_its_first_history_entry(
    database: Database, clock: Clock
) -> None:
    letters = DeadLetters(database, clock=clock)
    event = make_event("c1")

    letter_id = await _record(letters, database, event=event, error="KeyError: 'x'", attempt=5)

    letter = await letters.get(letter_id)
    assert letter is not None
    assert (letter.consumer, letter.message_id, letter.subject) == ("tests", event.id, SUBJECT)
    assert letter.event_type == event.type
    assert Event.model_validate_json(letter.body) == event
    assert (letter.error, letter.attempts, letter.state) == ("KeyError: 'x'", 5, "dead")
    assert letter.history == [{"attempt": 5, "at": clock.now.isoformat(), "error": "KeyError: 'x'"}]
    assert letter.created_at == letter.updated_at == clock.now
    assert letter.replayed_at is None


async def test_recording_the_same_message_again_adds_to_its_history(
    database: Database, clock: Clock
) -> None:
    letters = DeadLetters(database, clock=clock)
    event = make_event("c1")
    first_id = await _record(letters, database, event=event, error="first", attempt=3)
    await letters.request_replay([first_id])
    clock.advance(60)

    second_id = await _record(letters, database, event=event, error="second", attempt=4)

    assert second_id == first_id
    letter = await letters.get(first_id)
    assert letter is not None
    assert (letter.error, letter.attempts, letter.state) == ("second", 4, "dead")
    assert [entry["error"] for entry in letter.history] == ["first", "second"]
    assert letter.updated_at == clock.now
    assert await count_rows(database, dead_letters) == 1


async def test_get_returns_none_for_a_missing_id(database: Database) -> None:
    letters = DeadLetters(database)

    assert await letters.get(12345) is None


async def test_list_is_newest_first_and_filters_by_consumer_state_and_position(
    database: Database,
) -> None:
    letters = DeadLetters(database)
    ids = [
        await _record(letters, database, consumer=consumer)
        for consumer in ("a", "b", "a", "b", "a")
    ]
    await letters.request_replay([ids[4]])

    dead = await letters.list()
    of_a = await letters.list(consumer="a")
    everything = await letters.list(state=None)
    waiting = await letters.list(state="replay")
    first_two = await letters.list(state=None, limit=2)
    older = await letters.list(state=None, before_id=ids[2])

    assert [letter.id for letter in dead] == ids[3::-1]
    assert [letter.id for letter in of_a] == [ids[2], ids[0]]
    assert [letter.id for letter in everything] == ids[::-1]
    assert [letter.id for letter in waiting] == [ids[4]]
    assert [letter.id for letter in first_two] == [ids[4], ids[3]]
    assert [letter.id for letter in older] == [ids[1], ids[0]]


async def test_summary_has_the_list_fields_without_body_or_history(database: Database) -> None:
    letters = DeadLetters(database)
    letter_id = await _record(letters, database)
    letter = await letters.get(letter_id)
    assert letter is not None

    summary = letter.summary()

    assert set(summary) == {
        "id",
        "consumer",
        "message_id",
        "event_type",
        "state",
        "attempts",
        "error",
        "updated_at",
    }
    assert summary["updated_at"] == letter.updated_at.isoformat()


async def test_count_groups_by_consumer_per_state(database: Database) -> None:
    letters = DeadLetters(database)
    ids = [await _record(letters, database, consumer=c) for c in ("a", "a", "b", "c")]
    await letters.request_replay([ids[3]])

    dead = await letters.count()
    waiting = await letters.count(state="replay")
    replayed = await letters.count(state="replayed")

    assert dead == {"a": 2, "b": 1}
    assert waiting == {"c": 1}
    assert replayed == {}


async def test_request_replay_marks_dead_letters_by_id_by_consumer_or_all(
    database: Database,
) -> None:
    letters = DeadLetters(database)
    ids = [await _record(letters, database, consumer=c) for c in ("a", "a", "b", "c", "c")]

    by_id = await letters.request_replay([ids[0], 999])
    again = await letters.request_replay([ids[0]])
    by_consumer = await letters.request_replay(consumer="c")
    rest = await letters.request_replay()

    assert (by_id, again, by_consumer, rest) == (1, 0, 2, 2)
    assert await letters.count() == {}
    assert await letters.count(state="replay") == {"a": 2, "b": 1, "c": 2}


async def test_replay_requests_lists_waiting_ids_of_the_given_consumers(
    database: Database,
) -> None:
    letters = DeadLetters(database)
    ids = [await _record(letters, database, consumer=c) for c in ("a", "b", "a", "c")]
    await letters.request_replay([ids[0], ids[1], ids[2]])

    of_a = await letters.replay_requests(["a"])
    of_a_and_b = await letters.replay_requests(["a", "b"], limit=2)
    of_c = await letters.replay_requests(["c"])

    assert of_a == [ids[0], ids[2]]
    assert of_a_and_b == [ids[0], ids[1]]
    assert of_c == []


async def test_purge_deletes_by_id_by_consumer_or_all_but_not_pending_replays(
    database: Database,
) -> None:
    letters = DeadLetters(database)
    ids = [await _record(letters, database, consumer=c) for c in ("a", "a", "b", "b", "c", "c")]
    await letters.request_replay([ids[5]])

    by_id = await letters.purge([ids[0]])
    by_consumer = await letters.purge(consumer="b")
    everything = await letters.purge()

    assert (by_id, by_consumer, everything) == (1, 2, 2)
    assert [letter.id for letter in await letters.list(state=None)] == [ids[5]]
    assert await letters.purge(states=("replay",)) == 1
    assert await count_rows(database, dead_letters) == 0


# -- replays ------------------------------------------------------------------------------


async def _dead_letter_through_the_worker(database: Database, worker: Worker, event: Event) -> int:
    """Dead-letter *event* the way the worker does it: an `Unprocessable` handler."""
    spec = worker.consumers["tests"]
    delivery = RecordingDelivery(
        event.model_dump_json(exclude_none=True).encode(), message_id=event.id, subject=SUBJECT
    )
    await worker.handle(spec, delivery)
    assert delivery.outcome == "term"
    [letter] = await worker.dead_letters.list(consumer="tests")
    return letter.id


async def test_a_replay_runs_the_handler_once_through_the_inbox(database: Database) -> None:
    handler = Handler(error=Unprocessable("bad data"))
    worker = _worker(database, handler)
    event = make_event("c1")
    letter_id = await _dead_letter_through_the_worker(database, worker, event)
    handler.error = None  # the bug is fixed
    await worker.dead_letters.request_replay([letter_id])

    replayed = await worker.replay(letter_id)
    again = await worker.replay(letter_id)

    assert (replayed, again) == (True, False)
    assert handler.calls == [event.id, event.id]  # the failed delivery, then the replay
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "replayed"
    assert letter.replayed_at is not None
    assert await count_rows(database, inbox, inbox.c.message_id == event.id) == 1
    assert await count_rows(database, case_activity) == 1


async def test_a_failing_replay_goes_back_to_dead_with_one_more_history_entry(
    database: Database,
) -> None:
    handler = Handler(error=Unprocessable("bad data"))
    worker = _worker(database, handler)
    event = make_event("c1")
    letter_id = await _dead_letter_through_the_worker(database, worker, event)
    handler.error = ValueError("still broken")
    await worker.dead_letters.request_replay([letter_id])

    took = await worker.replay(letter_id)

    assert took is True
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "dead"
    assert letter.replayed_at is None
    assert letter.attempts == 2
    assert len(letter.history) == 2
    assert letter.history[-1]["attempt"] == 2
    assert letter.error == "replay: ValueError: still broken"
    assert letter.history[-1]["error"] == "replay: ValueError: still broken"
    assert await count_rows(database, inbox) == 0
    assert await count_rows(database, case_activity) == 0


async def test_two_workers_replaying_one_dead_letter_run_the_handler_once(
    database: Database,
) -> None:
    handler = Handler()
    workers = [_worker(database, handler) for _ in range(3)]
    event = make_event("c1")
    letter_id = await _record(workers[0].dead_letters, database, event=event)
    await workers[0].dead_letters.request_replay([letter_id])

    await asyncio.gather(*(worker.replay(letter_id) for worker in workers))

    assert handler.calls == [event.id]
    letter = await workers[0].dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "replayed"
    assert await count_rows(database, case_activity) == 1


async def test_replaying_an_event_already_in_the_inbox_does_not_run_the_handler(
    database: Database,
) -> None:
    handler = Handler()
    worker = _worker(database, handler)
    event = make_event("c1")
    letter_id = await _record(worker.dead_letters, database, event=event)
    async with database.transaction() as session:
        await record_in_inbox(session, "tests", event.id)
    await worker.dead_letters.request_replay([letter_id])

    await worker.replay(letter_id)

    assert handler.calls == []
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "replayed"


async def test_a_dead_letter_not_requested_for_replay_is_not_replayed(
    database: Database,
) -> None:
    handler = Handler()
    worker = _worker(database, handler)
    letter_id = await _record(worker.dead_letters, database)

    took = await worker.replay(letter_id)
    missing = await worker.replay(letter_id + 100)

    assert (took, missing) == (False, False)
    assert handler.calls == []
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "dead"


async def test_a_worker_does_not_replay_dead_letters_of_consumers_it_does_not_run(
    database: Database,
) -> None:
    handler = Handler()
    worker = _worker(database, handler)
    letter_id = await _record(worker.dead_letters, database, consumer="someone-else")
    await worker.dead_letters.request_replay([letter_id])

    took = await worker.replay(letter_id)

    assert took is False
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "replay"


async def test_a_dead_letter_whose_body_is_not_an_envelope_fails_its_replay(
    database: Database,
) -> None:
    handler = Handler()
    worker = _worker(database, handler)
    async with database.transaction() as session:
        await worker.dead_letters.record(
            session,
            consumer="tests",
            message_id="garbage-1",
            subject=SUBJECT,
            event_type=None,
            body="not json",
            error="not a CloudEvents envelope: body: Invalid JSON",
            attempt=1,
        )
    [letter] = await worker.dead_letters.list()
    await worker.dead_letters.request_replay([letter.id])

    await worker.replay(letter.id)

    assert handler.calls == []
    after = await worker.dead_letters.get(letter.id)
    assert after is not None
    assert after.state == "dead"
    assert after.attempts == 2
    assert after.error.startswith("replay: ValidationError")


async def test_a_body_whose_id_is_not_the_message_id_is_not_replayed(
    database: Database,
) -> None:
    handler = Handler()
    worker = _worker(database, handler)
    letter_id = await _record(
        worker.dead_letters, database, event=make_event("c1"), message_id="another-id"
    )
    await worker.dead_letters.request_replay([letter_id])

    await worker.replay(letter_id)

    assert handler.calls == []
    letter = await worker.dead_letters.get(letter_id)
    assert letter is not None
    assert letter.state == "dead"
    assert "does not match" in letter.error


async def test_serve_replays_requested_dead_letters_until_stopped(database: Database) -> None:
    handler = Handler(error=Unprocessable("bad data"))
    worker = _worker(database, handler, replay_poll=0.01, purge_interval=0)
    event = make_event("c1")
    letter_id = await _dead_letter_through_the_worker(database, worker, event)
    handler.error = None
    serving = asyncio.create_task(worker.serve())
    try:
        await worker.dead_letters.request_replay([letter_id])

        await eventually(
            lambda: _state_is(worker, letter_id, "replayed"), "the serve loop replays it"
        )
    finally:
        worker.stop()
        await asyncio.wait_for(serving, WAIT_SECONDS)

    assert handler.calls == [event.id, event.id]
    assert await count_rows(database, case_activity) == 1


async def test_serve_purges_the_inbox(database: Database) -> None:
    worker = _worker(database, Handler(), replay_poll=30.0, inbox_retention=timedelta(seconds=1))
    async with database.transaction() as session:
        await record_in_inbox(session, "tests", "m1")
        await session.execute(
            inbox.update().values(processed_at=datetime.now(UTC) - timedelta(days=1))
        )
    serving = asyncio.create_task(worker.serve())
    try:
        await eventually(lambda: _inbox_empty(database), "the purge loop empties the inbox")
    finally:
        worker.stop()
        await asyncio.wait_for(serving, WAIT_SECONDS)

    assert serving.exception() is None


async def _inbox_empty(database: Database) -> bool:
    return await count_rows(database, inbox) == 0


async def _state_is(worker: Worker, letter_id: int, state: str) -> bool:
    letter = await worker.dead_letters.get(letter_id)
    return letter is not None and letter.state == state
