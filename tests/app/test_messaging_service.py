"""The service runs the relay and its own consumer: the case timeline and dependency health."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from seawall.app import create_app
from seawall.config import Settings
from seawall.db import Database, case_activity, inbox, outbox
from tests.app.test_cases import NEW_CASE, key
from tests.live_server import free_port


async def timeline(client: httpx.AsyncClient, case_id: str, length: int) -> list[dict[str, str]]:
    for _ in range(200):
        response = await client.get(f"/cases/{case_id}/activity")
        assert response.status_code == 200
        lines: list[dict[str, str]] = response.json()["data"]
        if len(lines) >= length:
            return lines
        await asyncio.sleep(0.05)
    pytest.fail(f"the timeline of {case_id} never reached {length} lines: {lines}")


async def test_each_change_reaches_the_timeline_once(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = (await client.post("/cases", json=NEW_CASE, headers=key())).json()
    changed = await client.patch(
        f"/cases/{created['id']}", json={"status": "in_progress"}, headers={"If-Match": '"v1"'}
    )
    assert changed.status_code == 200

    lines = await timeline(client, created["id"], 2)

    assert [line["type"] for line in lines] == ["case.created", "case.updated"]
    assert lines[1]["summary"] == "updated: status open -> in_progress"
    assert lines[1]["correlation_id"] == changed.headers["x-correlation-id"]

    async def unpublished_and_remembered() -> tuple[int, int]:
        async with database.sessions() as session:
            unpublished = await session.scalar(
                sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
            )
            remembered = await session.scalar(sa.select(sa.func.count()).select_from(inbox))
        return int(unpublished or 0), int(remembered or 0)

    # The relay marks rows after publishing, so a handler may finish first.
    for _ in range(200):
        if await unpublished_and_remembered() == (0, 2):
            break
        await asyncio.sleep(0.05)
    assert await unpublished_and_remembered() == (0, 2)
    await asyncio.sleep(0.2)
    assert len(await timeline(client, created["id"], 2)) == 2


async def test_the_timeline_of_an_unknown_case_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/cases/nope/activity")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_a_bad_timeline_limit_is_422(client: httpx.AsyncClient, limit: str) -> None:
    created = (await client.post("/cases", json=NEW_CASE, headers=key())).json()

    response = await client.get(f"/cases/{created['id']}/activity", params={"limit": limit})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_dependencies_report_database_bus_and_outbox(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/dependencies")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["dependencies"]) == {"database", "bus", "outbox"}
    assert body["dependencies"]["database"]["critical"] is True
    bus = body["dependencies"]["bus"]
    assert (bus["status"], bus["critical"], bus["details"]["kind"]) == (
        "healthy",
        False,
        "inprocess",
    )
    assert bus["details"]["consumers"] == [
        "activity__from_cases",
        "documents__importer",
        "webhooks__processor",
    ]
    assert body["dependencies"]["outbox"]["details"]["pending"] == 0


async def test_a_broker_outage_degrades_but_still_accepts_changes(
    settings: Settings, database: Database
) -> None:
    down = settings.model_copy(
        update={
            "nats_url": SecretStr(f"nats://127.0.0.1:{free_port()}"),
            "health_interval_seconds": 0.05,
        }
    )
    app = create_app(down, database=database)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://seawall.test"
        ) as client,
    ):
        created = await client.post("/cases", json=NEW_CASE, headers=key())
        # The checks run in the background: wait for a round that saw the new event.
        for _ in range(200):
            response = await client.get("/health/dependencies")
            body = response.json()
            if body["dependencies"]["outbox"]["details"]["pending"] == 1:
                break
            await asyncio.sleep(0.02)

    assert created.status_code == 201
    assert response.status_code == 200
    assert body["status"] == "degraded"
    bus = body["dependencies"]["bus"]
    assert (bus["status"], bus["healthy"], bus["details"]["kind"]) == ("unhealthy", False, "nats")
    assert bus["error"]
    assert body["dependencies"]["outbox"]["details"]["pending"] == 1


async def test_a_batch_of_case_events_is_one_transaction_of_two_hops_on_sqlite(
    database: Database, hops: list[str]
) -> None:
    # The timeline's rows go with the batch's COMMIT (`insert_rows(along=True)`):
    # the inbox insert (with the BEGIN) and the COMMIT, however many events.
    from seawall.app.consumers import ACTIVITY_CONSUMER
    from seawall.messaging import InProcessBus, Worker, registry
    from tests.messaging.conftest import make_event

    spec = next(spec for spec in registry if spec.durable == ACTIVITY_CONSUMER)
    worker = Worker(database, InProcessBus(), [spec])
    events = [
        make_event(f"case-{i}", type="case.created", data={"title": f"t{i}"}) for i in range(5)
    ]

    async with database.transaction() as session:  # the pool's connection is open
        await session.execute(sa.select(1))
    hops.clear()

    applied = await worker.apply_many(spec, events)

    assert applied == [True] * 5
    if database.dialect == "sqlite":
        assert hops == ["_run", "_commit"]
    async with database.reading() as session:
        recorded = await session.execute(
            sa.select(case_activity.c.event_id, case_activity.c.summary).order_by(
                case_activity.c.id
            )
        )
        assert [(row.event_id, row.summary) for row in recorded] == [
            (event.id, f"created: t{i}") for i, event in enumerate(events)
        ]
