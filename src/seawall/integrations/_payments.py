"""Payments in our terms: the `PaymentGateway` interface, `Charge`, `Refund`, their errors.

Application code charges and refunds through `PaymentGateway` and gets our
`Charge` and `Refund`; a provider's payloads stay inside its adapter
(`StripeGateway`). Three rules hold for every implementation:

- Only tokens leave. Every text input of a charge is checked with
  `looks_like_card_number` before a request is built (`CardNumberRefused`).
- A charge's idempotency key comes from the customer and the invoice
  (`charge_idempotency_key`), so a retry, another instance or a restarted one
  charging the same invoice is a duplicate to the gateway: it answers with
  the first charge. The same invoice with another amount, currency or
  details is refused (`PaymentConflict`): an invoice is charged at most once.
- A declined card is `PaymentDeclined`, with the provider's decline code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field

from seawall.errors import ExternalServiceError, ServiceClientError
from seawall.integrations._cards import refuse_card_numbers

__all__ = [
    "MAX_AMOUNT",
    "Charge",
    "ChargeRequest",
    "ChargeStatus",
    "PaymentConflict",
    "PaymentDeclined",
    "PaymentGateway",
    "Refund",
    "RefundReason",
    "RefundStatus",
    "charge_idempotency_key",
    "check_amount",
    "check_charge",
    "refund_idempotency_key",
]

MAX_AMOUNT: Final = 99_999_999
"""The largest amount in minor units a charge may have (Stripe's limit)."""

_CURRENCY: Final = re.compile(r"[A-Za-z]{3}")
RESERVED_METADATA: Final = frozenset({"invoice"})


class ChargeStatus(StrEnum):
    """Where a charge stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundStatus(StrEnum):
    """Where a refund stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class RefundReason(StrEnum):
    """Why money goes back (the reasons card networks know)."""

    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"


class Charge(BaseModel):
    """A charge, in our terms.

    Attributes:
        id: the gateway's charge id.
        amount: in minor units (cents for EUR and USD).
        currency: lower-case ISO 4217 code.
        customer: the gateway's customer id, if any.
        invoice: our invoice the charge pays.
        status: where it stands.
        amount_refunded: refunded so far, in minor units.
        created: when the gateway created it (UTC).
        description: the text on the charge, if any.
        metadata: the extra key-value pairs given when charging.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    amount: int
    currency: str
    customer: str | None
    invoice: str | None
    status: ChargeStatus
    amount_refunded: int = 0
    created: datetime
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def refunded(self) -> bool:
        """Whether the whole amount was refunded."""
        return self.amount_refunded >= self.amount


class Refund(BaseModel):
    """A refund of (part of) a charge.

    Attributes:
        id: the gateway's refund id.
        charge_id: the charge it refunds.
        amount: in minor units.
        currency: lower-case ISO 4217 code.
        status: where it stands.
        reason: why, if given.
        created: when the gateway created it (UTC).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    charge_id: str
    amount: int
    currency: str
    status: RefundStatus
    reason: RefundReason | None = None
    created: datetime


# --- errors --------------------------------------------------------------------


class PaymentDeclined(ServiceClientError):  # noqa: N818 - leaves name the condition
    """The card (or other source) was declined; sending it again will not help.

    Attributes:
        decline_code: the issuer's reason as the gateway gives it
            (``insufficient_funds``, ``generic_decline``), if it does.
    """

    def __init__(
        self,
        *,
        decline_code: str | None = None,
        provider_message: str | None = None,
        code: str | None = "card_declined",
        **call: Any,
    ) -> None:
        self.decline_code = decline_code
        self.provider_message = provider_message
        self.code = code
        why = f" ({decline_code})" if decline_code else ""
        ExternalServiceError.__init__(
            self,
            f"the payment was declined{why}; ask the customer for another payment method",
            status=402,
            **call,
        )


class PaymentConflict(ServiceClientError):  # noqa: N818 - leaves name the condition
    """This invoice (or refund) was already sent to the gateway with other details.

    The idempotency key of a charge is made from the customer and the invoice,
    so a second charge of the same invoice with another amount, currency,
    source or description is refused instead of charging twice.

    Attributes:
        idempotency_key: the key the gateway had already seen.
    """

    def __init__(
        self,
        *,
        idempotency_key: str,
        what: str,
        provider_message: str | None = None,
        **call: Any,
    ) -> None:
        self.idempotency_key = idempotency_key
        self.provider_message = provider_message
        self.code = "idempotency_error"
        ExternalServiceError.__init__(
            self,
            f"{what} was already sent with other details (amount, currency, source, "
            "description or metadata) and cannot change; refund it and use a new one",
            status=400,
            **call,
        )


# --- pure rules ------------------------------------------------------------------


def _key(kind: str, *parts: object) -> str:
    # A JSON array is an unambiguous encoding: ("a,b", "c") and ("a", "b,c") differ.
    canonical = json.dumps([kind, *parts], ensure_ascii=False, separators=(",", ":"))
    return f"{kind}:" + hashlib.sha256(canonical.encode()).hexdigest()


def charge_idempotency_key(customer: str, invoice: str) -> str:
    """The idempotency key of the charge of *invoice* for *customer* (pure).

    The amount and the currency are left out on purpose: the gateway compares
    the parameters of a request with those first sent under the key, so the
    same invoice with another amount is refused rather than charged again.
    """
    return _key("charge", customer, invoice)


def refund_idempotency_key(
    charge_id: str, *, amount: int | None = None, reference: str | None = None
) -> str:
    """The idempotency key of a refund (pure).

    With a *reference* (a return or credit note number) the key is made from
    the charge and the reference; without one, from the charge and the amount,
    so the same partial refund asked twice is made once. Give references to
    make two refunds of the same amount.
    """
    if reference is not None:
        return _key("refund", charge_id, "reference", reference)
    return _key("refund", charge_id, "amount", amount)


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A charge's inputs, checked (see `check_charge`); what adapters send."""

    amount: int
    currency: str
    customer: str
    invoice: str
    source: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> tuple[str, ...]:
        """Everything that must match for a retry to be the same charge."""
        return (
            str(self.amount),
            self.currency,
            self.customer,
            self.invoice,
            self.source or "",
            self.description or "",
            *(part for item in sorted(self.metadata.items()) for part in item),
        )


def check_amount(amount: int, name: str = "amount") -> int:
    """*amount* if it is an int from 1 to `MAX_AMOUNT` minor units (pure).

    Raises:
        TypeError: not an int.
        ValueError: out of range.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"{name} must be an int in minor units, got {type(amount).__name__}")
    if not 1 <= amount <= MAX_AMOUNT:
        # The value is not shown: a card number passed as an amount must not be echoed.
        raise ValueError(f"{name} must be 1 to {MAX_AMOUNT} minor units")
    return amount


def check_charge(
    *,
    amount: int,
    currency: str,
    customer: str,
    invoice: str,
    source: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ChargeRequest:
    """Check a charge's inputs before anything is built from them (pure).

    The card-number check runs first, on every text input, so no later error
    message can echo a number.

    Raises:
        CardNumberRefused: an input looks like a card number.
        ValueError: another input is invalid.
        TypeError: a metadata value is not a string.
    """
    metadata = dict(metadata or {})
    # Keys first: a value is named after its key, which must be safe to show.
    for name in metadata:
        refuse_card_numbers({"metadata key": name})
    refuse_card_numbers(
        {
            "customer": customer,
            "invoice": invoice,
            "currency": currency,
            "source": source,
            "description": description,
            **{f"metadata value of {name[:40]!r}": value for name, value in metadata.items()},
        }
    )
    check_amount(amount)
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise ValueError("currency must be a 3-letter ISO 4217 code (such as 'eur')")
    if not customer or not invoice:
        raise ValueError("customer and invoice must not be empty")
    for name, value in metadata.items():
        if not name or "[" in name or "]" in name:
            raise ValueError("metadata keys must be non-empty and hold no brackets")
        if name in RESERVED_METADATA:
            raise ValueError(f"metadata key {name!r} is reserved")
        if not isinstance(value, str):
            raise TypeError(f"metadata values must be strings, got {type(value).__name__}")
    return ChargeRequest(
        amount=amount,
        currency=currency.lower(),
        customer=customer,
        invoice=invoice,
        source=source or None,
        description=description or None,
        metadata=metadata,
    )


# --- the interface ----------------------------------------------------------------


class PaymentGateway(Protocol):
    """Charges, refunds and looks up payments, in our terms."""

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
        """Charge *customer* for *invoice*, at most once per invoice.

        Args:
            amount: in minor units (1 to `MAX_AMOUNT`).
            currency: an ISO 4217 code (any case).
            customer: the gateway's customer id.
            invoice: our invoice number; with *customer*, it makes the
                idempotency key.
            source: a payment token (``tok_…``, ``pm_…``); without one the
                customer's default payment method is charged.
            description: text shown on the charge.
            metadata: extra key-value pairs kept with the charge.

        Returns:
            The charge; the same one again when the invoice was already charged
            with the same details.

        Raises:
            CardNumberRefused: an input looks like a card number; nothing was sent.
            ValueError: another input is invalid; nothing was sent.
            PaymentDeclined: the card was declined.
            PaymentConflict: the invoice was already charged with other details.
            seawall.errors.ExternalServiceError: the gateway failed otherwise.
        """
        ...

    async def refund(
        self,
        charge_id: str,
        *,
        amount: int | None = None,
        reason: RefundReason | None = None,
        reference: str | None = None,
    ) -> Refund:
        """Refund (part of) a charge, at most once per *reference* (or amount).

        Args:
            charge_id: the charge to refund.
            amount: in minor units; what is left of the charge by default.
            reason: why.
            reference: our reference for this refund (a credit note number);
                see `refund_idempotency_key`.

        Raises:
            PaymentConflict: the reference was already used with other details.
            seawall.errors.ServiceClientError: no such charge (404), or the
                amount is more than what is left.
        """
        ...

    async def retrieve(self, charge_id: str) -> Charge | None:
        """The charge *charge_id*, or None when the gateway has no such charge."""
        ...
