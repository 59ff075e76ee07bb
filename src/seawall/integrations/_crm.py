"""The CRM in our terms: the `CRM` interface, its models and its errors.

A CRM ticket is read as a `CrmCase`, whose fields and values are those of
seawall's ``Case`` (``priority`` low/medium/high, ``status``
open/in_progress/resolved/closed). The enums are copied here rather than
imported, because the library does not depend on the service built from it;
a test keeps them equal. How a provider's records become these models is its
adapter's business (for the Salesforce-style CRM: `case_from_ticket` and
`ticket_fields`, with their tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from seawall.errors import ExternalServiceError, ServiceClientError

__all__ = [
    "CRM",
    "MAX_CHANGES_PAGE",
    "CaseDraft",
    "CasePriority",
    "CaseStatus",
    "CaseUpdate",
    "CrmCase",
    "CrmChange",
    "CrmChanges",
    "Customer",
    "CustomerDraft",
    "CustomerUpdate",
    "DuplicateRecord",
    "RecordNotFound",
    "check_id",
    "check_limit",
]


class CasePriority(StrEnum):
    """How urgent a case is (the values of seawall's ``Priority``)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class CaseStatus(StrEnum):
    """Where a case is in its life (the values of seawall's ``Status``)."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, StringConstraints(max_length=32_000), AfterValidator(_no_nul)]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_no_nul),
]
Ref = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_nul),
]


class Customer(BaseModel):
    """A customer of the CRM, in our terms.

    Attributes:
        id: the CRM's id.
        name: the display name.
        email: the contact address, if any.
        tier: the service tier, lower case (``standard``), if any.
        updated_at: when the CRM last changed it (UTC).
        deleted: whether it was deleted in the CRM.
        metadata: ``{"crm": <the record as the CRM sent it>}``.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    email: str | None = None
    tier: str | None = None
    updated_at: datetime
    deleted: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict, repr=False)


class CrmCase(BaseModel):
    """A CRM ticket as a case: the fields and values of seawall's ``Case``.

    Attributes:
        external_id: the CRM's ticket id (the case's ``external_id``).
        title: the subject, stripped and cut to 200 characters.
        description: the ticket's text.
        priority: from the ticket's urgency (see the module's table).
        status: from the ticket's state.
        customer_id: the CRM's customer id, if any.
        reference: the ticket's external reference: our case id, when we made it.
        source: always ``"crm"``.
        updated_at: when the CRM last changed it (UTC).
        deleted: whether it was deleted in the CRM.
        metadata: ``{"crm": <the record as the CRM sent it>}``.
    """

    model_config = ConfigDict(frozen=True)

    external_id: str
    title: str
    description: str = ""
    priority: CasePriority
    status: CaseStatus
    customer_id: str | None = None
    reference: str | None = None
    source: Literal["crm"] = "crm"
    updated_at: datetime
    deleted: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict, repr=False)

    def case_fields(self) -> dict[str, Any]:
        """The fields of a new seawall case (``POST /cases``, ``CaseCreate``) for this ticket."""
        return {
            "title": self.title,
            "priority": self.priority.value,
            "external_id": self.external_id,
            "customer_id": self.customer_id,
            "metadata": {"source": self.source, **self.metadata},
        }


def _check_update(update: BaseModel, *, required: tuple[str, ...]) -> None:
    if not update.model_fields_set:
        raise ValueError("give at least one field to change")
    cleared = [
        name
        for name in required
        if name in update.model_fields_set and getattr(update, name) is None
    ]
    if cleared:
        raise ValueError(f"{', '.join(cleared)} cannot be cleared")


