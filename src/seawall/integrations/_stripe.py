"""`StripeGateway`: the `PaymentGateway` over a Stripe-style HTTP API.

The gateway's shapes (`StripeCharge`, `StripeRefund`, its error envelope) and
their translation into our models (`charge_from_stripe`,
`refund_from_stripe`, pure) live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Self

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from seawall.errors import ExternalServiceError, ServiceClientError
from seawall.http import BearerToken, ExternalService, ServiceResponse, Timeouts
from seawall.integrations._acl import Translated, UnknownValue, UnknownValueRecorder
from seawall.integrations._adapter import ServiceAdapter
from seawall.integrations._payments import (
    Charge,
    ChargeRequest,
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

__all__ = [
    "StripeCharge",
    "StripeGateway",
    "StripeRefund",
    "charge_from_stripe",
    "refund_from_stripe",
    "stripe_form",
]

_INVOICE_KEY: Final = "invoice"


class StripeCharge(BaseModel):
    """A charge as the Stripe-style API sends it (the fields we read)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    amount: int
    amount_refunded: int = 0
    currency: str
    customer: str | None = None
    description: str | None = None
    status: str
    created: int
    metadata: dict[str, str] = Field(default_factory=dict)


class StripeRefund(BaseModel):
    """A refund as the Stripe-style API sends it (the fields we read)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    amount: int
    charge: str
    currency: str
    status: str
    reason: str | None = None
    created: int


class _StripeError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


class _StripeErrorEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: _StripeError


_CHARGE_STATUSES: Final = {
    "succeeded": ChargeStatus.SUCCEEDED,
    "pending": ChargeStatus.PENDING,
    "failed": ChargeStatus.FAILED,
}
_REFUND_STATUSES: Final = {
    "succeeded": RefundStatus.SUCCEEDED,
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def charge_from_stripe(payload: StripeCharge) -> Translated[Charge]:
    """Translate a Stripe-style charge into our `Charge` (pure).

    An unknown status becomes ``pending`` (never ``succeeded``: nothing is
    shipped on a guess) and is reported in ``unknown``.
    """
    unknown: list[UnknownValue] = []
    status = _CHARGE_STATUSES.get(payload.status)
    if status is None:
        status = ChargeStatus.PENDING
        unknown.append(UnknownValue("charge_status", payload.status, status.value))
    metadata = dict(payload.metadata)
    invoice = metadata.pop(_INVOICE_KEY, None)
    charge = Charge(
        id=payload.id,
        amount=payload.amount,
        currency=payload.currency.lower(),
        customer=payload.customer,
        invoice=invoice,
        status=status,
        amount_refunded=payload.amount_refunded,
        created=_utc(payload.created),
        description=payload.description,
        metadata=metadata,
    )
    return Translated(charge, tuple(unknown))


def refund_from_stripe(payload: StripeRefund) -> Translated[Refund]:
    """Translate a Stripe-style refund into our `Refund` (pure).

    An unknown status becomes ``pending`` and an unknown reason None; both are
    reported in ``unknown``.
    """
    unknown: list[UnknownValue] = []
    status = _REFUND_STATUSES.get(payload.status)
    if status is None:
        status = RefundStatus.PENDING
        unknown.append(UnknownValue("refund_status", payload.status, status.value))
    reason: RefundReason | None = None
    if payload.reason is not None:
        try:
            reason = RefundReason(payload.reason)
        except ValueError:
            unknown.append(UnknownValue("refund_reason", payload.reason, "none"))
    refund = Refund(
        id=payload.id,
        charge_id=payload.charge,
        amount=payload.amount,
        currency=payload.currency.lower(),
        status=status,
        reason=reason,
        created=_utc(payload.created),
    )
    return Translated(refund, tuple(unknown))


def stripe_form(request: ChargeRequest) -> dict[str, str]:
    """The form fields of a charge (pure); the invoice goes in ``metadata[invoice]``."""
    form = {
        "amount": str(request.amount),
        "currency": request.currency,
        "customer": request.customer,
        f"metadata[{_INVOICE_KEY}]": request.invoice,
    }
    if request.source:
        form["source"] = request.source
    if request.description:
        form["description"] = request.description
    for name, value in request.metadata.items():
        form[f"metadata[{name}]"] = value
    return form


def _call_facts(response: ServiceResponse) -> dict[str, Any]:
    return {
        "service": response.service,
        "method": response.method,
        "path": response.path,
        "correlation_id": response.correlation_id,
    }


def _error_facts(error: ExternalServiceError) -> dict[str, Any]:
    return {
        "service": error.service,
        "method": error.method,
        "path": error.path,
        "correlation_id": error.correlation_id,
    }


class StripeGateway(ServiceAdapter):
    """`PaymentGateway` over a Stripe-style HTTP API (form-encoded, Bearer key).

    Charges and refunds are sent with a deterministic ``Idempotency-Key``
    (`charge_idempotency_key`), which also makes `ExternalService` retry them
    after a timeout or a dropped connection: the gateway answers a retry with
    the first result.

    Args:
        service: the `ExternalService` for the gateway's API (with its auth).
        registry: the Prometheus registry of the unknown-value counter.
    """

    adapter = "stripe"

    def __init__(
        self, service: ExternalService, *, registry: CollectorRegistry | None = None
    ) -> None:
        super().__init__(service)
        self._unknown = UnknownValueRecorder(self.adapter, registry=registry)

    @classmethod
    def build(
        cls,
        *,
        api_key: str | SecretStr,
        base_url: str = "https://api.stripe.com",
        name: str = "payments",
        **options: Any,
    ) -> Self:
        """A gateway with its own `ExternalService`, closed by `aclose`.

        Args:
            api_key: the secret key (sent as ``Authorization: Bearer``).
            base_url: the API's root.
            name: the service's name in logs, metrics and errors.
            **options: further `ExternalService` options (``retry``, ``timeouts``,
                ``transport``, ``clock``, ...).
        """
        # Charges can take the gateway a while (3-D Secure, the card network): read long.
        options.setdefault("timeouts", Timeouts(connect=5.0, read=30.0))
        gateway = cls(ExternalService(name, base_url, auth=BearerToken(api_key), **options))
        return gateway._owned()

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
        form = stripe_form(request)
        key = charge_idempotency_key(customer, invoice)
        response = await self._post("/v1/charges", form, key, f"invoice {invoice!r}")
        translated = charge_from_stripe(response.model(StripeCharge))
        self._unknown.record(translated.unknown)
        return translated.value

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
        form = {"charge": charge_id}
        if amount is not None:
            form["amount"] = str(check_amount(amount))
        if reason is not None:
            form["reason"] = RefundReason(reason).value
        key = refund_idempotency_key(charge_id, amount=amount, reference=reference)
        what = f"refund {reference!r}" if reference else f"the refund of charge {charge_id!r}"
        response = await self._post("/v1/refunds", form, key, what)
        translated = refund_from_stripe(response.model(StripeRefund))
        self._unknown.record(translated.unknown)
        return translated.value

    async def retrieve(self, charge_id: str) -> Charge | None:
        """The charge *charge_id*, or None when the gateway has no such charge."""
        if not charge_id:
            raise ValueError("charge_id must not be empty")
        response: ServiceResponse = await self.service.get(
            "/v1/charges/{id}", path_params={"id": charge_id}, accept=(404,)
        )
        if response.status_code == 404:
            return None
        translated = charge_from_stripe(response.model(StripeCharge))
        self._unknown.record(translated.unknown)
        return translated.value

    async def _post(
        self, path: str, form: Mapping[str, str], key: str, what: str
    ) -> ServiceResponse:
        try:
            response: ServiceResponse = await self.service.post(
                path, data=form, idempotency_key=key, accept=(402,)
            )
        except ServiceClientError as exc:
            if exc.code == "idempotency_error":
                raise PaymentConflict(
                    idempotency_key=key,
                    what=what,
                    provider_message=exc.provider_message,
                    **_error_facts(exc),
                ) from exc
            raise
        if response.status_code == 402:
            raise _declined(response)
        return response


def _declined(response: ServiceResponse) -> PaymentDeclined:
    try:
        error = _StripeErrorEnvelope.model_validate_json(response.content).error
    except ValidationError:
        error = _StripeError()
    return PaymentDeclined(
        decline_code=error.decline_code,
        provider_message=error.message,
        code=error.code or "card_declined",
        **_call_facts(response),
    )
