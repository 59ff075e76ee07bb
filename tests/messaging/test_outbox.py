"""`seawall.messaging`: the CloudEvents envelope and `Outbox.add`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from seawall.db import Database, outbox
from seawall.messaging import Event, Outbox
from seawall.observability import bind_correlation


def test_create_fills_id_time_and_context_correlation() -> None:
    with bind_correlation("corr-1", "cause-1"):
        event = Event.create("case.created", source="/cases", subject="c1", data={"a": 1})

    assert event.specversion == "1.0"
    assert event.datacontenttype == "application/json"
    assert event.id
    assert event.time.tzinfo == UTC
    assert (event.correlationid, event.causationid) == ("corr-1", "cause-1")
    assert event.aggregate_type == "case"


def test_explicit_ids_win_over_the_context() -> None:
    with bind_correlation("ctx"):
        event = Event.create("case.created", source="/c", correlation_id="mine", causation_id="e1")

    assert (event.correlationid, event.causationid) == ("mine", "e1")


@pytest.mark.parametrize("bad_type", ["Case.Created", "case", "case created", ".case.x"])
def test_event_types_are_lower_dotted(bad_type: str) -> None:
    with pytest.raises(ValidationError, match="lower dotted"):
        Event.create(bad_type, source="/c")


def test_event_time_must_be_aware() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Event.create("case.created", source="/c", time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_envelope_serialises_as_cloudevents_json() -> None:
    event = Event.create("case.created", source="/cases", subject="c1", data={"a": 1})

    document = event.model_dump(mode="json")

    assert set(document) >= {"specversion", "id", "source", "type", "time", "data"}
    assert Event.model_validate_json(event.model_dump_json()) == event


async def test_add_writes_inside_the_callers_transaction(database: Database) -> None:
    event = Event.create("case.created", source="/cases", subject="c1", data={"a": 1})

    async with database.transaction() as session:
        await Outbox().add(session, event)

    async with database.sessions() as session:
        row = (await session.execute(sa.select(outbox))).mappings().one()
    assert Outbox.envelope(row) == event
    assert (row["aggregate_type"], row["aggregate_id"]) == ("case", "c1")
    assert row["attempts"] == 0
    assert row["published_at"] is None


async def test_a_rolled_back_transaction_leaves_no_event(database: Database) -> None:
    event = Event.create("case.created", source="/cases", subject="c1")

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await Outbox().add(session, event)
            raise RuntimeError("the change failed")

    async with database.sessions() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(outbox))).scalar() == 0


async def test_aggregate_can_be_named_explicitly(database: Database) -> None:
    event = Event.create("payment.captured", source="/payments")

    async with database.transaction() as session:
        await Outbox().add(session, event, aggregate_type="invoice", aggregate_id="inv-1")

    async with database.sessions() as session:
        row = (await session.execute(sa.select(outbox))).mappings().one()
    assert (row["aggregate_type"], row["aggregate_id"]) == ("invoice", "inv-1")


async def test_an_event_without_aggregate_is_refused(database: Database) -> None:
    event = Event.create("payment.captured", source="/payments")

    with pytest.raises(ValueError, match="aggregate_id"):
        async with database.transaction() as session:
            await Outbox().add(session, event)