class CaseDraft(BaseModel):
    """A case to create as a CRM ticket.

    Attributes:
        title: becomes the ticket's subject.
        description: the ticket's text.
        priority: becomes its urgency.
        status: becomes its state.
        customer_id: the CRM's customer id.
        reference: our id for the case, kept by the CRM as the ticket's
            external reference (unique among its live tickets).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: Title
    description: Text = ""
    priority: CasePriority = CasePriority.MEDIUM
    status: CaseStatus = CaseStatus.OPEN
    customer_id: Ref | None = None
    reference: Ref | None = None


class CaseUpdate(BaseModel):
    """Changes to a CRM ticket: only the fields given are sent (None clears a field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: Title | None = None
    description: Text | None = None
    priority: CasePriority | None = None
    status: CaseStatus | None = None
    customer_id: Ref | None = None
    reference: Ref | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> CaseUpdate:
        _check_update(self, required=("title", "priority", "status"))
        return self


class CustomerDraft(BaseModel):
    """A customer to create in the CRM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Title
    email: Ref | None = None
    tier: Ref | None = None


class CustomerUpdate(BaseModel):
    """Changes to a CRM customer: only the fields given are sent (None clears a field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Title | None = None
    email: Ref | None = None
    tier: Ref | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> CustomerUpdate:
        _check_update(self, required=("name",))
        return self


class CrmChange(BaseModel):
    """One change from the CRM's feed, translated.

    Attributes:
        cursor: pass the last one back (as `CrmChanges.next_cursor`) to read on.
        kind: what changed.
        id: the CRM's id of the record.
        deleted: whether the change is a deletion.
        case: the ticket after the change, when ``kind`` is ``"ticket"``.
        customer: the customer after the change, when ``kind`` is ``"customer"``.
    """

    model_config = ConfigDict(frozen=True)

    cursor: str
    kind: Literal["ticket", "customer"]
    id: str
    deleted: bool = False
    case: CrmCase | None = None
    customer: Customer | None = None


class CrmChanges(BaseModel):
    """A page of the CRM's change feed.

    Attributes:
        changes: the changes we understand, oldest first (others are skipped
            and counted as unknown).
        next_cursor: where the next page starts; store it once the page is
            processed.
        has_more: whether more changes are waiting now.
    """

    model_config = ConfigDict(frozen=True)

    changes: list[CrmChange]
    next_cursor: str
    has_more: bool


MAX_CHANGES_PAGE: Final = 1000
"""The most changes one `CRM.changes` call may ask for."""


class RecordNotFound(ServiceClientError):  # noqa: N818 - leaves name the condition
    """The CRM has no such record (or it was deleted).

    Attributes:
        kind: ``ticket`` or ``customer``.
        record_id: the id asked for.
    """

    def __init__(
        self,
        *,
        kind: str,
        record_id: str,
        code: str | None = "NOT_FOUND",
        provider_message: str | None = None,
        **call: Any,
    ) -> None:
        self.kind = kind
        self.record_id = record_id
        self.code = code
        self.provider_message = provider_message
        gone = " (it was deleted)" if code == "ENTITY_IS_DELETED" else ""
        ExternalServiceError.__init__(
            self, f"the CRM has no {kind} {record_id!r}{gone}", status=404, **call
        )


class DuplicateRecord(ServiceClientError):  # noqa: N818 - leaves name the condition
    """Another live record already has a value that must be unique (a ticket's reference).

    Attributes:
        kind: ``ticket`` or ``customer``.
        fields: the CRM's names of the fields that clash.
    """

    def __init__(
        self,
        *,
        kind: str,
        fields: Sequence[str],
        provider_message: str | None = None,
        **call: Any,
    ) -> None:
        self.kind = kind
        self.fields = list(fields)
        self.code = "DUPLICATE_VALUE"
        self.provider_message = provider_message
        ExternalServiceError.__init__(
            self,
            f"another {kind} already has this {', '.join(self.fields) or 'value'}; "
            "look that one up instead of creating a second",
            status=400,
            **call,
        )


class CRM(Protocol):
    """Customers, tickets and a change feed from a CRM, in our terms."""

    async def get_customer(self, customer_id: str) -> Customer | None:
        """The customer, or None when the CRM has none by that id (or it was deleted)."""
        ...

    async def list_customers(self) -> list[Customer]:
        """Every live customer."""
        ...

    async def create_customer(self, draft: CustomerDraft) -> Customer:
        """Create a customer and return it as stored."""
        ...

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer:
        """Change the fields *update* sets and return the customer as stored.

        Raises:
            RecordNotFound: no such customer.
        """
        ...

    async def get_ticket(self, ticket_id: str) -> CrmCase | None:
        """The ticket as a case, or None when the CRM has none by that id (or it was deleted)."""
        ...

    async def list_tickets(
        self, *, customer_id: str | None = None, reference: str | None = None
    ) -> list[CrmCase]:
        """Live tickets as cases, of one customer or with one reference if given."""
        ...

    async def create_ticket(self, draft: CaseDraft) -> CrmCase:
        """Create a ticket for a case and return it as stored.

        Raises:
            DuplicateRecord: a live ticket already has this reference.
        """
        ...

    async def update_ticket(self, ticket_id: str, update: CaseUpdate) -> CrmCase:
        """Change the fields *update* sets and return the ticket as stored.

        Raises:
            RecordNotFound: no such ticket.
            DuplicateRecord: another live ticket has the new reference.
        """
        ...

    async def changes(self, since_cursor: str | None = None, *, limit: int = 100) -> CrmChanges:
        """The changes after *since_cursor* (from the start if None), oldest first.

        Args:
            since_cursor: a `CrmChanges.next_cursor` from an earlier page.
            limit: at most this many changes (1 to `MAX_CHANGES_PAGE`).

        Raises:
            ValueError: *limit* is out of range.
            seawall.errors.ServiceClientError: the cursor is not one of this
                feed's (code ``INVALID_CURSOR``).
        """
        ...


def check_id(value: str, name: str) -> str:
    """*value* if it is not empty (pure); else a `ValueError` naming *name*."""
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_limit(limit: int) -> int:
    """*limit* if it is an int from 1 to `MAX_CHANGES_PAGE` (pure); else a `ValueError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CHANGES_PAGE:
        raise ValueError(f"limit must be 1 to {MAX_CHANGES_PAGE}, got {limit!r}")
    return limit
