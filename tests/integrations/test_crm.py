"""The CRM: `SalesforceCRM` against `FakeCRM` (real HTTP, OAuth 2.0), and `InMemoryCRM`.

Behaviour both must share runs on both (the ``backend`` fixture); token
renewal, retries, unknown values and malformed feeds run on `SalesforceCRM`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from seawall.errors import InvalidResponse, ServiceClientError, ServiceUnavailable
from seawall.integrations import (
    CRM,
    CaseDraft,
    CasePriority,
    CaseStatus,
    CaseUpdate,
    CustomerDraft,
    CustomerUpdate,
    DuplicateRecord,
    InMemoryCRM,
    RecordNotFound,
    SalesforceCRM,
)
from seawall.testing import FakeClock, FakeCRM

COUNTER = "seawall_acl_unknown_values_total"


def salesforce(
    fake: FakeCRM, clock: FakeClock, registry: CollectorRegistry | None = None, **options: Any
) -> SalesforceCRM:
    return SalesforceCRM.build(
        base_url=fake.url,
        client_id="seawall-crm-client",
        client_secret="seawall-crm-secret",
        clock=clock,
        registry=registry,
        **options,
    )


@dataclass
class Backend:
    crm: CRM
    delete_ticket: Callable[[str], None]


@pytest.fixture(params=["salesforce", "memory"])
async def backend(
    request: pytest.FixtureRequest, clock: FakeClock, registry: CollectorRegistry
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = InMemoryCRM(clock=clock)
        yield Backend(memory, memory.delete_ticket)
        return
    fake: FakeCRM = request.getfixturevalue("crm_fake")
    async with salesforce(fake, clock, registry) as crm:
        yield Backend(crm, fake.delete_ticket)


# --- both implementations ------------------------------------------------------------


async def test_customers_are_created_read_changed_and_listed(backend: Backend) -> None:
    crm = backend.crm

    created = await crm.create_customer(CustomerDraft(name="Ada", email="ada@example.com"))
    changed = await crm.update_customer(created.id, CustomerUpdate(tier="Gold"))

    assert created.tier == "standard"
    assert changed.tier == "gold"
    assert changed.email == "ada@example.com"
    assert await crm.get_customer(created.id) == changed
    assert [c.id for c in await crm.list_customers()] == [created.id]
    assert await crm.get_customer("001999999999999AAA") is None


async def test_a_case_is_created_as_a_ticket_and_read_back_as_a_case(backend: Backend) -> None:
    draft = CaseDraft(
        title="Refund not received",
        description="since Monday",
        priority=CasePriority.HIGH,
        customer_id="001A",
        reference="case-1",
    )

    case = await backend.crm.create_ticket(draft)

    assert case.title == "Refund not received"
    assert case.priority is CasePriority.HIGH
    assert case.status is CaseStatus.OPEN
    assert case.customer_id == "001A"
    assert case.reference == "case-1"
    assert case.source == "crm"
    assert case.metadata["crm"]["Urgency"] == "High"
    assert await backend.crm.get_ticket(case.external_id) == case


async def test_a_resolved_case_reads_back_closed(backend: Backend) -> None:
    case = await backend.crm.create_ticket(CaseDraft(title="t"))

    updated = await backend.crm.update_ticket(
        case.external_id, CaseUpdate(status=CaseStatus.RESOLVED)
    )

    assert updated.status is CaseStatus.CLOSED
    assert updated.metadata["crm"]["State"] == "Closed"


async def test_tickets_are_listed_by_customer_and_by_reference(backend: Backend) -> None:
    crm = backend.crm
    mine = await crm.create_ticket(CaseDraft(title="a", customer_id="001A", reference="r-1"))
    await crm.create_ticket(CaseDraft(title="b", customer_id="001B"))

    by_customer = await crm.list_tickets(customer_id="001A")
    by_reference = await crm.list_tickets(reference="r-1")

    assert [c.external_id for c in by_customer] == [mine.external_id]
    assert [c.external_id for c in by_reference] == [mine.external_id]
    assert len(await crm.list_tickets()) == 2


async def test_a_reference_in_use_is_a_duplicate(backend: Backend) -> None:
    await backend.crm.create_ticket(CaseDraft(title="a", reference="case-1"))

    with pytest.raises(DuplicateRecord) as caught:
        await backend.crm.create_ticket(CaseDraft(title="b", reference="case-1"))

    assert isinstance(caught.value, ServiceClientError)
    assert caught.value.fields == ["ExternalRef"]
    assert caught.value.code == "DUPLICATE_VALUE"


async def test_changing_a_missing_ticket_is_record_not_found(backend: Backend) -> None:
    with pytest.raises(RecordNotFound) as caught:
        await backend.crm.update_ticket("500999999999999AAA", CaseUpdate(title="x"))

    assert caught.value.status == 404
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.record_id == "500999999999999AAA"


async def test_a_deleted_ticket_is_gone_and_the_feed_says_so(backend: Backend) -> None:
    case = await backend.crm.create_ticket(CaseDraft(title="t"))
    backend.delete_ticket(case.external_id)

    with pytest.raises(RecordNotFound) as caught:
        await backend.crm.update_ticket(case.external_id, CaseUpdate(title="x"))
    page = await backend.crm.changes()

    assert await backend.crm.get_ticket(case.external_id) is None
    assert caught.value.code == "ENTITY_IS_DELETED"
    assert [(c.kind, c.deleted) for c in page.changes] == [("ticket", False), ("ticket", True)]
    last = page.changes[-1].case
    assert last is not None
    assert last.deleted


async def test_the_change_feed_is_read_page_by_page(backend: Backend) -> None:
    crm = backend.crm
    customer = await crm.create_customer(CustomerDraft(name="Ada"))
    case = await crm.create_ticket(CaseDraft(title="t", customer_id=customer.id))
    await crm.update_ticket(case.external_id, CaseUpdate(priority=CasePriority.LOW))

    first = await crm.changes(limit=2)
    second = await crm.changes(first.next_cursor, limit=2)
    third = await crm.changes(second.next_cursor)

    assert [(c.kind, c.id) for c in first.changes] == [
        ("customer", customer.id),
        ("ticket", case.external_id),
    ]
    assert first.has_more
    assert first.changes[0].customer is not None
    assert first.changes[0].customer.name == "Ada"
    assert [c.case.priority for c in second.changes if c.case] == [CasePriority.LOW]
    assert not second.has_more
    assert third.changes == []
    assert third.next_cursor == second.next_cursor


async def test_a_cursor_from_elsewhere_is_refused(backend: Backend) -> None:
    with pytest.raises(ServiceClientError) as caught:
        await backend.crm.changes("abc")

    assert caught.value.status == 400
    assert caught.value.code == "INVALID_CURSOR"


@pytest.mark.parametrize("limit", [0, 1001])
async def test_a_page_size_out_of_range_is_refused(backend: Backend, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await backend.crm.changes(limit=limit)


# --- over HTTP only ------------------------------------------------------------------


async def test_unknown_values_are_counted_every_time_and_logged_once(
    crm_fake: FakeCRM, clock: FakeClock, registry: CollectorRegistry
) -> None:
    record = crm_fake.add_ticket(Subject="odd", Urgency="Blocker", State="Pending")

    async with salesforce(crm_fake, clock, registry) as crm:
        with capture_logs() as logs:
            case = await crm.get_ticket(record["Id"])
            await crm.list_tickets()
            await crm.changes()

    assert case is not None
    assert (case.priority, case.status) == (CasePriority.MEDIUM, CaseStatus.OPEN)
    labels = {"adapter": "salesforce", "field": "priority"}
    assert registry.get_sample_value(COUNTER, labels) == 3
    assert registry.get_sample_value(COUNTER, {**labels, "field": "status"}) == 3
    logged = [line for line in logs if line["event"] == "acl_unknown_value"]
    assert [(line["field"], line["value"]) for line in logged] == [
        ("priority", "Blocker"),
        ("status", "Pending"),
    ]


async def test_a_revoked_token_is_renewed_once_and_the_call_succeeds(
    crm_fake: FakeCRM, clock: FakeClock
) -> None:
    async with salesforce(crm_fake, clock) as crm:
        created = await crm.create_ticket(CaseDraft(title="t"))
        crm_fake.revoke_tokens()

        case = await crm.get_ticket(created.external_id)

    assert case == created
    assert crm_fake.token_requests == 2
    paths = [r.path for r in crm_fake.requests if r.path.startswith("/api")]
    again = f"/api/v1/tickets/{created.external_id}"
    assert paths == ["/api/v1/tickets", again, again]


async def test_wrong_client_credentials_are_a_client_error_without_the_secret(
    crm_fake: FakeCRM, clock: FakeClock
) -> None:
    crm = SalesforceCRM.build(
        base_url=crm_fake.url,
        client_id="seawall-crm-client",
        client_secret="not-the-secret",
        clock=clock,
    )

    async with crm:
        with pytest.raises(ServiceClientError) as caught:
            await crm.list_customers()

    # The token endpoint answered 401; seawall.http reports Authlib's error, which drops it.
    assert caught.value.code == "invalid_client"
    assert "not-the-secret" not in str(caught.value)
    assert "not-the-secret" not in repr(crm) + repr(crm.service.auth)


async def test_an_update_is_retried_after_an_outage(crm_fake: FakeCRM, clock: FakeClock) -> None:
    async with salesforce(crm_fake, clock) as crm:
        case = await crm.create_ticket(CaseDraft(title="t"))
        crm_fake.chaos.fail_next(1, status=503, path_prefix="/api/v1/tickets")

        updated = await crm.update_ticket(case.external_id, CaseUpdate(title="new"))

    assert updated.title == "new"
    assert [r.method for r in crm_fake.requests if r.path.startswith("/api")] == [
        "POST",
        "PATCH",
        "PATCH",
    ]


async def test_a_create_is_not_retried(crm_fake: FakeCRM, clock: FakeClock) -> None:
    async with salesforce(crm_fake, clock) as crm:
        await crm.list_tickets()
        crm_fake.chaos.fail_next(1, status=503, path_prefix="/api/v1/tickets")

        with pytest.raises(ServiceUnavailable):
            await crm.create_ticket(CaseDraft(title="t"))

    assert [r.method for r in crm_fake.requests if r.path.startswith("/api")] == ["GET", "POST"]
    assert crm_fake.tickets == {}


async def test_the_crm_message_reaches_the_error(crm_fake: FakeCRM, clock: FakeClock) -> None:
    async with salesforce(crm_fake, clock) as crm:
        with pytest.raises(RecordNotFound) as caught:
            await crm.update_customer("001999999999999AAA", CustomerUpdate(name="x"))

    assert caught.value.provider_message == "The requested resource does not exist"
    assert caught.value.path == "/api/v1/customers/{id}"
    assert caught.value.correlation_id


async def test_a_feed_entry_that_does_not_fit_refuses_the_page(
    crm_fake: FakeCRM, clock: FakeClock
) -> None:
    crm_fake.add_ticket(Subject="ok")
    crm_fake.add_ticket(Subject="broken", LastModifiedDate="yesterday")

    async with salesforce(crm_fake, clock) as crm:
        with pytest.raises(InvalidResponse) as caught:
            await crm.changes()

    assert "change 2" in str(caught.value)
    assert caught.value.errors
    assert "LastModifiedDate" in caught.value.errors[0]
    assert "yesterday" not in str(caught.value) + "".join(caught.value.errors)


async def test_the_in_memory_crm_fails_on_demand() -> None:
    crm = InMemoryCRM()
    outage = ServiceUnavailable("answered 503", service="crm", status=503)
    crm.fail_next(outage)

    with pytest.raises(ServiceUnavailable):
        await crm.list_tickets()

    assert await crm.list_tickets() == []
