"""`FakePaymentGateway`: Stripe-style charges, refunds, errors, idempotency keys and events."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from seawall.errors import InvalidSignature
from seawall.testing import EchoServer, FakeClock, FakePaymentGateway
from seawall.webhooks import verify

KEY = "sk_test_fake"
START = 1_800_000_000
WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=float(START))


@pytest.fixture
def gateway(clock: FakeClock) -> Iterator[FakePaymentGateway]:
    with FakePaymentGateway(clock=clock) as fake:
        yield fake


@pytest.fixture
def stripe(gateway: FakePaymentGateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=5.0) as http:
        yield http


def charge_form(**extra: str) -> dict[str, str]:
    return {"amount": "2000", "currency": "eur", "source": "tok_visa", **extra}


# --- charges ------------------------------------------------------------------------


def test_a_charge_is_created_and_can_be_fetched(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    created = stripe.post(
        "/v1/charges",
        data=charge_form(customer="cus_1", description="order 42", **{"metadata[order]": "42"}),
    )
    charge = created.json()
    fetched = stripe.get(f"/v1/charges/{charge['id']}")

    assert created.status_code == 200
    assert charge["id"].startswith("ch_")
    assert {k: charge[k] for k in ("object", "amount", "currency", "customer", "status")} == {
        "object": "charge",
        "amount": 2000,
        "currency": "eur",
        "customer": "cus_1",
        "status": "succeeded",
    }
    assert (charge["refunded"], charge["amount_refunded"]) == (False, 0)
    assert charge["created"] == 1_800_000_000
    assert charge["metadata"] == {"order": "42"}
    assert fetched.json() == charge
    assert list(gateway.charges) == [charge["id"]]


def test_a_missing_charge_is_a_404_resource_missing(stripe: httpx.Client) -> None:
    response = stripe.get("/v1/charges/ch_nope")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "did not provide"), ({"Authorization": "Bearer sk_wrong"}, "Invalid API Key")],
)
def test_a_missing_or_wrong_key_is_a_401(
    gateway: FakePaymentGateway, headers: dict[str, str], message: str
) -> None:
    response = httpx.post(f"{gateway.url}/v1/charges", data=charge_form(), headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert message in response.json()["error"]["message"]
    assert gateway.charges == {}


def test_the_key_is_also_accepted_as_the_basic_user(gateway: FakePaymentGateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/charges", data=charge_form(), auth=(KEY, ""))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "code", "param"),
    [
        ({"currency": "eur", "source": "tok_visa"}, "parameter_missing", "amount"),
        (charge_form(amount="12.5"), "parameter_invalid_integer", "amount"),
        (charge_form(amount="0"), "amount_too_small", "amount"),
        (charge_form(currency="euro"), "invalid_currency", "currency"),
        ({"amount": "100", "currency": "eur"}, "parameter_missing", "source"),
        (charge_form(source="4242 4242 4242 4242"), "raw_card_data_not_allowed", "source"),
        (charge_form(source="visa"), "resource_missing", "source"),
        (charge_form(colour="red"), "parameter_unknown", "colour"),
    ],
)
def test_invalid_charges_are_a_400_invalid_request_error(
    stripe: httpx.Client, gateway: FakePaymentGateway, form: dict[str, str], code: str, param: str
) -> None:
    response = stripe.post("/v1/charges", data=form)

    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert gateway.charges == {}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("tok_chargeDeclined", "generic_decline"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_a_declined_token_is_a_402_card_error(
    stripe: httpx.Client, gateway: FakePaymentGateway, token: str, reason: str
) -> None:
    response = stripe.post("/v1/charges", data=charge_form(source=token))

    error = response.json()["error"]
    assert response.status_code == 402
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        reason,
    )
    assert gateway.charges == {}


def test_the_api_key_is_not_in_the_repr() -> None:
    fake = FakePaymentGateway(api_key="sk_live_very_secret")

    assert "very_secret" not in repr(fake) + repr(vars(fake))


# --- idempotency --------------------------------------------------------------------


def test_the_same_idempotency_key_and_params_replay_the_first_charge(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    headers = {"Idempotency-Key": "order-42"}

    first = stripe.post("/v1/charges", data=charge_form(), headers=headers)
    second = stripe.post("/v1/charges", data=charge_form(), headers=headers)

    assert second.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert len(gateway.charges) == 1
    assert gateway.idempotency_keys == ["order-42"]


def test_the_same_key_with_other_params_is_an_idempotency_error(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    stripe.post("/v1/charges", data=charge_form(), headers=headers)

    response = stripe.post("/v1/charges", data=charge_form(amount="999"), headers=headers)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "idempotency_error"
    assert len(gateway.charges) == 1


def test_a_declined_charge_is_replayed_but_a_validation_error_is_not_stored(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    declined = charge_form(source="tok_chargeDeclined")
    stripe.post("/v1/charges", data=declined, headers={"Idempotency-Key": "k-declined"})
    stripe.post("/v1/charges", data={"currency": "eur"}, headers={"Idempotency-Key": "k-invalid"})

    replay = stripe.post("/v1/charges", data=declined, headers={"Idempotency-Key": "k-declined"})
    fixed = stripe.post("/v1/charges", data=charge_form(), headers={"Idempotency-Key": "k-invalid"})

    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (402, "true")
    assert fixed.status_code == 200
    assert gateway.idempotency_keys == ["k-declined", "k-invalid"]


def test_without_a_key_every_post_creates_a_charge(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    for _ in range(3):
        stripe.post("/v1/charges", data=charge_form())

    assert len(gateway.charges) == 3


def test_a_retry_after_a_lost_response_with_the_same_key_charges_once(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    gateway.chaos.drop_next(1, processed=True)
    headers = {"Idempotency-Key": "order-44"}

    with pytest.raises(httpx.RemoteProtocolError):
        stripe.post("/v1/charges", data=charge_form(), headers=headers)
    retried = stripe.post("/v1/charges", data=charge_form(), headers=headers)

    assert retried.headers["idempotent-replayed"] == "true"
    assert list(gateway.charges) == [retried.json()["id"]]


def test_a_hang_after_processing_still_charges_and_the_replay_finds_it(
    gateway: FakePaymentGateway,
) -> None:
    gateway.chaos.hang_next(1, processed=True)
    headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": "order-46"}

    with httpx.Client(base_url=gateway.url, headers=headers, timeout=0.05) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/charges", data=charge_form())
        http.timeout = httpx.Timeout(5.0)
        retried = http.post("/v1/charges", data=charge_form())

    assert retried.headers["idempotent-replayed"] == "true"
    assert len(gateway.charges) == 1


def test_a_chaos_failure_stores_nothing_so_the_retry_really_charges(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    gateway.chaos.fail_next(1, status=503)
    headers = {"Idempotency-Key": "order-45"}

    failed = stripe.post("/v1/charges", data=charge_form(), headers=headers)
    retried = stripe.post("/v1/charges", data=charge_form(), headers=headers)

    assert (failed.status_code, retried.status_code) == (503, 200)
    assert "idempotent-replayed" not in retried.headers
    assert len(gateway.charges) == 1


# --- refunds ------------------------------------------------------------------------


def test_refunds_default_to_what_is_left_and_mark_the_charge_refunded(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    charge = stripe.post("/v1/charges", data=charge_form()).json()

    partial = stripe.post("/v1/refunds", data={"charge": charge["id"], "amount": "500"})
    rest = stripe.post("/v1/refunds", data={"charge": charge["id"]})
    again = stripe.post("/v1/refunds", data={"charge": charge["id"]})

    assert (partial.json()["amount"], rest.json()["amount"]) == (500, 1500)
    assert partial.json()["object"] == "refund"
    assert again.json()["error"]["code"] == "charge_already_refunded"
    stored = gateway.charges[charge["id"]]
    assert (stored["amount_refunded"], stored["refunded"]) == (2000, True)
    assert len(gateway.refunds) == 2


def test_refunding_more_than_was_charged_is_a_400(stripe: httpx.Client) -> None:
    charge = stripe.post("/v1/charges", data=charge_form()).json()

    response = stripe.post("/v1/refunds", data={"charge": charge["id"], "amount": "2001"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "amount_too_large"


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [({}, 400, "parameter_missing"), ({"charge": "ch_nope"}, 404, "resource_missing")],
)
def test_refunds_need_an_existing_charge(
    stripe: httpx.Client, form: dict[str, str], status: int, code: str
) -> None:
    response = stripe.post("/v1/refunds", data=form)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_refunds_honour_idempotency_keys(stripe: httpx.Client, gateway: FakePaymentGateway) -> None:
    charge = stripe.post("/v1/charges", data=charge_form()).json()
    headers = {"Idempotency-Key": "refund-1"}

    first = stripe.post("/v1/refunds", data={"charge": charge["id"]}, headers=headers)
    second = stripe.post("/v1/refunds", data={"charge": charge["id"]}, headers=headers)

    assert first.json() == second.json()
    assert len(gateway.refunds) == 1


# --- events -------------------------------------------------------------------------


def add_events(
    gateway: FakePaymentGateway, clock: FakeClock, types: list[str]
) -> list[dict[str, Any]]:
    """One event of each type, ten seconds apart, oldest first."""
    added = []
    for n, kind in enumerate(types):
        added.append(gateway.add_event(kind, {"id": f"ch_{n}", "object": "charge"}))
        clock.advance(10)
    return added


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["id"] for event in events]


def test_a_charge_records_a_charge_succeeded_event_once(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    headers = {"Idempotency-Key": "order-50"}

    charge = stripe.post("/v1/charges", data=charge_form(), headers=headers).json()
    stripe.post("/v1/charges", data=charge_form(), headers=headers)

    (event,) = gateway.events
    assert event["id"].startswith("evt_")
    assert {k: v for k, v in event.items() if k not in ("id", "data")} == {
        "object": "event",
        "api_version": "2024-06-20",
        "created": START,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": "order-50"},
        "type": "charge.succeeded",
    }
    assert event["data"] == {"object": charge}


def test_a_declined_card_records_a_charge_failed_event(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    stripe.post("/v1/charges", data=charge_form(source="tok_chargeDeclined"))

    (event,) = gateway.events
    failed = event["data"]["object"]
    assert event["type"] == "charge.failed"
    assert (failed["status"], failed["paid"], failed["failure_code"]) == (
        "failed",
        False,
        "card_declined",
    )
    assert event["request"]["idempotency_key"] is None
    assert gateway.charges == {}


def test_a_refund_records_charge_refunded_with_the_updated_charge(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    charge = stripe.post("/v1/charges", data=charge_form()).json()

    stripe.post("/v1/refunds", data={"charge": charge["id"], "amount": "500"})

    event = gateway.events[-1]
    assert event["type"] == "charge.refunded"
    assert event["data"]["object"]["id"] == charge["id"]
    assert event["data"]["object"]["amount_refunded"] == 500
    assert event["data"]["previous_attributes"] == {"amount_refunded": 0, "refunded": False}


def test_events_are_listed_newest_first_and_paged_with_starting_after(
    stripe: httpx.Client, gateway: FakePaymentGateway, clock: FakeClock
) -> None:
    added = add_events(gateway, clock, ["charge.succeeded"] * 5)

    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = stripe.get("/v1/events", params=params).json()
        pages.append(ids(page["data"]))
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["id"]

    newest_first = ids(added)[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert (page["object"], page["url"]) == ("list", "/v1/events")


def test_ending_before_gives_the_page_just_newer_than_an_event(
    stripe: httpx.Client, gateway: FakePaymentGateway, clock: FakeClock
) -> None:
    added = add_events(gateway, clock, ["charge.succeeded"] * 5)

    page = stripe.get("/v1/events", params={"limit": 2, "ending_before": added[1]["id"]}).json()

    assert ids(page["data"]) == [added[3]["id"], added[2]["id"]]
    assert page["has_more"] is True


def test_the_default_limit_is_10(
    stripe: httpx.Client, gateway: FakePaymentGateway, clock: FakeClock
) -> None:
    add_events(gateway, clock, ["charge.succeeded"] * 11)

    page = stripe.get("/v1/events").json()

    assert (len(page["data"]), page["has_more"]) == (10, True)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"created[gte]": START + 10}, [3, 2, 1]),
        ({"created[gt]": START + 10}, [3, 2]),
        ({"created[lte]": START + 10}, [1, 0]),
        ({"created[lt]": START + 10}, [0]),
        ({"created[gte]": START + 10, "created[lt]": START + 30}, [2, 1]),
        ({"created": START + 20}, [2]),
        ({"type": "charge.*"}, [2, 1, 0]),
        ({"type": "charge.refunded"}, [1]),
        ({"type": "*.created"}, [3, 2]),
        ({"type": "charge"}, []),
        ({"types[]": ["charge.refunded", "customer.created"]}, [3, 1]),
        ({"type": "charge.*", "created[gte]": START + 10}, [2, 1]),
    ],
)
def test_events_are_filtered_by_creation_time_and_type(
    stripe: httpx.Client,
    gateway: FakePaymentGateway,
    clock: FakeClock,
    params: dict[str, Any],
    expected: list[int],
) -> None:
    added = add_events(
        gateway,
        clock,
        ["charge.succeeded", "charge.refunded", "charge.dispute.created", "customer.created"],
    )

    page = stripe.get("/v1/events", params=params).json()

    assert ids(page["data"]) == [added[n]["id"] for n in expected]
    assert page["has_more"] is False


def test_has_more_counts_only_the_events_that_match(
    stripe: httpx.Client, gateway: FakePaymentGateway, clock: FakeClock
) -> None:
    add_events(gateway, clock, ["charge.succeeded", "customer.created", "charge.failed"])

    page = stripe.get("/v1/events", params={"type": "charge.*", "limit": 2}).json()

    assert (len(page["data"]), page["has_more"]) == (2, False)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"created[gte]": "yesterday"}, "created[gte]"),
        ({"created_gte": 1}, "created_gte"),
        ({"starting_after": "evt_nope"}, "starting_after"),
        ({"ending_before": "evt_nope"}, "ending_before"),
        ({"delivery_success": "maybe"}, "delivery_success"),
    ],
)
def test_invalid_event_list_params_are_a_400_naming_the_param(
    stripe: httpx.Client, params: dict[str, Any], param: str
) -> None:
    response = stripe.get("/v1/events", params=params)

    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


@pytest.mark.parametrize(
    "params",
    [
        {"starting_after": "evt_a", "ending_before": "evt_b"},
        {"type": "charge.*", "types[]": ["charge.failed"]},
    ],
)
def test_exclusive_event_list_params_are_a_400(
    stripe: httpx.Client, params: dict[str, Any]
) -> None:
    response = stripe.get("/v1/events", params=params)

    assert response.status_code == 400
    assert "only specify one of" in response.json()["error"]["message"]


def test_listing_events_needs_the_key(gateway: FakePaymentGateway) -> None:
    gateway.add_event("charge.succeeded", {"id": "ch_1"})

    response = httpx.get(f"{gateway.url}/v1/events", headers={"Authorization": "Bearer sk_no"})

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_an_event_is_retrieved_by_id_or_is_a_404(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    event = gateway.add_event("charge.succeeded", {"id": "ch_1", "amount": 100})

    found = stripe.get(f"/v1/events/{event['id']}")
    missing = stripe.get("/v1/events/evt_nope")

    assert found.json() == event
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"


def test_events_older_than_30_days_are_neither_listed_nor_retrieved(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    thirty_days = int(timedelta(days=30).total_seconds())
    old = gateway.add_event("charge.succeeded", {"id": "ch_1"}, created=START - thirty_days - 1)
    kept = gateway.add_event("charge.succeeded", {"id": "ch_2"}, created=START - thirty_days)

    listed = stripe.get("/v1/events").json()

    assert ids(listed["data"]) == [kept["id"]]
    assert stripe.get(f"/v1/events/{old['id']}").status_code == 404
    assert ids(gateway.events) == [old["id"], kept["id"]]


def test_events_added_with_an_earlier_time_are_listed_in_time_order(
    stripe: httpx.Client, gateway: FakePaymentGateway
) -> None:
    now = gateway.add_event("charge.succeeded", {"id": "ch_1"})
    earlier = gateway.add_event("charge.succeeded", {"id": "ch_2"}, created=START - 60)

    listed = stripe.get("/v1/events").json()

    assert ids(listed["data"]) == [now["id"], earlier["id"]]
    assert ids(gateway.events) == [earlier["id"], now["id"]]


# --- sending webhooks ---------------------------------------------------------------


def test_send_webhook_posts_the_event_signed_as_stripe_does(
    stripe: httpx.Client, gateway: FakePaymentGateway, echo: EchoServer
) -> None:
    event = gateway.add_event("charge.succeeded", {"id": "ch_1"})

    status = gateway.send_webhook(f"{echo.url}/echo", WEBHOOK_SECRET, event, timestamp=START)

    (received,) = echo.requests
    assert status == 200
    assert json.loads(received.body) == event
    assert received.headers["Stripe-Signature"].startswith(f"t={START},v1=")
    verify("stripe", received.headers, received.body, [WEBHOOK_SECRET], now=START + 1)
    with pytest.raises(InvalidSignature):
        verify("stripe", received.headers, received.body, ["whsec_other"], now=START + 1)
    delivered = stripe.get("/v1/events", params={"delivery_success": "true"}).json()
    pending = stripe.get("/v1/events", params={"delivery_success": "false"}).json()
    assert (ids(delivered["data"]), pending["data"]) == ([event["id"]], [])


def test_send_webhook_reports_a_refused_connection_and_an_error_answer(
    gateway: FakePaymentGateway, echo: EchoServer
) -> None:
    event = gateway.add_event("charge.succeeded", {"id": "ch_1"})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    echo.chaos.fail_next(1, status=500)

    refused = gateway.send_webhook(f"http://127.0.0.1:{closed}/hook", WEBHOOK_SECRET, event)
    failed = gateway.send_webhook(f"{echo.url}/echo", WEBHOOK_SECRET, event)

    assert (refused, failed) == (0, 500)
    assert gateway.events[0]["pending_webhooks"] == 1
