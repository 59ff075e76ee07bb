"""In-memory implementations of the adapters' interfaces, for users' tests.

Each behaves like its HTTP sibling where a caller can tell: the same checks
before anything is "sent", the same idempotency, the same errors (classes,
statuses and provider codes), the same lossy translations. Each has
``fail_next(error)`` to make the next calls fail as an outage would, and keeps
what it was given for assertions.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from seawall.errors import ServiceClientError
from seawall.integrations._crm import (
    CaseDraft,
    CaseUpdate,
    CrmCase,
    CrmChanges,
    Customer,
    CustomerDraft,
    CustomerUpdate,
    DuplicateRecord,
    RecordNotFound,
    check_id,
    check_limit,
)
from seawall.integrations._notifications import Delivery, Notification, delivered
from seawall.integrations._payments import (
    Charge,
    ChargeStatus,
    PaymentConflict,
    PaymentDeclined,
    Refund,
    RefundReason,
    RefundStatus,
    charge_idempotency_key,
    check_amount,
    check_charge,
    refund_idempotency_key,
)
from seawall.integrations._salesforce_acl import (
    SalesforceChange,
    SalesforceCustomer,
    SalesforceTicket,
    case_from_ticket,
    change_from_feed,
    customer_fields,
    customer_from_record,
    ticket_fields,
)
from seawall.resilience import SYSTEM_CLOCK, Clock

__all__ = ["DECLINED_SOURCE_PREFIX", "InMemoryCRM", "InMemoryChannel", "InMemoryPaymentGateway"]

DECLINED_SOURCE_PREFIX: Final = "tok_chargeDeclined"
"""`InMemoryPaymentGateway` declines sources starting with this, as Stripe's test tokens do."""


# --- payments -------------------------------------------------------------------------


