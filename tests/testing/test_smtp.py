"""`FakeSMTPServer`: an SMTP sink driven by the stdlib `smtplib` and by `aiosmtplib`."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import pytest

from seawall.testing import FakeSMTPServer


@pytest.fixture
def sink() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer() as server:
        yield server


@pytest.fixture
def secured() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer(username="mailer", password="s3cret") as server:
        yield server


def message(body: str = "Hello\n.hidden dot line\n") -> EmailMessage:
    email = EmailMessage()
    email["From"] = "alerts@seawall.test"
    email["To"] = "ada@example.com, bob@example.com"
    email["Subject"] = "Case 42 escalated"
    email.set_content(body)
    return email


def test_a_message_sent_with_smtplib_is_recorded_with_its_envelope(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        refused = smtp.send_message(message())

    (received,) = sink.messages
    assert refused == {}
    assert received.sender == "alerts@seawall.test"
    assert received.recipients == ("ada@example.com", "bob@example.com")
    assert received.subject == "Case 42 escalated"
    assert received.message.get_content() == "Hello\n.hidden dot line\n"
    assert b"\r\n.hidden dot line\r\n" in received.raw
    assert received.username is None


def test_leading_dots_stuffed_by_the_client_are_unstuffed(sink: FakeSMTPServer) -> None:
    original = b"Subject: dots\r\n\r\n.\r\n..two\r\n"

    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.sendmail("a@x.test", ["b@x.test"], original)  # sent as "..", "...two"

    assert sink.messages[0].raw == original


def test_the_server_unstuffs_dots_on_the_wire(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.ehlo()
        smtp.mail("a@x.test")
        smtp.rcpt("b@x.test")
        smtp.putcmd("DATA")
        smtp.getreply()
        smtp.send(b"Subject: raw\r\n\r\n..one\r\n.\r\n")
        code, _ = smtp.getreply()

    assert code == 250
    assert sink.messages[0].raw == b"Subject: raw\r\n\r\n.one\r\n"


def test_several_messages_on_one_connection_and_rset(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.sendmail("a@x.test", ["one@x.test"], b"Subject: 1\r\n\r\nfirst\r\n")
        smtp.ehlo()
        smtp.mail("abandoned@x.test")
        smtp.rset()
        smtp.sendmail("c@x.test", ["two@x.test"], b"Subject: 2\r\n\r\nsecond\r\n")
        noop = smtp.noop()

    assert [m.recipients for m in sink.messages] == [("one@x.test",), ("two@x.test",)]
    assert noop[0] == 250


def test_helo_clients_are_served(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.helo("old-client")
        smtp.sendmail("a@x.test", ["b@x.test"], b"Subject: helo\r\n\r\nhi\r\n")

    assert len(sink.messages) == 1


def test_auth_is_offered_and_required_when_credentials_are_set(secured: FakeSMTPServer) -> None:
    with smtplib.SMTP(secured.host, secured.port, timeout=5) as smtp:
        smtp.ehlo()
        offered = smtp.has_extn("auth")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail("a@x.test", ["b@x.test"], b"Subject: x\r\n\r\nx\r\n")

    assert offered
    assert refused.value.smtp_code == 530
    assert secured.messages == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_plain_and_login_accept_the_configured_credentials(
    secured: FakeSMTPServer, mechanism: str
) -> None:
    with smtplib.SMTP(secured.host, secured.port, timeout=5) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = "mailer", "s3cret"
        authenticator = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
        code, _ = smtp.auth(mechanism, authenticator)
        smtp.send_message(message())

    assert code == 235
    assert secured.messages[0].username == "mailer"


@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_works_with_and_without_an_initial_response(
    secured: FakeSMTPServer, initial_response: bool
) -> None:
    with smtplib.SMTP(secured.host, secured.port, timeout=5) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = "mailer", "s3cret"
        code, _ = smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=initial_response)

    assert code == 235


def test_wrong_credentials_are_refused_with_535(secured: FakeSMTPServer) -> None:
    with (
        smtplib.SMTP(secured.host, secured.port, timeout=5) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError) as refused,
    ):
        smtp.login("mailer", "wrong")

    assert refused.value.smtp_code == 535
    assert secured.auth_failures >= 1


def test_commands_out_of_order_are_refused(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        before_helo = smtp.docmd("MAIL", "FROM:<a@x.test>")
        smtp.ehlo()
        rcpt_first = smtp.rcpt("b@x.test")
        data_first = smtp.docmd("DATA")
        unknown = smtp.docmd("EXPN", "list")
        tls = smtp.docmd("STARTTLS")

    assert [before_helo[0], rcpt_first[0], data_first[0], unknown[0], tls[0]] == [
        503,
        503,
        503,
        500,
        502,
    ]


def test_a_message_over_the_size_limit_is_refused_at_mail_or_after_data() -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 200
    with (
        FakeSMTPServer(max_message_bytes=100) as small,
        smtplib.SMTP(small.host, small.port, timeout=5) as smtp,
    ):
        with pytest.raises(smtplib.SMTPSenderRefused) as announced:
            smtp.sendmail("a@x.test", ["b@x.test"], big)  # smtplib announces SIZE=
        smtp.mail("a@x.test")
        smtp.rcpt("b@x.test")
        unannounced = smtp.data(big)

    assert (announced.value.smtp_code, unannounced[0]) == (552, 552)
    assert small.messages == []


def test_stats_show_the_connection_closed_after_quit(sink: FakeSMTPServer) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.noop()

    assert sink.wait_for_connections(0) == 0


def test_credentials_come_in_pairs_and_the_password_is_not_in_the_repr() -> None:
    with pytest.raises(ValueError, match="both"):
        FakeSMTPServer(username="only-user")

    server = FakeSMTPServer(username="u", password="hidden-pass")

    assert "hidden-pass" not in repr(server) + repr(vars(server))


async def test_aiosmtplib_sends_through_a_sink_started_with_async_with() -> None:
    async with FakeSMTPServer(username="mailer", password="s3cret") as server:
        await aiosmtplib.send(
            message(),
            hostname=server.host,
            port=server.port,
            username="mailer",
            password="s3cret",
            start_tls=False,
            use_tls=False,
            timeout=5,
        )

    assert [m.subject for m in server.messages] == ["Case 42 escalated"]
    assert server.url == f"smtp://127.0.0.1:{server.port}"
