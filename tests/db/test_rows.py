"""`insert_rows` and `insert_new_rows` on both databases: the session's rows, in its transaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from seawall.db import Database, cases, inbox, insert_new_rows, insert_rows, sync_links
from seawall.messaging import Event, Outbox

T0 = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


def case_row(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"case-{number}",
        "title": f"Ticket {number}",
        "status": "open",
        "priority": "medium",
        "external_id": f"500{number}",
        "customer_id": None,
        "metadata": {"source": "crm", "crm": {"Id": f"500{number}", "n": [number, None]}},
        "version": 1,
        "created_at": T0,
        "updated_at": T0,
        **fields,
    }


async def stored_cases(database: Database) -> list[dict[str, Any]]:
    async with database.reading() as session:
        rows = await session.execute(sa.select(cases).order_by(cases.c.id))
        return [dict(row) for row in rows.mappings()]


async def test_rows_read_back_as_the_session_would_have_written_them(database: Database) -> None:
    rows = [case_row(1), case_row(2, created_at=T0.astimezone(timezone(timedelta(hours=2))))]

    async with database.transaction() as session:
        await insert_rows(session, cases, rows)

    stored = await stored_cases(database)
    assert [row["id"] for row in stored] == ["case-1", "case-2"]
    assert stored[0]["metadata"] == rows[0]["metadata"]
    assert stored[1]["created_at"] == T0
    assert stored[1]["created_at"].utcoffset() == timedelta(0)


async def test_the_rows_commit_with_what_the_session_wrote(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(cases.insert().values(case_row(1)))
        await insert_rows(session, cases, [case_row(2)])
        await insert_rows(
            session,
            sync_links,
            [
                {
                    "source": "crm",
                    "external_id": "5002",
                    "case_id": "case-2",
                    "case_version": 1,
                    "remote_updated_at": None,
                    "synced_at": T0,
                }
            ],
        )

    async with database.reading() as session:
        link = (await session.execute(sa.select(sync_links))).mappings().one()
    assert [row["id"] for row in await stored_cases(database)] == ["case-1", "case-2"]
    assert (link["case_id"], link["remote_updated_at"], link["synced_at"]) == ("case-2", None, T0)


async def test_the_rows_roll_back_with_the_transaction(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await insert_rows(session, cases, [case_row(1), case_row(2)])
            raise RuntimeError("the page failed after its rows were written")

    assert await stored_cases(database) == []


async def test_a_duplicate_key_is_sqlalchemys_integrity_error_and_writes_nothing(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await insert_rows(session, cases, [case_row(1)])

    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await insert_rows(session, cases, [case_row(2), case_row(1)])

    assert [row["id"] for row in await stored_cases(database)] == ["case-1"]


async def test_a_naive_datetime_is_refused_before_anything_is_sent(database: Database) -> None:
    naive = case_row(1, updated_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test

    with pytest.raises(ValueError, match="naive datetime"):
        async with database.transaction() as session:
            await insert_rows(session, cases, [naive])

    assert await stored_cases(database) == []


async def test_no_rows_write_nothing(database: Database) -> None:
    async with database.transaction() as session:
        await insert_rows(session, cases, [])

    assert await stored_cases(database) == []


def inbox_row(message_id: str, consumer: str = "g", at: datetime = T0) -> dict[str, Any]:
    return {"consumer": consumer, "message_id": message_id, "processed_at": at}


async def stored_inbox(database: Database) -> list[tuple[str, str, datetime]]:
    async with database.reading() as session:
        rows = await session.execute(
            sa.select(inbox.c.consumer, inbox.c.message_id, inbox.c.processed_at).order_by(
                inbox.c.consumer, inbox.c.message_id
            )
        )
        return [tuple(row) for row in rows]


async def test_insert_new_rows_returns_the_keys_of_the_rows_it_inserted(
    database: Database,
) -> None:
    async with database.transaction() as session:
        first = await insert_new_rows(session, inbox, [inbox_row("m1")], "message_id")
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    async with database.transaction() as session:
        again = await insert_new_rows(
            session,
            inbox,
            [inbox_row("m1"), inbox_row("m2", at=local), inbox_row("m1", consumer="h")],
            "message_id",
        )
        within = await insert_new_rows(session, inbox, [inbox_row("m2")], "message_id")

    assert first == ["m1"]
    assert sorted(again) == ["m1", "m2"]  # m1 of group h, m2 of g: m1 of g was there
    assert within == []  # the transaction sees its own rows
    stored = await stored_inbox(database)
    assert stored == [("g", "m1", T0), ("g", "m2", T0), ("h", "m1", T0)]
    assert all(at.utcoffset() == timedelta(0) for *_, at in stored)


async def test_insert_new_rows_roll_back_with_the_transaction(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            assert await insert_new_rows(session, inbox, [inbox_row("m1")], "message_id")
            raise RuntimeError("the handler failed")

    assert await stored_inbox(database) == []


async def test_insert_new_rows_refused_is_sqlalchemys_error_and_writes_nothing(
    database: Database,
) -> None:
    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await insert_new_rows(
                session, inbox, [inbox_row("m1"), inbox_row("m2", at=None)], "message_id"
            )

    assert await stored_inbox(database) == []


async def test_insert_new_rows_refuses_a_naive_datetime_before_anything_is_sent(
    database: Database,
) -> None:
    naive = inbox_row("m1", at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test

    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with database.transaction() as session:
            await insert_new_rows(session, inbox, [naive], "message_id")

    assert await stored_inbox(database) == []


async def test_insert_new_rows_of_nothing_returns_nothing(database: Database) -> None:
    async with database.transaction() as session:
        assert await insert_new_rows(session, inbox, [], "message_id") == []


async def test_insert_new_rows_beyond_sqlites_parameter_cap_go_through_the_session(
    database: Database,
) -> None:
    rows = [inbox_row(f"m{number}") for number in range(11_000)]  # 33,000 parameters

    async with database.transaction() as session:
        inserted = await insert_new_rows(session, inbox, rows, "message_id")

    assert len(inserted) == 11_000
    assert len(await stored_inbox(database)) == 11_000


async def test_on_postgresql_outbox_rows_wake_other_processes_relays_once(
    database: Database, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("NOTIFY is PostgreSQL's")
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener("seawall_outbox", lambda *args: heard.append(args[2]))
        events = [
            Event.create(type="case.created", source="/seawall/cases", subject=f"case-{n}", data={})
            for n in range(50)
        ]
        async with database.transaction() as session:
            await Outbox().add_all(session, events)
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # time for a second notification, if one were sent
    finally:
        await listener.close()

    async with database.reading() as session:
        written = await session.scalar(sa.text("SELECT count(*) FROM outbox"))
    assert written == 50
    assert heard == ["seawall_outbox"]