class InMemoryPaymentGateway:
    """`PaymentGateway` in memory, for tests of code that takes payments.

    It behaves like `StripeGateway` where callers can tell: the same checks
    (card numbers, amounts, currencies), the same idempotency (one charge per
    invoice, `PaymentConflict` for other details), sources starting with
    ``tok_chargeDeclined`` are declined (``…InsufficientFunds`` with
    ``insufficient_funds``), and refunds fail as the gateway's do
    (`ServiceClientError` with ``resource_missing``, ``amount_too_large``,
    ``charge_already_refunded``). `fail_next` makes calls fail as an outage would.

    Args:
        name: the service name its errors carry.
        clock: where ``created`` comes from.
    """

    def __init__(self, *, name: str = "payments", clock: Clock | None = None) -> None:
        self.name = name
        self._clock = clock or SYSTEM_CLOCK
        self.charges: dict[str, Charge] = {}
        """Charges made, by id."""
        self.refunds: dict[str, Refund] = {}
        """Refunds made, by id."""
        self._ids = itertools.count(1)
        self._seen: dict[str, tuple[tuple[str, ...], Charge | Refund | PaymentDeclined]] = {}
        self._failures: list[Exception] = []

    def __repr__(self) -> str:
        return f"InMemoryPaymentGateway({len(self.charges)} charges)"

    def fail_next(self, error: Exception, times: int = 1) -> None:
        """Make the next *times* calls raise *error* (an outage, a timeout), the same object."""
        self._failures.extend([error] * times)

    def _maybe_fail(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        return {"service": self.name, "method": method, "path": path}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(int(self._clock.wall()), UTC)

    def _replay(
        self, key: str, fingerprint: tuple[str, ...], what: str, path: str
    ) -> Charge | Refund | None:
        seen = self._seen.get(key)
        if seen is None:
            return None
        if seen[0] != fingerprint:
            raise PaymentConflict(idempotency_key=key, what=what, **self._call("POST", path))
        outcome = seen[1]
        if isinstance(outcome, PaymentDeclined):
            # A fresh error per replay: re-raising one object would grow its traceback.
            raise PaymentDeclined(
                decline_code=outcome.decline_code,
                provider_message=outcome.provider_message,
                **self._call("POST", path),
            )
        return outcome

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        customer: str,
        invoice: str,
        source: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Charge:
        """Charge *customer* for *invoice*; see `PaymentGateway.charge`."""
        request = check_charge(
            amount=amount,
            currency=currency,
            customer=customer,
            invoice=invoice,
            source=source,
            description=description,
            metadata=metadata,
        )
        self._maybe_fail()
        key = charge_idempotency_key(customer, invoice)
        fingerprint = request.fingerprint()
        replayed = self._replay(key, fingerprint, f"invoice {invoice!r}", "/v1/charges")
        if isinstance(replayed, Charge):
            return replayed
        if source is not None and source.startswith(DECLINED_SOURCE_PREFIX):
            reason = "insufficient_funds" if "InsufficientFunds" in source else "generic_decline"
            declined = PaymentDeclined(
                decline_code=reason,
                provider_message="Your card was declined.",
                **self._call("POST", "/v1/charges"),
            )
            self._seen[key] = (fingerprint, declined)
            raise declined
        charge = Charge(
            id=f"ch_mem_{next(self._ids):06d}",
            amount=request.amount,
            currency=request.currency,
            customer=request.customer,
            invoice=request.invoice,
            status=ChargeStatus.SUCCEEDED,
            created=self._now(),
            description=request.description,
            metadata=request.metadata,
        )
        self.charges[charge.id] = charge
        self._seen[key] = (fingerprint, charge)
        return charge

    async def refund(
        self,
        charge_id: str,
        *,
        amount: int | None = None,
        reason: RefundReason | None = None,
        reference: str | None = None,
    ) -> Refund:
        """Refund (part of) a charge; see `PaymentGateway.refund`."""
        if not charge_id:
            raise ValueError("charge_id must not be empty")
        if amount is not None:
            check_amount(amount)
        self._maybe_fail()
        key = refund_idempotency_key(charge_id, amount=amount, reference=reference)
        fingerprint = (charge_id, str(amount), str(reason))
        what = f"refund {reference!r}" if reference else f"the refund of charge {charge_id!r}"
        replayed = self._replay(key, fingerprint, what, "/v1/refunds")
        if isinstance(replayed, Refund):
            return replayed
        call = self._call("POST", "/v1/refunds")
        charge = self.charges.get(charge_id)
        if charge is None:
            raise ServiceClientError(
                status=404,
                provider_message=f"No such charge: '{charge_id}'",
                code="resource_missing",
                **call,
            )
        left = charge.amount - charge.amount_refunded
        if left == 0:
            raise ServiceClientError(
                status=400,
                provider_message=f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
                **call,
            )
        amount = left if amount is None else amount
        if amount > left:
            raise ServiceClientError(
                status=400,
                provider_message=f"Refund amount ({amount}) is greater than the unrefunded"
                f" amount ({left}).",
                code="amount_too_large",
                **call,
            )
        refund = Refund(
            id=f"re_mem_{next(self._ids):06d}",
            charge_id=charge_id,
            amount=amount,
            currency=charge.currency,
            status=RefundStatus.SUCCEEDED,
            reason=reason,
            created=self._now(),
        )
        self.charges[charge_id] = charge.model_copy(
            update={"amount_refunded": charge.amount_refunded + amount}
        )
        self.refunds[refund.id] = refund
        self._seen[key] = (fingerprint, refund)
        return refund

    async def retrieve(self, charge_id: str) -> Charge | None:
        """The charge *charge_id*, or None when there is no such charge."""
        if not charge_id:
            raise ValueError("charge_id must not be empty")
        self._maybe_fail()
        return self.charges.get(charge_id)


# --- CRM ------------------------------------------------------------------------------


# What the CRM fills in for fields a create leaves out.
_TICKET_DEFAULTS: Final[Mapping[str, Any]] = {
    "Description": "",
    "Urgency": "Medium",
    "State": "New",
    "CustomerId": None,
    "ExternalRef": None,
}
_CUSTOMER_DEFAULTS: Final[Mapping[str, Any]] = {"Email": None, "Tier": "Standard"}


class InMemoryCRM:
    """`CRM` in memory, for tests of code that talks to the CRM.

    Records are kept in the CRM's own shape and go through the same
    translations as `SalesforceCRM`, so lossy mappings behave the same (a
    resolved case reads back as closed). Errors match too: `RecordNotFound`,
    `DuplicateRecord` for a reference already used by a live ticket, and
    `ServiceClientError` with ``INVALID_CURSOR`` for a cursor not from this
    feed. `fail_next` makes calls fail as an outage would.

    Args:
        name: the service name its errors carry.
        clock: where modification times come from.
    """

    def __init__(self, *, name: str = "crm", clock: Clock | None = None) -> None:
        self.name = name
        self._clock = clock or SYSTEM_CLOCK
        self._records: dict[str, dict[str, dict[str, Any]]] = {"ticket": {}, "customer": {}}
        self._feed: list[SalesforceChange] = []
        self._ids = itertools.count(1)
        self._failures: list[Exception] = []

    def __repr__(self) -> str:
        counts = {kind: len(records) for kind, records in self._records.items()}
        return f"InMemoryCRM({counts['customer']} customers, {counts['ticket']} tickets)"

    def fail_next(self, error: Exception, times: int = 1) -> None:
        """Make the next *times* calls raise *error* (an outage, a timeout), the same object."""
        self._failures.extend([error] * times)

    def delete_ticket(self, ticket_id: str) -> None:
        """Delete a ticket as someone in the CRM would (the feed reports it).

        Raises:
            RecordNotFound: no such live ticket.
        """
        self._update("ticket", ticket_id, {"IsDeleted": True})

    def delete_customer(self, customer_id: str) -> None:
        """Delete a customer as someone in the CRM would (the feed reports it)."""
        self._update("customer", customer_id, {"IsDeleted": True})

    # --- storage in the CRM's shape ---

    def _maybe_fail(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def _now(self) -> str:
        moment = datetime.fromtimestamp(self._clock.wall(), UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _call(self, method: str, kind: str, *, with_id: bool = True) -> dict[str, Any]:
        path = f"/api/v1/{kind}s" + ("/{id}" if with_id else "")
        return {"service": self.name, "method": method, "path": path}

    def _live(self, kind: str, record_id: str, method: str) -> dict[str, Any]:
        record = self._records[kind].get(record_id)
        if record is None or record["IsDeleted"]:
            raise RecordNotFound(
                kind=kind,
                record_id=record_id,
                code="NOT_FOUND" if record is None else "ENTITY_IS_DELETED",
                **self._call(method, kind),
            )
        return record

    def _unique(self, fields: Mapping[str, Any], record_id: str | None, method: str) -> None:
        reference = fields.get("ExternalRef")
        if reference is None:
            return
        for other in self._records["ticket"].values():
            if (
                other["Id"] != record_id
                and not other["IsDeleted"]
                and other["ExternalRef"] == reference
            ):
                raise DuplicateRecord(
                    kind="ticket",
                    fields=["ExternalRef"],
                    **self._call(method, "ticket", with_id=record_id is not None),
                )

    def _add(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        prefix = "500" if kind == "ticket" else "001"
        record = {
            "Id": f"{prefix}{next(self._ids):012d}AAA",
            **fields,
            "LastModifiedDate": self._now(),
            "IsDeleted": False,
        }
        self._records[kind][record["Id"]] = record
        self._changed(kind, record)
        return record

    def _update(self, kind: str, record_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        record = self._live(kind, record_id, "PATCH")
        record.update(fields)
        record["LastModifiedDate"] = self._now()
        self._changed(kind, record)
        return record

    def _changed(self, kind: str, record: Mapping[str, Any]) -> None:
        self._feed.append(
            SalesforceChange(
                cursor=str(len(self._feed) + 1),
                object=kind,
                id=record["Id"],
                deleted=bool(record["IsDeleted"]),
                record=dict(record),
            )
        )

    @staticmethod
    def _case(record: Mapping[str, Any]) -> CrmCase:
        return case_from_ticket(SalesforceTicket.model_validate(dict(record))).value

    @staticmethod
    def _customer(record: Mapping[str, Any]) -> Customer:
        return customer_from_record(SalesforceCustomer.model_validate(dict(record)))

    # --- the CRM interface ---

    async def get_customer(self, customer_id: str) -> Customer | None:
        """The customer, or None when there is none by that id (or it was deleted)."""
        check_id(customer_id, "customer_id")
        self._maybe_fail()
        record = self._records["customer"].get(customer_id)
        return None if record is None or record["IsDeleted"] else self._customer(record)

    async def list_customers(self) -> list[Customer]:
        """Every live customer."""
        self._maybe_fail()
        return [
            self._customer(record)
            for record in self._records["customer"].values()
            if not record["IsDeleted"]
        ]

    async def create_customer(self, draft: CustomerDraft) -> Customer:
        """Create a customer and return it as stored."""
        self._maybe_fail()
        fields = {**_CUSTOMER_DEFAULTS, **customer_fields(draft)}
        return self._customer(self._add("customer", fields))

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer:
        """Change the fields *update* sets; see `CRM.update_customer`."""
        check_id(customer_id, "customer_id")
        self._maybe_fail()
        return self._customer(self._update("customer", customer_id, customer_fields(update)))

    async def get_ticket(self, ticket_id: str) -> CrmCase | None:
        """The ticket as a case, or None when there is none by that id (or it was deleted)."""
        check_id(ticket_id, "ticket_id")
        self._maybe_fail()
        record = self._records["ticket"].get(ticket_id)
        return None if record is None or record["IsDeleted"] else self._case(record)

    async def list_tickets(
        self, *, customer_id: str | None = None, reference: str | None = None
    ) -> list[CrmCase]:
        """Live tickets as cases, of one customer or with one reference if given."""
        self._maybe_fail()
        return [
            self._case(record)
            for record in self._records["ticket"].values()
            if not record["IsDeleted"]
            and (customer_id is None or record["CustomerId"] == customer_id)
            and (reference is None or record["ExternalRef"] == reference)
        ]

    async def create_ticket(self, draft: CaseDraft) -> CrmCase:
        """Create a ticket for a case; see `CRM.create_ticket`."""
        self._maybe_fail()
        fields = {**_TICKET_DEFAULTS, **ticket_fields(draft)}
        self._unique(fields, None, "POST")
        return self._case(self._add("ticket", fields))

    async def update_ticket(self, ticket_id: str, update: CaseUpdate) -> CrmCase:
        """Change the fields *update* sets; see `CRM.update_ticket`."""
        check_id(ticket_id, "ticket_id")
        self._maybe_fail()
        fields = ticket_fields(update)
        self._live("ticket", ticket_id, "PATCH")
        self._unique(fields, ticket_id, "PATCH")
        return self._case(self._update("ticket", ticket_id, fields))

    async def changes(self, since_cursor: str | None = None, *, limit: int = 100) -> CrmChanges:
        """The changes after *since_cursor*; see `CRM.changes`."""
        check_limit(limit)
        self._maybe_fail()
        since = since_cursor if since_cursor is not None else "0"
        if not since.isdigit():
            raise ServiceClientError(
                status=400,
                provider_message=f"'{since[:50]}' is not a cursor from this feed.",
                code="INVALID_CURSOR",
                service=self.name,
                method="GET",
                path="/api/v1/changes",
            )
        start = int(since)
        page = self._feed[start : start + limit]
        changes = [
            change
            for change in (change_from_feed(entry).value for entry in page)
            if change is not None
        ]
        return CrmChanges(
            changes=changes,
            next_cursor=page[-1].cursor if page else since,
            has_more=start + limit < len(self._feed),
        )


# --- notifications --------------------------------------------------------------------


class InMemoryChannel:
    """A channel that keeps what it is given, for tests (`sent`, `deliveries`).

    Args:
        name: the channel's name.
        clock: where ``accepted_at`` comes from.
    """

    def __init__(self, name: str = "memory", *, clock: Clock | None = None) -> None:
        if not name:
            raise ValueError("a channel needs a name")
        self._name = name
        self._clock = clock or SYSTEM_CLOCK
        self._ids = itertools.count(1)
        self._failures: list[Exception] = []
        self.sent: list[Notification] = []
        """The notifications accepted, oldest first."""
        self.deliveries: list[Delivery] = []
        """Their receipts, in the same order."""

    def __repr__(self) -> str:
        return f"InMemoryChannel({self._name!r}, {len(self.sent)} sent)"

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name

    def fail_next(self, error: Exception, times: int = 1) -> None:
        """Make the next *times* sends raise *error* (an outage, a refusal)."""
        self._failures.extend([error] * times)

    async def send(self, notification: Notification) -> Delivery:
        """Keep *notification* and return a receipt (``provider_id`` ``<name>-<n>``)."""
        if self._failures:
            raise self._failures.pop(0)
        delivery = delivered(self._name, f"{self._name}-{next(self._ids)}", self._clock)
        self.sent.append(notification)
        self.deliveries.append(delivery)
        return delivery
