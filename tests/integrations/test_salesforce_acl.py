"""The CRM's anti-corruption layer: pure translations, tested without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

# The domain is the service's, not the library's: imported here only to keep the
# copies of its enums honest.
from seawall.app._domain import CaseCreate, Priority, Status
from seawall.integrations import (
    CaseDraft,
    CasePriority,
    CaseStatus,
    CaseUpdate,
    CustomerDraft,
    CustomerUpdate,
    SalesforceChange,
    SalesforceCustomer,
    SalesforceTicket,
    case_from_ticket,
    change_from_feed,
    customer_fields,
    customer_from_record,
    ticket_fields,
)


def ticket(**fields: Any) -> SalesforceTicket:
    record = {
        "Id": "500000000000001AAA",
        "Subject": "Refund not received",
        "Description": "since Monday",
        "Urgency": "High",
        "State": "Working",
        "CustomerId": "001000000000001AAA",
        "ExternalRef": None,
        "LastModifiedDate": "2027-01-15T10:30:00.000Z",
        "IsDeleted": False,
        **fields,
    }
    return SalesforceTicket.model_validate(record)


def test_our_enums_have_the_values_of_the_domain() -> None:
    assert [p.value for p in CasePriority] == [p.value for p in Priority]
    assert [s.value for s in CaseStatus] == [s.value for s in Status]


@pytest.mark.parametrize(
    ("urgency", "priority"),
    [
        ("Low", CasePriority.LOW),
        ("Medium", CasePriority.MEDIUM),
        ("High", CasePriority.HIGH),
        ("Critical", CasePriority.HIGH),
    ],
)
def test_urgency_maps_to_priority(urgency: str, priority: CasePriority) -> None:
    translated = case_from_ticket(ticket(Urgency=urgency))

    assert translated.value.priority is priority
    assert translated.unknown == ()


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("New", CaseStatus.OPEN),
        ("Working", CaseStatus.IN_PROGRESS),
        ("Escalated", CaseStatus.IN_PROGRESS),
        ("Closed", CaseStatus.CLOSED),
    ],
)
def test_state_maps_to_status(state: str, status: CaseStatus) -> None:
    assert case_from_ticket(ticket(State=state)).value.status is status


def test_unknown_values_take_safe_defaults_and_are_reported() -> None:
    translated = case_from_ticket(ticket(Urgency="Blocker", State="Pending"))

    assert translated.value.priority is CasePriority.MEDIUM
    assert translated.value.status is CaseStatus.OPEN
    assert [(u.field, u.value, u.default) for u in translated.unknown] == [
        ("priority", "Blocker", "medium"),
        ("status", "Pending", "open"),
    ]


def test_a_missing_urgency_is_an_unknown_value() -> None:
    translated = case_from_ticket(ticket(Urgency=None))

    assert translated.value.priority is CasePriority.MEDIUM
    assert [(u.field, u.value) for u in translated.unknown] == [("priority", "null")]


def test_a_ticket_becomes_a_case_with_the_record_kept_whole() -> None:
    record = ticket(Custom__c="kept", ExternalRef="case-7")

    case = case_from_ticket(record).value

    assert case.external_id == "500000000000001AAA"
    assert case.title == "Refund not received"
    assert case.description == "since Monday"
    assert case.customer_id == "001000000000001AAA"
    assert case.reference == "case-7"
    assert case.source == "crm"
    assert case.updated_at == datetime(2027, 1, 15, 10, 30, tzinfo=UTC)
    assert case.metadata["crm"]["Custom__c"] == "kept"
    assert case.metadata["crm"]["Urgency"] == "High"


def test_a_case_from_the_crm_fits_the_domain() -> None:
    case = case_from_ticket(ticket(Urgency="Critical")).value

    created = CaseCreate(**case.case_fields())

    assert created.priority is Priority.HIGH
    assert created.external_id == case.external_id
    assert created.metadata["source"] == "crm"
    assert created.metadata["crm"]["Urgency"] == "Critical"


@pytest.mark.parametrize(
    ("subject", "title"),
    [
        ("  Refund\n not   received ", "Refund not received"),
        ("", "(no subject)"),
        (None, "(no subject)"),
        ("x" * 300, "x" * 200),
        ("a\x00b", "ab"),
    ],
)
def test_subjects_become_titles_the_domain_accepts(subject: str | None, title: str) -> None:
    assert case_from_ticket(ticket(Subject=subject)).value.title == title


def test_a_timestamp_without_a_zone_is_utc() -> None:
    case = case_from_ticket(ticket(LastModifiedDate="2027-01-15T10:30:00")).value

    assert case.updated_at == datetime(2027, 1, 15, 10, 30, tzinfo=UTC)


def test_a_record_without_an_id_does_not_validate() -> None:
    with pytest.raises(ValidationError):
        ticket(Id="")


def test_a_draft_becomes_ticket_fields() -> None:
    draft = CaseDraft(
        title=" Broken ",
        priority=CasePriority.HIGH,
        status=CaseStatus.IN_PROGRESS,
        customer_id="001A",
        reference="case-1",
    )

    fields = ticket_fields(draft)

    assert fields == {
        "Subject": "Broken",
        "Description": "",
        "Urgency": "High",
        "State": "Working",
        "CustomerId": "001A",
        "ExternalRef": "case-1",
    }


def test_a_draft_leaves_out_what_it_has_no_value_for() -> None:
    assert ticket_fields(CaseDraft(title="t")) == {
        "Subject": "t",
        "Description": "",
        "Urgency": "Medium",
        "State": "New",
    }


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (CaseStatus.OPEN, "New"),
        (CaseStatus.IN_PROGRESS, "Working"),
        (CaseStatus.RESOLVED, "Closed"),
        (CaseStatus.CLOSED, "Closed"),
    ],
)
def test_status_maps_back_to_state(status: CaseStatus, state: str) -> None:
    assert ticket_fields(CaseUpdate(status=status)) == {"State": state}


def test_an_update_sends_only_what_it_sets_and_may_clear_a_link() -> None:
    update = CaseUpdate(priority=CasePriority.LOW, customer_id=None)

    assert ticket_fields(update) == {"Urgency": "Low", "CustomerId": None}


@pytest.mark.parametrize(
    "fields",
    [{}, {"title": None}, {"priority": None}, {"status": None}, {"title": "   "}],
)
def test_updates_that_change_nothing_or_clear_required_fields_are_refused(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        CaseUpdate(**fields)


def test_customers_translate_both_ways() -> None:
    record = SalesforceCustomer.model_validate(
        {
            "Id": "001A",
            "Name": "Ada",
            "Email": "ada@example.com",
            "Tier": "Gold",
            "LastModifiedDate": "2027-01-15T10:30:00.000Z",
        }
    )

    customer = customer_from_record(record)

    assert (customer.id, customer.name, customer.email, customer.tier) == (
        "001A",
        "Ada",
        "ada@example.com",
        "gold",
    )
    assert customer.metadata == {"crm": record.raw}
    assert customer_fields(CustomerDraft(name="Ada")) == {"Name": "Ada"}
    assert customer_fields(CustomerUpdate(email=None)) == {"Email": None}
    with pytest.raises(ValidationError):
        CustomerUpdate(name=None)


def test_the_feed_skips_objects_we_do_not_sync_and_reports_them() -> None:
    entry = SalesforceChange(cursor="9", object="opportunity", id="006A", record={})

    translated = change_from_feed(entry)

    assert translated.value is None
    assert [(u.field, u.value) for u in translated.unknown] == [("change_object", "opportunity")]


def feed_entry(cursor: int, record: dict[str, Any], *, deleted: bool = False) -> SalesforceChange:
    return SalesforceChange(
        cursor=str(cursor), object="ticket", id=record["Id"], deleted=deleted, record=record
    )


def ticket_record(**fields: Any) -> dict[str, Any]:
    return {
        "Id": "500000000000001AAA",
        "Subject": "  Refund\x00 not   received ",
        "Urgency": "High",
        "State": "Working",
        "LastModifiedDate": "2027-01-15T10:30:00.000Z",
        "Unmapped": {"kept": True},
        **fields,
    }


@pytest.mark.parametrize(
    "entry",
    [
        feed_entry(1, ticket_record()),
        feed_entry(2, ticket_record(Id="500B", Urgency="Urgent!", State=None, ExternalRef="")),
        feed_entry(
            5, ticket_record(Id="500C", LastModifiedDate="2027-01-15T11:30:00"), deleted=True
        ),
    ],
    ids=["mapped", "unknown-values", "deleted-naive-time"],
)
def test_a_ticket_entry_translates_as_case_from_ticket_does(entry: SalesforceChange) -> None:
    translated = change_from_feed(entry)

    expected = case_from_ticket(SalesforceTicket.model_validate(entry.record))
    assert translated.value is not None
    assert translated.value.case == expected.value
    assert translated.unknown == expected.unknown
    assert (translated.value.cursor, translated.value.id) == (entry.cursor, entry.id)
    assert translated.value.deleted is entry.deleted
    assert translated.value.case.metadata == {"crm": entry.record}
    assert translated.value.case.updated_at.tzinfo is UTC


def test_a_ticket_entry_that_does_not_fit_is_refused() -> None:
    entry = feed_entry(2, ticket_record(Id="500B", LastModifiedDate="yesterday"))

    with pytest.raises(ValidationError):
        change_from_feed(entry)
