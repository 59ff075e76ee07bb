"""`SmtpEmail` against `FakeSMTPServer` (a real SMTP exchange on loopback), and `smtp_error`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest

from seawall.errors import (
    ExternalServiceError,
    ServiceClientError,
    ServiceTimeout,
    ServiceUnavailable,
)
from seawall.integrations import InMemoryChannel, Notification, Notifier, SmtpEmail, smtp_error
from seawall.testing import FakeClock, FakeSMTPServer

EMAIL = Notification(to="ada@example.com", subject="Your refund", body="It is on its way.")


def smtp(port: int, **options: Any) -> SmtpEmail:
    options.setdefault("start_tls", False)  # the fake speaks plain text only
    return SmtpEmail(
        "127.0.0.1",
        port,
        sender="shop@example.com",
        local_hostname="seawall.test",
        clock=FakeClock(),
        **options,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never says a word (no SMTP greeting)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_an_email_is_sent_over_smtp(smtp_fake: FakeSMTPServer) -> None:
    channel = smtp(smtp_fake.port)
    notification = EMAIL.model_copy(update={"html": "<p>It is on its way.</p>"})

    delivery = await channel.send(notification)

    [message] = smtp_fake.messages
    assert message.sender == "shop@example.com"
    assert message.recipients == ("ada@example.com",)
    assert message.subject == "Your refund"
    assert message.message["Message-ID"] == delivery.provider_id
    assert delivery.channel == "smtp"
    plain = message.message.get_body(preferencelist=("plain",))
    html = message.message.get_body(preferencelist=("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().strip() == "It is on its way."
    assert "<p>" in html.get_content()


async def test_an_email_is_sent_after_logging_in() -> None:
    async with FakeSMTPServer(username="mailer", password="s3cret-pass") as fake:
        channel = smtp(fake.port, username="mailer", password="s3cret-pass")

        await channel.send(EMAIL)

    assert [m.username for m in fake.messages] == ["mailer"]


async def test_a_wrong_password_is_a_client_error_that_never_shows_it() -> None:
    async with FakeSMTPServer(username="mailer", password="s3cret-pass") as fake:
        channel = smtp(fake.port, username="mailer", password="wrong-pass")

        with pytest.raises(ServiceClientError) as caught:
            await channel.send(EMAIL)

    error = caught.value
    assert error.status == 535
    assert error.path == "AUTH"
    assert error.method == "SMTP"
    assert "wrong-pass" not in str(error) + repr(error) + repr(channel)
    assert fake.messages == []


async def test_sending_without_logging_in_where_it_is_required_is_refused() -> None:
    async with FakeSMTPServer(username="mailer", password="s3cret-pass") as fake:
        with pytest.raises(ServiceClientError) as caught:
            await smtp(fake.port).send(EMAIL)

    assert caught.value.status == 530


async def test_a_message_over_the_size_limit_is_refused() -> None:
    async with FakeSMTPServer(max_message_bytes=200) as fake:
        with pytest.raises(ServiceClientError) as caught:
            await smtp(fake.port).send(EMAIL.model_copy(update={"body": "x" * 1000}))

    assert caught.value.status == 552


async def test_a_refused_connection_is_service_unavailable() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        await smtp(free_port()).send(EMAIL)

    assert caught.value.path == "CONNECT"
    assert caught.value.transient


async def test_a_server_that_never_greets_is_a_timeout(silent_server: int) -> None:
    with pytest.raises(ServiceTimeout) as caught:
        await smtp(silent_server, timeout=0.2).send(EMAIL)

    assert caught.value.phase == "connect"
    assert caught.value.transient


async def test_an_unreachable_smtp_server_fails_over(smtp_fake: FakeSMTPServer) -> None:
    backup = InMemoryChannel("backup")
    notifier = Notifier([smtp(free_port()), backup])

    delivery = await notifier.send(EMAIL)

    assert delivery.channel == "backup"


def test_the_password_stays_out_of_the_repr() -> None:
    channel = SmtpEmail("mail.example.com", sender="a@b.c", username="u", password="hunter22")

    assert "hunter22" not in repr(channel)
    assert channel.start_tls


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"use_tls": True, "start_tls": True}, "exclude each other"),
        ({"username": "u"}, "both username and password"),
        ({"timeout": 0}, "timeout"),
        ({"host": ""}, "host"),
    ],
)
def test_contradictory_settings_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmtpEmail(**{"host": "mail.example.com", "sender": "a@b.c", **options})


# --- the mapping (pure) -------------------------------------------------------------------


def test_a_refused_recipient_is_a_client_error() -> None:
    refused = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "eve@example.com")

    error = smtp_error(aiosmtplib.SMTPRecipientsRefused([refused]), service="smtp")

    assert isinstance(error, ServiceClientError)
    assert error.status == 550
    assert error.path == "RCPT"
    assert error.provider_message == "5.1.1 no such user"
    assert not error.transient


def test_a_deferred_recipient_is_transient() -> None:
    deferred = aiosmtplib.SMTPRecipientRefused(450, "4.2.1 try later", "eve@example.com")

    error = smtp_error(aiosmtplib.SMTPRecipientsRefused([deferred]), service="smtp")

    assert isinstance(error, ServiceUnavailable)
    assert error.status == 450
    assert error.transient


@pytest.mark.parametrize(
    ("exc", "kind", "path"),
    [
        (aiosmtplib.SMTPServerDisconnected("lost"), ServiceUnavailable, "SEND"),
        (aiosmtplib.SMTPConnectError("refused"), ServiceUnavailable, "CONNECT"),
        (aiosmtplib.SMTPReadTimeoutError("slow"), ServiceTimeout, "SEND"),
        (aiosmtplib.SMTPSenderRefused(553, "not yours", "a@b.c"), ServiceClientError, "MAIL"),
        (aiosmtplib.SMTPDataError(554, "spam"), ServiceClientError, "DATA"),
        (aiosmtplib.SMTPResponseException(421, "closing"), ServiceUnavailable, "SEND"),
        (ConnectionResetError(), ServiceUnavailable, "SEND"),
    ],
)
def test_smtp_failures_map_into_the_error_tree(
    exc: BaseException, kind: type[ExternalServiceError], path: str
) -> None:
    error = smtp_error(exc, service="smtp", timeout=5.0)

    assert type(error) is kind
    assert error.path == path
    assert error.service == "smtp"


def test_other_smtp_failures_are_external_service_errors() -> None:
    error = smtp_error(aiosmtplib.SMTPNotSupported("no STARTTLS"), service="smtp")

    assert type(error) is ExternalServiceError
    assert "no STARTTLS" in str(error)
