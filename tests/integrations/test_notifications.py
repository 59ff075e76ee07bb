"""Notifications: the `Notifier`'s routing, and the HTTP channels against `FakeNotifications`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from seawall.errors import CircuitOpenError, ServiceClientError, ServiceUnavailable
from seawall.http import ExternalService
from seawall.integrations import (
    Delivery,
    InMemoryChannel,
    Notification,
    Notifier,
    SendGridEmail,
    SlackWebhook,
    TwilioSms,
)
from seawall.testing import FakeClock, FakeNotifications

EMAIL = Notification(to="ada@example.com", subject="Your refund", body="It is on its way.")
SMS = Notification(to="+14155550100", body="Your refund is on its way.")


def outage(channel: str) -> ServiceUnavailable:
    return ServiceUnavailable("answered 503", service=channel, status=503)


class PagerChannel:
    """A channel the Notifier has never heard of: it only has to have a name and send."""

    name = "pager"

    def __init__(self) -> None:
        self.pages: list[str] = []

    async def send(self, notification: Notification) -> Delivery:
        self.pages.append(notification.body)
        return Delivery(
            channel=self.name, provider_id=f"page-{len(self.pages)}", accepted_at=PAGED_AT
        )


PAGED_AT = datetime(2027, 1, 15, 10, 30, tzinfo=UTC)


# --- the notifier -----------------------------------------------------------------------


async def test_a_notification_goes_to_the_channel_named() -> None:
    email, sms = InMemoryChannel("email"), InMemoryChannel("sms")
    notifier = Notifier([email, sms])

    delivery = await notifier.send(SMS, via="sms")

    assert delivery.channel == "sms"
    assert delivery.provider_id == "sms-1"
    assert sms.sent == [SMS]
    assert email.sent == []


async def test_a_new_kind_of_channel_plugs_in_without_changing_the_notifier() -> None:
    pager = PagerChannel()
    notifier = Notifier([InMemoryChannel("email"), pager])

    delivery = await notifier.send(SMS, via="pager")

    assert delivery.provider_id == "page-1"
    assert pager.pages == [SMS.body]


async def test_a_failing_channel_fails_over_to_the_next() -> None:
    primary, backup = InMemoryChannel("sendgrid"), InMemoryChannel("smtp")
    primary.fail_next(outage("sendgrid"))
    notifier = Notifier([primary, backup])

    with capture_logs() as logs:
        delivery = await notifier.send(EMAIL)

    assert delivery.channel == "smtp"
    assert backup.sent == [EMAIL]
    failed_over = [line for line in logs if line["event"] == "notification_failed_over"]
    assert failed_over[0]["channel"] == "sendgrid"
    assert failed_over[0]["next_channel"] == "smtp"
    assert failed_over[0]["error"] == "ServiceUnavailable"


async def test_an_open_circuit_also_fails_over() -> None:
    primary, backup = InMemoryChannel("a"), InMemoryChannel("b")
    primary.fail_next(CircuitOpenError(breaker="a", retry_after=10.0))

    delivery = await Notifier([primary, backup]).send(EMAIL, via=["a", "b"])

    assert delivery.channel == "b"


async def test_when_every_channel_fails_the_last_error_says_which_were_tried() -> None:
    first, second = InMemoryChannel("a"), InMemoryChannel("b")
    first.fail_next(outage("a"))
    second.fail_next(outage("b"))

    with pytest.raises(ServiceUnavailable) as caught:
        await Notifier([first, second]).send(EMAIL)

    assert caught.value.service == "b"
    assert caught.value.__notes__ == ["channels tried before: a: ServiceUnavailable"]


async def test_a_notification_a_channel_cannot_carry_stops_the_send() -> None:
    twilio = TwilioSms(_unused_service(), account_sid="AC1", from_number="+15005550006", name="sms")
    backup = InMemoryChannel("email")

    with pytest.raises(ValueError, match=r"E\.164"):
        await Notifier([twilio, backup]).send(EMAIL)

    assert backup.sent == []


async def test_unknown_channel_names_are_refused() -> None:
    notifier = Notifier([InMemoryChannel("email")])

    with pytest.raises(ValueError, match="no channel named"):
        await notifier.send(EMAIL, via="fax")
    with pytest.raises(ValueError, match="at least one"):
        await notifier.send(EMAIL, via=[])


def test_a_notifier_needs_distinct_channels() -> None:
    with pytest.raises(ValueError, match="two channels"):
        Notifier([InMemoryChannel("email"), InMemoryChannel("email")])
    with pytest.raises(ValueError, match="at least one"):
        Notifier([])


async def test_a_broadcast_reaches_every_channel_that_works() -> None:
    email, sms, chat = InMemoryChannel("email"), InMemoryChannel("sms"), InMemoryChannel("chat")
    sms.fail_next(outage("sms"))
    notifier = Notifier([email, sms, chat])

    outcome = await notifier.broadcast(EMAIL)

    assert sorted(outcome.results) == ["chat", "email"]
    assert isinstance(outcome.errors["sms"], ServiceUnavailable)
    assert not outcome.complete


@pytest.mark.parametrize(
    "fields",
    [
        {"to": "ada@example.com\r\nBcc: eve@example.com", "body": "x"},
        {"subject": "hi\nthere", "body": "x"},
        {"body": ""},
        {"body": "x", "cc": "someone"},
    ],
)
def test_notifications_refuse_header_injection_and_empty_bodies(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Notification(**fields)


def test_a_notification_repr_leaves_out_the_body() -> None:
    assert "on its way" not in repr(EMAIL)


# --- HTTP channels -------------------------------------------------------------------------


def _unused_service() -> ExternalService:
    # Never called: the channel refuses the notification before any request.
    return ExternalService("unused", "http://127.0.0.1:9")


def sendgrid(
    fake: FakeNotifications, clock: FakeClock, key: str = "SG.fake-sendgrid-key"
) -> SendGridEmail:
    return SendGridEmail.build(
        api_key=key, sender="shop@example.com", base_url=fake.url, clock=clock
    )


def twilio(
    fake: FakeNotifications,
    clock: FakeClock,
    token: str = "fake-twilio-token",  # noqa: S107 - the fake's own credential
) -> TwilioSms:
    return TwilioSms.build(
        account_sid=fake.twilio_account_sid,
        auth_token=token,
        from_number="+15005550006",
        base_url=fake.url,
        clock=clock,
    )


async def test_sendgrid_sends_an_email(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    notification = EMAIL.model_copy(update={"html": "<p>It is on its way.</p>"})

    async with sendgrid(notifications_fake, clock) as channel:
        delivery = await channel.send(notification)

    [email] = notifications_fake.emails
    assert delivery.channel == "email"
    assert delivery.provider_id == email.message_id
    assert email.to == ("ada@example.com",)
    assert email.sender == "shop@example.com"
    assert email.subject == "Your refund"
    assert email.text == "It is on its way."
    assert email.html == "<p>It is on its way.</p>"


async def test_sendgrid_refusals_carry_the_provider_message(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    async with sendgrid(notifications_fake, clock, key="SG.wrong") as channel:
        with pytest.raises(ServiceClientError) as caught:
            await channel.send(EMAIL)

    assert caught.value.status == 401
    assert caught.value.provider_message is not None
    assert "SG.wrong" not in str(caught.value) + repr(channel)


async def test_an_email_channel_needs_an_address_and_a_subject(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    async with sendgrid(notifications_fake, clock) as channel:
        with pytest.raises(ValueError, match="not an address"):
            await channel.send(SMS)
        with pytest.raises(ValueError, match="subject"):
            await channel.send(EMAIL.model_copy(update={"subject": None}))

    assert notifications_fake.requests == []


async def test_a_send_is_not_retried_so_nothing_is_sent_twice(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    notifications_fake.chaos.fail_next(1, status=503)

    async with sendgrid(notifications_fake, clock) as channel:
        with pytest.raises(ServiceUnavailable):
            await channel.send(EMAIL)

    assert len(notifications_fake.requests) == 1


async def test_twilio_sends_a_text_message(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    async with twilio(notifications_fake, clock) as channel:
        delivery = await channel.send(SMS.model_copy(update={"subject": "ignored"}))

    [sms] = notifications_fake.sms
    assert delivery.provider_id == sms.sid
    assert (sms.to, sms.sender, sms.body) == ("+14155550100", "+15005550006", SMS.body)


async def test_twilio_refusals_carry_its_error_code(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    async with twilio(notifications_fake, clock, token="wrong-token") as channel:
        with pytest.raises(ServiceClientError) as caught:
            await channel.send(SMS)

    assert caught.value.status == 401
    assert caught.value.code == "20003"
    assert "wrong-token" not in str(caught.value) + repr(channel)


async def test_slack_posts_the_subject_in_bold_and_escapes_user_text(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    url = SecretStr(notifications_fake.url + notifications_fake.slack_webhook_path)
    notification = Notification(subject="Deploy <done>", body="ping <!channel> & co")

    async with SlackWebhook.build(url, clock=clock) as channel:
        delivery = await channel.send(notification)

    [message] = notifications_fake.slack
    assert message.text == "*Deploy &lt;done&gt;*\nping &lt;!channel&gt; &amp; co"
    assert delivery.channel == "slack"
    assert delivery.provider_id is None
    assert "XXXX" not in repr(channel)


async def test_a_removed_slack_webhook_is_a_client_error_that_hides_its_token(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    url = notifications_fake.url + "/services/T000/B000/REMOVEDTOKEN"

    async with SlackWebhook.build(url, clock=clock) as channel:
        with capture_logs() as logs, pytest.raises(ServiceClientError) as caught:
            await channel.send(Notification(body="hello"))

    assert caught.value.status == 404
    assert caught.value.provider_message == "no_service"
    assert caught.value.path == "/services/{team}/{bot}/{token}"
    assert "REMOVEDTOKEN" not in str(caught.value) + repr(logs)


def test_a_slack_channel_refuses_a_path_that_is_not_a_webhook() -> None:
    with pytest.raises(ValueError, match="webhook path"):
        SlackWebhook(_unused_service(), "/hooks/abc")
    with pytest.raises(ValueError, match="http"):
        SlackWebhook.build("hooks.slack.com/services/T/B/X")


async def test_email_fails_over_to_slack_through_the_notifier(
    notifications_fake: FakeNotifications, clock: FakeClock
) -> None:
    notifications_fake.chaos.fail_next(1, status=503, path_prefix="/v3/mail")
    url = notifications_fake.url + notifications_fake.slack_webhook_path

    async with (
        sendgrid(notifications_fake, clock) as email,
        SlackWebhook.build(url, clock=clock) as slack,
    ):
        delivery = await Notifier([email, slack]).send(EMAIL)

    assert delivery.channel == "slack"
    assert notifications_fake.emails == []
    assert [m.text for m in notifications_fake.slack] == ["*Your refund*\nIt is on its way."]
