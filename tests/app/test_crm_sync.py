"""CRM sync against `FakeCRM` over real HTTP: tickets become cases, once each.

The feed's pages, crashes between them, conflicts, deletions, the CRM webhook,
and the bridge that pushes our case events back out without an echo.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr
from structlog.testing import capture_logs

from seawall.app import _repository as repo
from seawall.app import create_app
from seawall.app._events import case_updated
from seawall.app._sync import (
    CrmSync,
    Link,
    LocalCase,
    SyncOutcome,
    apply_changes,
    bridge_consumer,
    consumers_with_crm,
    decide,
    push_case_to_crm,
)
from seawall.config import ServiceSettings, Settings, WebhookSettings
from seawall.db import Database, cases, outbox, sync_links
from seawall.errors import ServiceClientError
from seawall.integrations import CasePriority, CaseStatus, CrmCase, SalesforceCRM
from seawall.messaging import _wakeup
from seawall.resilience import RateLimit
from seawall.sync import SyncProgress
from seawall.testing import FakeClock, FakeCRM
from tests.app.test_cases import key
from tests.live_server import free_port

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"crm-webhook-signing-key-32-bytes").decode()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def crm_fake() -> Iterator[FakeCRM]:
    with FakeCRM() as fake:
        yield fake


@pytest.fixture
async def crm(crm_fake: FakeCRM) -> AsyncIterator[SalesforceCRM]:
    # A fake clock: retries and backoffs pass without waiting.
    async with SalesforceCRM.build(
        base_url=crm_fake.url,
        client_id="seawall-crm-client",
        client_secret="seawall-crm-secret",
        clock=FakeClock(),
    ) as adapter:
        yield adapter


@pytest.fixture
def sync(crm: SalesforceCRM, database: Database) -> CrmSync:
    return CrmSync(crm, database, page_size=50)


async def synced_events(database: Database) -> list[dict[str, Any]]:
    async with database.reading() as session:
        rows = await session.execute(
            sa.select(outbox.c.subject, outbox.c.payload)
            .where(outbox.c.event_type == "case.synced")
            .order_by(outbox.c.seq)
        )
        return [{"subject": row.subject, **row.payload} for row in rows]


async def case_of(database: Database, ticket_id: str) -> dict[str, Any]:
    async with database.reading() as session:
        row = (
            (await session.execute(sa.select(cases).where(cases.c.external_id == ticket_id)))
            .mappings()
            .one()
        )
        return dict(row)


async def count(database: Database, table: sa.Table) -> int:
    async with database.reading() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def ticket_at(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the rules (pure) ------------------------------------------------------------------


def crm_case(**fields: Any) -> CrmCase:
    values: dict[str, Any] = {
        "external_id": "500A",
        "title": "Printer on fire",
        "priority": CasePriority.HIGH,
        "status": CaseStatus.OPEN,
        "updated_at": T0,
    }
    return CrmCase(**(values | fields))


def local_case(**fields: Any) -> LocalCase:
    values: dict[str, Any] = {
        "id": "case-1",
        "title": "Printer on fire",
        "status": "open",
        "priority": "high",
        "customer_id": None,
        "version": 3,
        "updated_at": T0,
        "row": {},
    }
    return LocalCase(**(values | fields))


LINK = Link("500A", "case-1", 3, T0)


def test_a_ticket_without_a_case_creates_one_and_a_deleted_one_is_skipped() -> None:
    assert decide(crm_case(), None, None).outcome is SyncOutcome.CREATED
    assert decide(crm_case(deleted=True), None, None).outcome is SyncOutcome.SKIPPED


def test_a_ticket_that_says_what_the_case_says_is_unchanged() -> None:
    assert decide(crm_case(updated_at=T0.replace(hour=5)), local_case(), LINK).outcome is (
        SyncOutcome.UNCHANGED
    )


def test_closed_in_the_crm_matches_a_resolved_case() -> None:
    decision = decide(crm_case(status=CaseStatus.CLOSED), local_case(status="resolved"), LINK)

    assert decision.outcome is SyncOutcome.UNCHANGED


def test_a_change_older_than_the_last_seen_is_stale() -> None:
    older = crm_case(priority=CasePriority.LOW, updated_at=T0.replace(year=2025))

    assert decide(older, local_case(), LINK).outcome is SyncOutcome.STALE


def test_a_crm_change_applies_when_the_case_did_not_change_here() -> None:
    newer = crm_case(priority=CasePriority.LOW, updated_at=T0.replace(hour=1))

    decision = decide(newer, local_case(updated_at=T0.replace(hour=2)), LINK)

    assert decision.outcome is SyncOutcome.UPDATED
    assert decision.changes == {"priority": "low"}


def test_a_local_change_newer_than_the_crms_is_a_conflict_kept_local() -> None:
    crm_change = crm_case(priority=CasePriority.LOW, updated_at=T0.replace(hour=1))
    changed_here = local_case(version=4, updated_at=T0.replace(hour=2))

    assert decide(crm_change, changed_here, LINK).outcome is SyncOutcome.CONFLICT


def test_a_crm_change_newer_than_the_local_one_wins() -> None:
    crm_change = crm_case(priority=CasePriority.LOW, updated_at=T0.replace(hour=3))
    changed_here = local_case(version=4, updated_at=T0.replace(hour=2))

    assert decide(crm_change, changed_here, LINK).outcome is SyncOutcome.UPDATED


def test_a_deletion_closes_the_case_and_a_closed_case_stays_closed() -> None:
    deleted = crm_case(deleted=True, updated_at=T0.replace(hour=1))
    reopened = crm_case(status=CaseStatus.OPEN, updated_at=T0.replace(hour=1))

    assert decide(deleted, local_case(), LINK).changes == {"status": "closed"}
    assert decide(deleted, local_case(status="closed"), LINK).outcome is SyncOutcome.UNCHANGED
    refused = decide(reopened, local_case(status="closed"), LINK)
    assert (refused.outcome, refused.refused) == (SyncOutcome.UNCHANGED, ("status",))


# --- the feed ----------------------------------------------------------------------------


async def test_new_tickets_become_cases_with_one_synced_event_each(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ids = crm_fake.add_tickets(120, Urgency="Critical", State="Working", CustomerId="001X")

    report = await sync.run()
    again = await sync.run()

    assert (report.items, report.applied, again.items) == (120, 120, 0)
    events = await synced_events(database)
    assert len(events) == 120
    assert {event["external_id"] for event in events} == set(ids)
    first = await case_of(database, ids[0])
    assert (first["priority"], first["status"], first["customer_id"]) == (
        "high",
        "in_progress",
        "001X",
    )
    assert first["metadata"]["source"] == "crm"
    assert first["metadata"]["crm"]["Id"] == ids[0]
    assert events[0]["action"] == "created"
    assert events[0]["origin"] == "crm"
    assert await count(database, sync_links) == 120


async def test_the_synced_event_carries_the_case_without_the_crm_record(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="Printer on fire")

    await sync.run()

    events = await synced_events(database)
    case = await case_of(database, ticket["Id"])
    assert events[0]["case"]["metadata"] == {"source": "crm"}
    assert events[0]["case"]["id"] == case["id"] == events[0]["subject"]
    assert case["metadata"]["crm"]["Id"] == ticket["Id"]


async def test_a_synced_page_wakes_the_relays_of_this_process(
    crm_fake: FakeCRM, sync: CrmSync
) -> None:
    crm_fake.add_tickets(3)
    woken = asyncio.Event()
    _wakeup.register(woken)

    try:
        await sync.run()
        await asyncio.wait_for(woken.wait(), timeout=10)
    finally:
        _wakeup.unregister(woken)

    assert woken.is_set()


async def test_a_changed_ticket_updates_its_case_and_an_unchanged_one_writes_nothing(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    changed = crm_fake.add_ticket(Subject="Broken", Urgency="Low")
    same = crm_fake.add_ticket(Subject="Fine")
    await sync.run()
    before = await case_of(database, same["Id"])

    crm_fake.update_ticket(changed["Id"], Urgency="High", State="Working")
    crm_fake.update_ticket(same["Id"], Description="only a field we do not sync")
    report = await sync.run()

    events = await synced_events(database)
    assert (report.items, report.applied, len(events)) == (2, 1, 3)
    assert events[-1]["action"] == "updated"
    assert events[-1]["changes"] == {
        "priority": {"from": "low", "to": "high"},
        "status": {"from": "open", "to": "in_progress"},
    }
    assert events[-1]["case"]["version"] == 2
    after = await case_of(database, same["Id"])
    assert (after["version"], after["updated_at"]) == (before["version"], before["updated_at"])


async def test_a_deleted_ticket_closes_its_case(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="Gone soon")
    await sync.run()

    crm_fake.delete_ticket(ticket["Id"])
    await sync.run()

    case = await case_of(database, ticket["Id"])
    events = await synced_events(database)
    assert case["status"] == "closed"
    assert events[-1]["action"] == "closed"
    assert events[-1]["changes"] == {"status": {"from": "open", "to": "closed"}}


async def test_a_local_change_newer_than_the_crms_is_kept_and_reported(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="Disputed", LastModifiedDate=ticket_at(T0))
    await sync.run()
    case = await case_of(database, ticket["Id"])
    async with database.transaction() as session:
        found = await repo.get_case(session, case["id"])
        assert found is not None
        await repo.update_case(session, found, {"status": "in_progress"})
    crm_fake.update_ticket(
        ticket["Id"], State="Closed", LastModifiedDate=ticket_at(T0.replace(hour=1))
    )

    with capture_logs() as logs:
        await sync.run()

    kept = await case_of(database, ticket["Id"])
    assert kept["status"] == "in_progress"
    assert sync.conflicts == 1
    conflict = next(line for line in logs if line["event"] == "crm_sync_conflict")
    assert (conflict["case_id"], conflict["kept"], conflict["fields"]) == (
        case["id"],
        "local",
        ["status"],
    )
    assert len(await synced_events(database)) == 1


async def test_a_crm_change_newer_than_the_local_one_is_applied(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="Disputed", LastModifiedDate=ticket_at(T0))
    await sync.run()
    case = await case_of(database, ticket["Id"])
    async with database.transaction() as session:
        found = await repo.get_case(session, case["id"])
        assert found is not None
        await repo.update_case(session, found, {"status": "in_progress"})

    crm_fake.update_ticket(ticket["Id"], State="Closed")  # now: after the local change
    await sync.run()

    assert (await case_of(database, ticket["Id"]))["status"] == "closed"


async def test_a_crash_between_pages_resumes_with_nothing_lost_or_doubled(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ids = crm_fake.add_tickets(430)
    committed: list[SyncProgress] = []

    def crash_after_three_pages(progress: SyncProgress) -> None:
        committed.append(progress)
        if progress.pages == 3:
            # The next request for a page fails for good (a 400 is not retried).
            crm_fake.chaos.fail_next(1, status=400, path_prefix="/api/v1/changes")

    with pytest.raises(ServiceClientError):
        await sync.run(on_page=crash_after_three_pages)
    after_crash = await synced_events(database)
    resumed = await sync.run()

    events = await synced_events(database)
    assert len(after_crash) == committed[-1].applied == committed[-1].pages * 50
    assert resumed.started_from == committed[-1].cursor
    assert len(events) == 430
    assert sorted(event["external_id"] for event in events) == sorted(ids)
    assert await count(database, cases) == 430


async def test_a_page_that_fails_midway_writes_nothing_of_itself(
    crm_fake: FakeCRM, crm: SalesforceCRM, database: Database
) -> None:
    crm_fake.add_tickets(100)
    pages = 0

    class CrashingSync(CrmSync):
        async def _apply(self, session: Any, page: Any) -> int:
            nonlocal pages
            pages += 1
            applied = await super()._apply(session, page)
            if pages == 2:
                raise RuntimeError("killed after writing half a page")
            return applied

    with pytest.raises(RuntimeError):
        await CrashingSync(crm, database, page_size=50).run()
    after_crash = await synced_events(database)
    await CrmSync(crm, database, page_size=50).run()

    assert len(after_crash) == 50
    assert len(await synced_events(database)) == 100
    assert await count(database, cases) == 100


async def test_a_full_resync_reapplies_nothing_that_is_already_there(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="Once")
    crm_fake.update_ticket(ticket["Id"], Urgency="High")
    crm_fake.add_tickets(60)
    await sync.run()

    report = await sync.run(full=True)

    assert (report.items, report.applied) == (62, 0)
    assert len(await synced_events(database)) == 61
    assert await sync.loop().cursor() == "62"


async def test_a_full_resync_takes_the_rate_limit_before_each_page(
    crm_fake: FakeCRM, crm: SalesforceCRM, database: Database
) -> None:
    crm_fake.add_tickets(120)
    clock = FakeClock()
    limit = RateLimit("1/second", name="crm-full", mode="wait", max_wait=60, clock=clock)
    sync = CrmSync(crm, database, page_size=50, rate_limit=limit)

    await sync.run(full=True)

    assert clock.monotonic() >= 2.0  # three pages: two waits of a second on the fake clock


async def test_changes_to_other_records_are_skipped(
    crm_fake: FakeCRM, crm: SalesforceCRM, database: Database
) -> None:
    crm_fake.add_customer(Name="Ada")
    changes = (await crm.changes()).changes

    async with database.transaction() as session:
        result = await apply_changes(session, changes)

    assert result.counts == {SyncOutcome.SKIPPED: 1}


# --- the service: bridge, loop prevention, webhook --------------------------------------


def crm_settings(settings: Settings, fake: FakeCRM, **sync: Any) -> Settings:
    return settings.model_copy(
        update={
            "services": {
                "crm": ServiceSettings(
                    base_url=fake.url,
                    client_id="seawall-crm-client",
                    client_secret=SecretStr("seawall-crm-secret"),
                    token_url=f"{fake.url}/oauth/token",
                )
            },
            "webhooks": {
                "crm": WebhookSettings(secrets=[SecretStr(WEBHOOK_SECRET)], scheme="standard")
            },
            "sync": settings.sync.model_validate({"crm": sync}),
        }
    )


async def eventually(check: Callable[[], Any], what: str) -> Any:
    for _ in range(500):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def serving(settings: Settings, database: Database) -> AsyncIterator[str]:
    """The service on a real port (webhooks come over HTTP), with its worker and relay."""
    app = create_app(settings, database=database)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the server started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_our_cases_go_out_to_the_crm_and_do_not_come_back_as_changes(
    crm_fake: FakeCRM, settings: Settings, database: Database
) -> None:
    configured = crm_settings(settings, crm_fake)
    async with serving(configured, database) as url, httpx.AsyncClient(base_url=url) as client:
        created = await client.post(
            "/cases", json={"title": "Made here", "priority": "low"}, headers=key()
        )
        case_id = created.json()["id"]

        def ticket() -> dict[str, Any] | None:
            return next((t for t in crm_fake.tickets.values() if t["ExternalRef"] == case_id), None)

        await eventually(ticket, "the bridge created the ticket")
        patched = await client.patch(f"/cases/{case_id}", json={"status": "resolved"})
        assert patched.status_code == 200
        await eventually(lambda: (ticket() or {}).get("State") == "Closed", "the ticket closed")
        crm_changes = len(crm_fake.changes)

        async with SalesforceCRM.build(
            base_url=crm_fake.url,
            client_id="seawall-crm-client",
            client_secret="seawall-crm-secret",
        ) as crm:
            sync = CrmSync(crm, database, page_size=50)
            report = await sync.run()
            await sync.run()

        async with database.reading() as session:
            row = (await session.execute(sa.select(cases).where(cases.c.id == case_id))).first()
        assert row is not None
        assert (row.status, row.version) == ("resolved", 2)
        assert report.applied == 0
        assert await synced_events(database) == []
        assert await count(database, cases) == 1
        assert len(crm_fake.changes) == crm_changes


async def test_a_crm_change_synced_into_a_case_is_not_echoed_back(
    crm_fake: FakeCRM, settings: Settings, database: Database
) -> None:
    ticket = crm_fake.add_ticket(Subject="From the CRM")
    configured = crm_settings(settings, crm_fake, interval=0.05)
    async with serving(configured, database) as url, httpx.AsyncClient(base_url=url) as client:
        await eventually(lambda: synced_events(database), "the schedule synced the ticket")
        crm_fake.update_ticket(ticket["Id"], Urgency="High")

        async def updated() -> bool:
            return len(await synced_events(database)) == 2

        await eventually(updated, "the change was synced")
        case = await case_of(database, ticket["Id"])
        listed = await client.get(f"/cases/{case['id']}")
        await asyncio.sleep(0.3)  # several more scheduled rounds and worker passes

    assert listed.json()["priority"] == "high"
    assert len(await synced_events(database)) == 2
    assert len(crm_fake.changes) == 2  # the add and the update: nothing was pushed back
    assert all(
        request.method == "GET" or request.path == "/oauth/token" for request in crm_fake.requests
    )


async def test_a_crm_webhook_syncs_the_one_ticket_it_names(
    crm_fake: FakeCRM, settings: Settings, database: Database
) -> None:
    named = crm_fake.add_ticket(Subject="Named", State="Escalated")
    crm_fake.add_ticket(Subject="Not named")
    configured = crm_settings(settings, crm_fake)
    async with serving(configured, database) as url:
        status = await asyncio.to_thread(
            crm_fake.send_webhook, f"{url}/webhooks/crm", WEBHOOK_SECRET, named["Id"]
        )
        await eventually(lambda: synced_events(database), "the webhook synced the ticket")
        forged = await asyncio.to_thread(
            crm_fake.send_webhook, f"{url}/webhooks/crm", "whsec_" + "A" * 44, named["Id"]
        )
        crm_fake.delete_ticket(named["Id"])
        await asyncio.to_thread(
            crm_fake.send_webhook, f"{url}/webhooks/crm", WEBHOOK_SECRET, named["Id"]
        )

        async def closed() -> bool:
            return (await case_of(database, named["Id"]))["status"] == "closed"

        await eventually(closed, "the deletion closed the case")

    assert (status, forged) == (200, 401)
    events = await synced_events(database)
    assert [event["action"] for event in events] == ["created", "closed"]
    assert await count(database, cases) == 1
    assert (await case_of(database, named["Id"]))["metadata"]["crm"]["State"] == "Escalated"


def test_the_bridge_runs_only_where_a_crm_is_configured(
    crm_fake: FakeCRM, settings: Settings
) -> None:
    without = consumers_with_crm(settings)
    with_crm = consumers_with_crm(crm_settings(settings, crm_fake))

    assert without is None
    assert with_crm is not None
    assert bridge_consumer in with_crm
    assert "activity__from_cases" in {consumer.durable for consumer in with_crm}


async def test_the_bridge_pushes_a_local_change_and_skips_a_ticket_deleted_in_the_crm(
    crm_fake: FakeCRM, sync: CrmSync, database: Database
) -> None:
    kept = crm_fake.add_ticket(Subject="Kept")
    gone = crm_fake.add_ticket(Subject="Gone")
    await sync.run()
    crm_fake.delete_ticket(gone["Id"])
    outcomes = []
    for ticket in (kept, gone):
        case = await case_of(database, ticket["Id"])
        async with database.transaction() as session:
            found = await repo.get_case(session, case["id"])
            assert found is not None
            updated = await repo.update_case(session, found, {"priority": "low"})
            assert updated is not None
            event = case_updated(updated, {"priority": {"from": "medium", "to": "low"}})
            outcomes.append(await push_case_to_crm(event, session, sync))

    assert outcomes == ["updated", "skipped"]
    assert crm_fake.tickets[kept["Id"]]["Urgency"] == "Low"
    assert (await sync.run()).applied == 1  # the deletion closes the other case
    assert (await case_of(database, gone["Id"]))["status"] == "closed"
