"""`FakeNotifications`: SendGrid mail, Twilio SMS and Slack webhooks on one fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from seawall.testing import FakeNotifications

SENDGRID_KEY = "SG.fake-sendgrid-key"
TWILIO = ("AC00000000000000000000000000000000", "fake-twilio-token")
SMS_PATH = f"/2010-04-01/Accounts/{TWILIO[0]}/Messages.json"
SLACK_PATH = "/services/T000/B000/XXXX"


@pytest.fixture
def fake() -> Iterator[FakeNotifications]:
    with FakeNotifications() as server:
        yield server


@pytest.fixture
def http(fake: FakeNotifications) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0) as client:
        yield client


def mail(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ada@example.com"}, {"email": "bob@example.com"}]}],
        "from": {"email": "alerts@seawall.test"},
        "subject": "Case 42 escalated",
        "content": [
            {"type": "text/plain", "value": "It is urgent."},
            {"type": "text/html", "value": "<p>It is urgent.</p>"},
        ],
    }
    body.update(changes)
    return body


def sendgrid(http: httpx.Client, body: object, key: str = SENDGRID_KEY) -> httpx.Response:
    return http.post("/v3/mail/send", json=body, headers={"Authorization": f"Bearer {key}"})


# --- SendGrid -----------------------------------------------------------------------


def test_an_email_is_accepted_with_202_and_recorded(
    http: httpx.Client, fake: FakeNotifications
) -> None:
    response = sendgrid(http, mail())

    (email,) = fake.emails
    assert (response.status_code, response.content) == (202, b"")
    assert response.headers["x-message-id"] == email.message_id
    assert email.sender == "alerts@seawall.test"
    assert email.to == ("ada@example.com", "bob@example.com")
    assert (email.subject, email.text, email.html) == (
        "Case 42 escalated",
        "It is urgent.",
        "<p>It is urgent.</p>",
    )


def test_a_subject_in_every_personalization_is_enough(
    http: httpx.Client, fake: FakeNotifications
) -> None:
    body = mail(personalizations=[{"to": [{"email": "a@b.c"}], "subject": "Per person"}])
    del body["subject"]

    response = sendgrid(http, body)

    assert response.status_code == 202
    assert fake.emails[0].subject == "Per person"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": [{"email": "nope"}]}]}, "personalizations.0.to.0.email"),
        ({"from": {}}, "from.email"),
        ({"subject": ""}, "subject"),
        ({"content": [{"type": "text/plain"}]}, "content"),
    ],
)
def test_a_bad_mail_body_is_a_400_naming_the_field(
    http: httpx.Client, fake: FakeNotifications, changes: dict[str, Any], field: str
) -> None:
    response = sendgrid(http, mail(**changes))

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]
    assert fake.emails == []


def test_a_body_that_is_not_json_is_a_400(http: httpx.Client) -> None:
    response = http.post(
        "/v3/mail/send", content=b"{", headers={"Authorization": f"Bearer {SENDGRID_KEY}"}
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] is None


def test_a_wrong_sendgrid_key_is_a_401(http: httpx.Client, fake: FakeNotifications) -> None:
    response = sendgrid(http, mail(), key="SG.wrong")

    assert response.status_code == 401
    assert "authorization grant" in response.json()["errors"][0]["message"]
    assert fake.emails == []


# --- Twilio -------------------------------------------------------------------------


def test_an_sms_is_queued_with_201_and_recorded(
    http: httpx.Client, fake: FakeNotifications
) -> None:
    response = http.post(
        SMS_PATH, data={"To": "+4915112345678", "From": "+15005550006", "Body": "Hi"}, auth=TWILIO
    )

    (sms,) = fake.sms
    document = response.json()
    assert response.status_code == 201
    assert document["sid"] == sms.sid
    assert sms.sid.startswith("SM")
    assert (document["status"], document["to"], document["from"], document["body"]) == (
        "queued",
        "+4915112345678",
        "+15005550006",
        "Hi",
    )
    assert (sms.to, sms.sender, sms.body) == ("+4915112345678", "+15005550006", "Hi")


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "+15005550006", "Body": "Hi"}, 21604),
        ({"To": "0151 not a number", "From": "+15005550006", "Body": "Hi"}, 21211),
        ({"To": "+4915112345678", "Body": "Hi"}, 21603),
        ({"To": "+4915112345678", "From": "+15005550006"}, 21602),
        ({"To": "+4915112345678", "From": "+15005550006", "Body": "x" * 1601}, 21617),
    ],
)
def test_a_bad_sms_is_a_400_with_twilios_error_code(
    http: httpx.Client, fake: FakeNotifications, form: dict[str, str], code: int
) -> None:
    response = http.post(SMS_PATH, data=form, auth=TWILIO)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["status"]) == (code, 400)
    assert fake.sms == []


def test_wrong_twilio_credentials_are_a_401(http: httpx.Client) -> None:
    response = http.post(
        SMS_PATH,
        data={"To": "+4915112345678", "From": "+1500", "Body": "Hi"},
        auth=(TWILIO[0], "wrong"),
    )

    assert (response.status_code, response.json()["code"]) == (401, 20003)


def test_another_account_in_the_path_is_a_404(http: httpx.Client) -> None:
    response = http.post(
        "/2010-04-01/Accounts/ACother/Messages.json",
        data={"To": "+4915112345678", "From": "+1500", "Body": "Hi"},
        auth=TWILIO,
    )

    assert (response.status_code, response.json()["code"]) == (404, 20404)


# --- Slack --------------------------------------------------------------------------


def test_a_slack_message_gets_ok_and_is_recorded(
    http: httpx.Client, fake: FakeNotifications
) -> None:
    response = http.post(SLACK_PATH, json={"text": "Case 42 escalated"})

    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["content-type"].startswith("text/plain")
    assert [message.text for message in fake.slack] == ["Case 42 escalated"]


def test_blocks_without_text_and_a_form_payload_are_accepted(
    http: httpx.Client, fake: FakeNotifications
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]

    as_json = http.post(SLACK_PATH, json={"blocks": blocks})
    as_form = http.post(SLACK_PATH, data={"payload": '{"text": "from a form"}'})

    assert (as_json.text, as_form.text) == ("ok", "ok")
    assert [(m.text, m.blocks) for m in fake.slack] == [(None, blocks), ("from a form", None)]


@pytest.mark.parametrize(
    ("body", "answer"),
    [(b'{"username": "bot"}', "no_text"), (b"{", "invalid_payload"), (b"[]", "invalid_payload")],
)
def test_a_slack_message_without_text_is_a_400(
    http: httpx.Client, body: bytes, answer: str
) -> None:
    response = http.post(SLACK_PATH, content=body)

    assert (response.status_code, response.text) == (400, answer)


def test_an_unknown_webhook_is_a_404_no_service(http: httpx.Client) -> None:
    response = http.post("/services/T000/B000/WRONG", json={"text": "hi"})

    assert (response.status_code, response.text) == (404, "no_service")


def test_clear_forgets_what_was_sent(http: httpx.Client, fake: FakeNotifications) -> None:
    sendgrid(http, mail())
    http.post(SLACK_PATH, json={"text": "x"})

    fake.clear()

    assert (fake.emails, fake.slack, fake.requests) == ([], [], [])


def test_credentials_are_not_in_the_repr() -> None:
    server = FakeNotifications(sendgrid_api_key="SG.hidden", twilio_auth_token="tw-hidden")

    text = repr(server) + repr(vars(server))

    assert "SG.hidden" not in text
    assert "tw-hidden" not in text
