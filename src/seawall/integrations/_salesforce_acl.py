"""The Salesforce-style CRM's anti-corruption layer: its shapes and pure translations.

A CRM ticket becomes a `CrmCase`, with the fields and values of seawall's
``Case``; a `CaseDraft` or `CaseUpdate` becomes ticket fields. Values the
tables do not know take a safe default and are listed in the result's
``unknown`` (`Translated`), for the adapter to count.

From the CRM (`case_from_ticket`):

    ======================  =============================================
    Urgency                 priority
    ======================  =============================================
    Low / Medium / High     low / medium / high
    Critical                high (the domain has nothing above it)
    anything else           medium, counted as unknown
    ======================  =============================================

    ======================  =============================================
    State                   status
    ======================  =============================================
    New                     open
    Working, Escalated      in_progress
    Closed                  closed
    anything else           open, counted as unknown
    ======================  =============================================

To the CRM (`ticket_fields`): low/medium/high are Low/Medium/High;
open is New, in_progress is Working, resolved and closed are Closed (the CRM
has no resolved state, so a resolved case reads back as closed). The original
record is kept whole in ``metadata["crm"]``, so nothing the mapping loses is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from seawall.integrations._acl import Translated, UnknownValue
from seawall.integrations._crm import (
    CaseDraft,
    CasePriority,
    CaseStatus,
    CaseUpdate,
    CrmCase,
    CrmChange,
    Customer,
    CustomerDraft,
    CustomerUpdate,
)

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_STATUS",
    "NO_SUBJECT",
    "TITLE_MAX_CHARS",
    "SalesforceChange",
    "SalesforceCustomer",
    "SalesforceTicket",
    "case_from_ticket",
    "change_from_feed",
    "customer_fields",
    "customer_from_record",
    "ticket_fields",
]

TITLE_MAX_CHARS: Final = 200
"""The longest title a case has (the domain's limit); longer subjects are cut."""

NO_SUBJECT: Final = "(no subject)"


_URGENCY_TO_PRIORITY: Final = {
    "Low": CasePriority.LOW,
    "Medium": CasePriority.MEDIUM,
    "High": CasePriority.HIGH,
    "Critical": CasePriority.HIGH,
}
_STATE_TO_STATUS: Final = {
    "New": CaseStatus.OPEN,
    "Working": CaseStatus.IN_PROGRESS,
    "Escalated": CaseStatus.IN_PROGRESS,
    "Closed": CaseStatus.CLOSED,
}
_PRIORITY_TO_URGENCY: Final = {
    CasePriority.LOW: "Low",
    CasePriority.MEDIUM: "Medium",
    CasePriority.HIGH: "High",
}
_STATUS_TO_STATE: Final = {
    CaseStatus.OPEN: "New",
    CaseStatus.IN_PROGRESS: "Working",
    CaseStatus.RESOLVED: "Closed",
    CaseStatus.CLOSED: "Closed",
}
DEFAULT_PRIORITY: Final = CasePriority.MEDIUM
DEFAULT_STATUS: Final = CaseStatus.OPEN


def _aware(value: datetime) -> datetime:
    # A timestamp without a zone from this CRM is UTC; comparing naive and aware ones fails.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


# --- the CRM's shapes -----------------------------------------------------------------


class _Record(BaseModel):
    """A CRM record that keeps the JSON object it was read from."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        record = handler(data)
        if isinstance(data, dict) and isinstance(record, _Record):
            record._raw = dict(data)
        return record

    @property
    def raw(self) -> dict[str, Any]:
        """The record as the CRM sent it (a copy)."""
        return dict(self._raw)


class _TicketFields(BaseModel):
    """The fields of a CRM ticket, validated by their names in the CRM.

    A page of the feed validates its tickets as these, in one pass, and keeps
    each record from the page itself: `SalesforceTicket`'s own copy of the
    record costs more than the validation.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(alias="Id", min_length=1)
    subject: str | None = Field(default=None, alias="Subject")
    description: str | None = Field(default=None, alias="Description")
    urgency: str | None = Field(default=None, alias="Urgency")
    state: str | None = Field(default=None, alias="State")
    customer_id: str | None = Field(default=None, alias="CustomerId")
    external_ref: str | None = Field(default=None, alias="ExternalRef")
    last_modified: UtcDatetime = Field(alias="LastModifiedDate")
    deleted: bool = Field(default=False, alias="IsDeleted")


class SalesforceTicket(_Record, _TicketFields):
    """A ticket as the Salesforce-style CRM sends it (validated by its field names)."""


class SalesforceCustomer(_Record):
    """A customer as the Salesforce-style CRM sends it."""

    id: str = Field(alias="Id", min_length=1)
    name: str | None = Field(default=None, alias="Name")
    email: str | None = Field(default=None, alias="Email")
    tier: str | None = Field(default=None, alias="Tier")
    last_modified: UtcDatetime = Field(alias="LastModifiedDate")
    deleted: bool = Field(default=False, alias="IsDeleted")


class SalesforceChange(BaseModel):
    """One entry of the CRM's change feed; ``record`` is read by `change_from_feed`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    cursor: str
    object: str
    id: str
    deleted: bool = False
    record: dict[str, Any]


# --- translations (pure) ------------------------------------------------------------


def _title(subject: str | None) -> str:
    text = " ".join((subject or "").replace("\x00", "").split())
    return text[:TITLE_MAX_CHARS].rstrip() or NO_SUBJECT


def _shown(value: str | None) -> str:
    return "null" if value is None else value


def _case_fields(
    ticket: _TicketFields, record: dict[str, Any], unknown: list[UnknownValue]
) -> dict[str, Any]:
    """The fields of the `CrmCase` of *ticket*, sent as *record*; appends what it did not know."""
    priority = _URGENCY_TO_PRIORITY.get(ticket.urgency or "")
    if priority is None:
        priority = DEFAULT_PRIORITY
        unknown.append(UnknownValue("priority", _shown(ticket.urgency), priority.value))
    status = _STATE_TO_STATUS.get(ticket.state or "")
    if status is None:
        status = DEFAULT_STATUS
        unknown.append(UnknownValue("status", _shown(ticket.state), status.value))
    return {
        "external_id": ticket.id,
        "title": _title(ticket.subject),
        "description": (ticket.description or "").replace("\x00", ""),
        "priority": priority,
        "status": status,
        "customer_id": ticket.customer_id or None,
        "reference": ticket.external_ref or None,
        "updated_at": ticket.last_modified,
        "deleted": ticket.deleted,
        "metadata": {"crm": record},
    }


def case_from_ticket(ticket: SalesforceTicket) -> Translated[CrmCase]:
    """Translate a CRM ticket into a `CrmCase` (pure).

    Unknown urgencies and states take the defaults (medium, open) and are
    listed in the result's ``unknown``.
    """
    unknown: list[UnknownValue] = []
    case = CrmCase(**_case_fields(ticket, ticket.raw, unknown))
    return Translated(case, tuple(unknown))


def customer_from_record(record: SalesforceCustomer) -> Customer:
    """Translate a CRM customer into our `Customer` (pure)."""
    return Customer(
        id=record.id,
        name=(record.name or "").strip() or record.id,
        email=record.email or None,
        tier=record.tier.lower() if record.tier else None,
        updated_at=record.last_modified,
        deleted=record.deleted,
        metadata={"crm": record.raw},
    )


_TICKET: Final = TypeAdapter(_TicketFields)
_CHANGE: Final = TypeAdapter(CrmChange)


def change_from_feed(entry: SalesforceChange) -> Translated[CrmChange | None]:
    """Translate a change-feed entry (pure); None for objects we do not sync.

    Raises:
        pydantic.ValidationError: the entry's record does not fit its object.
    """
    if entry.object == "ticket":
        # What `case_from_ticket(SalesforceTicket...)` gives, in two validations
        # instead of three models (a full resync reads 100,000 entries), with the
        # record kept as the feed sent it.
        unknown: list[UnknownValue] = []
        ticket = _TICKET.validate_python(entry.record)
        change = _CHANGE.validate_python(
            {
                "cursor": entry.cursor,
                "kind": "ticket",
                "id": entry.id,
                "deleted": entry.deleted,
                "case": _case_fields(ticket, dict(entry.record), unknown),
            }
        )
        return Translated(change, tuple(unknown))
    if entry.object == "customer":
        customer = customer_from_record(SalesforceCustomer.model_validate(entry.record))
        change = CrmChange(
            cursor=entry.cursor,
            kind="customer",
            id=entry.id,
            deleted=entry.deleted,
            customer=customer,
        )
        return Translated(change)
    return Translated(None, (UnknownValue("change_object", entry.object, "skipped"),))


_TICKET_NAMES: Final = {
    "title": "Subject",
    "description": "Description",
    "customer_id": "CustomerId",
    "reference": "ExternalRef",
}
_CUSTOMER_NAMES: Final = {"name": "Name", "email": "Email", "tier": "Tier"}


def _given(change: BaseModel, update: type[BaseModel]) -> dict[str, Any]:
    if isinstance(change, update):
        return change.model_dump(exclude_unset=True)
    return change.model_dump(exclude_none=True)


def ticket_fields(change: CaseDraft | CaseUpdate) -> dict[str, str | None]:
    """The CRM ticket fields for a new case or a case's changes (pure).

    A `CaseDraft` gives the fields it has a value for (the CRM fills in the
    others); a `CaseUpdate` those it sets, None included (to clear them).
    """
    given = _given(change, CaseUpdate)
    fields: dict[str, str | None] = {}
    for name, value in given.items():
        if name == "priority":
            fields["Urgency"] = None if value is None else _PRIORITY_TO_URGENCY[value]
        elif name == "status":
            fields["State"] = None if value is None else _STATUS_TO_STATE[value]
        else:
            fields[_TICKET_NAMES[name]] = value
    return fields


def customer_fields(change: CustomerDraft | CustomerUpdate) -> dict[str, str | None]:
    """The CRM customer fields for a new customer or a customer's changes (pure)."""
    given = _given(change, CustomerUpdate)
    return {_CUSTOMER_NAMES[name]: value for name, value in given.items()}
