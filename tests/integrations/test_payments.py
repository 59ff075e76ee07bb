"""Payments: `StripeGateway` against `FakePaymentGateway` (real HTTP), and the in-memory twin.

Behaviour both must share runs on both (the ``gateway`` fixture); what only
HTTP can show (idempotency across instances, lost answers, nothing sent for a
card number) runs on `StripeGateway` alone. Retries wait on a `FakeClock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import pytest

from seawall.errors import ExternalServiceError, ServiceClientError
from seawall.integrations import (
    CardNumberRefused,
    ChargeStatus,
    InMemoryPaymentGateway,
    PaymentConflict,
    PaymentDeclined,
    PaymentGateway,
    RefundReason,
    RefundStatus,
    StripeCharge,
    StripeGateway,
    charge_from_stripe,
    charge_idempotency_key,
    refund_idempotency_key,
)
from seawall.testing import FakeClock, FakePaymentGateway


def stripe(fake: FakePaymentGateway, clock: FakeClock, **options: Any) -> StripeGateway:
    return StripeGateway.build(api_key="sk_test_fake", base_url=fake.url, clock=clock, **options)


@pytest.fixture(params=["stripe", "memory"])
async def gateway(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[PaymentGateway]:
    if request.param == "memory":
        yield InMemoryPaymentGateway(clock=clock)
        return
    fake: FakePaymentGateway = request.getfixturevalue("payments_fake")
    async with stripe(fake, clock) as adapter:
        yield adapter


CHARGE: dict[str, Any] = {
    "amount": 1999,
    "currency": "EUR",
    "customer": "cus_123",
    "invoice": "INV-1",
    "source": "tok_visa",
}


# --- both implementations -----------------------------------------------------------


async def test_a_charge_comes_back_in_our_terms(gateway: PaymentGateway) -> None:
    charge = await gateway.charge(**CHARGE, description="order 42", metadata={"order": "42"})

    assert charge.amount == 1999
    assert charge.currency == "eur"
    assert charge.customer == "cus_123"
    assert charge.invoice == "INV-1"
    assert charge.status is ChargeStatus.SUCCEEDED
    assert charge.amount_refunded == 0
    assert charge.created.tzinfo is UTC
    assert charge.description == "order 42"
    assert charge.metadata == {"order": "42"}
    assert await gateway.retrieve(charge.id) == charge


async def test_charging_an_invoice_again_gives_the_first_charge(gateway: PaymentGateway) -> None:
    first = await gateway.charge(**CHARGE)

    again = await gateway.charge(**CHARGE)

    assert again.id == first.id


async def test_the_same_invoice_with_another_amount_is_a_conflict(
    gateway: PaymentGateway,
) -> None:
    await gateway.charge(**CHARGE)

    with pytest.raises(PaymentConflict) as caught:
        await gateway.charge(**{**CHARGE, "amount": 2500})

    assert isinstance(caught.value, ServiceClientError)
    assert caught.value.status == 400
    assert caught.value.idempotency_key == charge_idempotency_key("cus_123", "INV-1")
    assert "INV-1" in str(caught.value)


async def test_a_declined_card_is_payment_declined_with_its_reason(
    gateway: PaymentGateway,
) -> None:
    declined = {**CHARGE, "source": "tok_chargeDeclinedInsufficientFunds"}

    with pytest.raises(PaymentDeclined) as caught:
        await gateway.charge(**declined)

    error = caught.value
    assert isinstance(error, ServiceClientError)
    assert isinstance(error, ExternalServiceError)
    assert error.status == 402
    assert error.decline_code == "insufficient_funds"
    assert error.code == "card_declined"
    assert "another payment method" in str(error)


async def test_a_declined_invoice_stays_declined_when_retried(gateway: PaymentGateway) -> None:
    declined = {**CHARGE, "source": "tok_chargeDeclined"}
    with pytest.raises(PaymentDeclined):
        await gateway.charge(**declined)

    with pytest.raises(PaymentDeclined) as caught:
        await gateway.charge(**declined)

    assert caught.value.decline_code == "generic_decline"


async def test_a_card_number_anywhere_is_refused_without_showing_it(
    gateway: PaymentGateway,
) -> None:
    pan = {**CHARGE, "description": "paid with 4000 0566 5566 5556"}

    with pytest.raises(CardNumberRefused) as caught:
        await gateway.charge(**pan)

    assert caught.value.field == "description"
    assert "5556" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"amount": 0}, ValueError),
        ({"amount": 100_000_000}, ValueError),
        ({"amount": 19.99}, TypeError),
        ({"amount": True}, TypeError),
        ({"currency": "euro"}, ValueError),
        ({"invoice": ""}, ValueError),
        ({"metadata": {"invoice": "x"}}, ValueError),
        ({"metadata": {"a[b]": "x"}}, ValueError),
    ],
)
async def test_invalid_charges_are_refused_before_sending(
    gateway: PaymentGateway, change: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await gateway.charge(**{**CHARGE, **change})


async def test_refunds_add_up_to_the_charge(gateway: PaymentGateway) -> None:
    charge = await gateway.charge(**CHARGE)

    part = await gateway.refund(charge.id, amount=500, reason=RefundReason.REQUESTED_BY_CUSTOMER)
    rest = await gateway.refund(charge.id)

    assert (part.amount, rest.amount) == (500, 1499)
    assert part.status is RefundStatus.SUCCEEDED
    assert part.reason is RefundReason.REQUESTED_BY_CUSTOMER
    assert part.currency == "eur"
    refreshed = await gateway.retrieve(charge.id)
    assert refreshed is not None
    assert refreshed.amount_refunded == 1999
    assert refreshed.refunded


async def test_the_same_refund_asked_twice_is_made_once(gateway: PaymentGateway) -> None:
    charge = await gateway.charge(**CHARGE)

    first = await gateway.refund(charge.id, amount=300)
    again = await gateway.refund(charge.id, amount=300)

    assert again.id == first.id
    refreshed = await gateway.retrieve(charge.id)
    assert refreshed is not None
    assert refreshed.amount_refunded == 300


async def test_refunds_with_their_own_references_are_made_separately(
    gateway: PaymentGateway,
) -> None:
    charge = await gateway.charge(**CHARGE)

    first = await gateway.refund(charge.id, amount=300, reference="CN-1")
    second = await gateway.refund(charge.id, amount=300, reference="CN-2")

    assert first.id != second.id
    with pytest.raises(PaymentConflict):
        await gateway.refund(charge.id, amount=400, reference="CN-1")


async def test_refunding_more_than_is_left_is_refused(gateway: PaymentGateway) -> None:
    charge = await gateway.charge(**CHARGE)

    with pytest.raises(ServiceClientError) as caught:
        await gateway.refund(charge.id, amount=5000)

    assert caught.value.status == 400
    assert caught.value.code == "amount_too_large"


async def test_refunding_an_unknown_charge_is_refused(gateway: PaymentGateway) -> None:
    with pytest.raises(ServiceClientError) as caught:
        await gateway.refund("ch_nope")

    assert caught.value.status == 404
    assert caught.value.code == "resource_missing"


async def test_an_unknown_charge_is_none(gateway: PaymentGateway) -> None:
    assert await gateway.retrieve("ch_nope") is None


# --- over HTTP only -------------------------------------------------------------------


async def test_a_card_number_is_refused_before_any_request(
    payments_fake: FakePaymentGateway, clock: FakeClock
) -> None:
    async with stripe(payments_fake, clock) as gateway:
        with pytest.raises(CardNumberRefused):
            await gateway.charge(**{**CHARGE, "metadata": {"note": "4242424242424242"}})
        with pytest.raises(CardNumberRefused):
            await gateway.charge(**{**CHARGE, "source": "378282246310005"})

    assert payments_fake.requests == []


async def test_two_instances_charging_one_invoice_make_one_charge(
    payments_fake: FakePaymentGateway,
) -> None:
    # Each gateway has a service of its own, as two processes (or one restarted) would.
    async with stripe(payments_fake, FakeClock()) as first_instance:
        first = await first_instance.charge(**CHARGE)

    async with stripe(payments_fake, FakeClock()) as second_instance:
        second = await second_instance.charge(**CHARGE)
        with pytest.raises(PaymentConflict) as caught:
            await second_instance.charge(**{**CHARGE, "amount": 2000})

    assert second.id == first.id
    assert list(payments_fake.charges) == [first.id]
    assert caught.value.provider_message is not None
    keys = {request.headers["idempotency-key"] for request in payments_fake.requests}
    assert keys == {charge_idempotency_key("cus_123", "INV-1")}


async def test_a_charge_whose_answer_was_lost_is_retried_and_made_once(
    payments_fake: FakePaymentGateway, clock: FakeClock
) -> None:
    payments_fake.chaos.drop_next(1, processed=True)

    async with stripe(payments_fake, clock) as gateway:
        charge = await gateway.charge(**CHARGE)

    assert list(payments_fake.charges) == [charge.id]
    assert len(payments_fake.requests) == 2
    assert len(clock.sleeps) == 1


async def test_a_refund_whose_answer_was_lost_is_retried_and_made_once(
    payments_fake: FakePaymentGateway, clock: FakeClock
) -> None:
    async with stripe(payments_fake, clock) as gateway:
        charge = await gateway.charge(**CHARGE)
        payments_fake.chaos.drop_next(1, processed=True)

        refund = await gateway.refund(charge.id, amount=100)

    assert list(payments_fake.refunds) == [refund.id]
    header = payments_fake.requests[-1].headers["idempotency-key"]
    assert header == refund_idempotency_key(charge.id, amount=100)


async def test_a_wrong_api_key_is_a_client_error(
    payments_fake: FakePaymentGateway, clock: FakeClock
) -> None:
    gateway = StripeGateway.build(api_key="sk_test_wrong", base_url=payments_fake.url, clock=clock)

    async with gateway:
        with pytest.raises(ServiceClientError) as caught:
            await gateway.charge(**CHARGE)

    assert caught.value.status == 401
    assert "sk_test_wrong" not in str(caught.value)
    assert "sk_test_wrong" not in repr(gateway)


async def test_a_gateway_given_a_service_leaves_it_open(
    payments_fake: FakePaymentGateway, clock: FakeClock
) -> None:
    owned = stripe(payments_fake, clock)
    borrowed = StripeGateway(owned.service)

    await borrowed.aclose()

    assert (await owned.charge(**CHARGE)).amount == 1999
    await owned.aclose()


# --- the translation (pure) ------------------------------------------------------------


def test_an_unknown_charge_status_reads_as_pending_and_is_reported() -> None:
    payload = StripeCharge.model_validate(
        {
            "id": "ch_1",
            "amount": 500,
            "currency": "USD",
            "status": "requires_capture",
            "created": 1_800_000_000,
            "metadata": {"invoice": "INV-9", "order": "7"},
        }
    )

    translated = charge_from_stripe(payload)

    assert translated.value.status is ChargeStatus.PENDING
    assert translated.value.currency == "usd"
    assert translated.value.invoice == "INV-9"
    assert translated.value.metadata == {"order": "7"}
    assert [(u.field, u.value) for u in translated.unknown] == [
        ("charge_status", "requires_capture")
    ]


def test_idempotency_keys_are_stable_and_unambiguous() -> None:
    key = charge_idempotency_key("cus_1", "INV-1")

    assert key == charge_idempotency_key("cus_1", "INV-1")
    assert key.startswith("charge:")
    assert len(key) == len("charge:") + 64
    assert charge_idempotency_key("a,b", "c") != charge_idempotency_key("a", "b,c")
    assert refund_idempotency_key("ch_1", amount=100) != refund_idempotency_key("ch_1")
    assert refund_idempotency_key("ch_1", reference="CN-1") != refund_idempotency_key(
        "ch_1", reference="CN-2"
    )


async def test_an_amount_or_currency_error_never_echoes_a_number(gateway: PaymentGateway) -> None:
    with pytest.raises(ValueError, match="minor units") as amount:
        await gateway.charge(**{**CHARGE, "amount": 4242424242424242})
    with pytest.raises(CardNumberRefused) as currency:
        await gateway.charge(**{**CHARGE, "currency": "4242424242424242"})

    assert "4242" not in str(amount.value)
    assert currency.value.field == "currency"
