"""E-mail over SMTP (aiosmtplib), with SMTP's failures mapped into seawall's error tree.

SMTP answers with reply codes rather than HTTP statuses, and aiosmtplib with
its own exceptions; `smtp_error` turns them into the same
`seawall.errors.ExternalServiceError` leaves as an HTTP provider's:

    ==========================================  ======================================
    SMTP                                        seawall
    ==========================================  ======================================
    connection refused or lost                  ServiceUnavailable (transient)
    connect or read timeout                     ServiceTimeout (transient)
    4xx reply (greylisting, mailbox busy)       ServiceUnavailable (transient)
    5xx reply (recipient, sender or message     ServiceClientError (permanent)
    refused, authentication failed)
    anything else aiosmtplib reports            ExternalServiceError
    ==========================================  ======================================

The reply code is the error's ``status`` (550, 535, 421) and its ``path`` is the
SMTP step (``CONNECT``, ``AUTH``, ``MAIL``, ``RCPT``, ``DATA``); ``method`` is ``SMTP``.
"""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final

import aiosmtplib
from pydantic import SecretStr

from seawall.errors import (
    ExternalServiceError,
    ServiceClientError,
    ServiceTimeout,
    ServiceUnavailable,
)
from seawall.integrations._notifications import (
    Delivery,
    Notification,
    delivered,
    need_email_address,
    need_subject,
)
from seawall.resilience import SYSTEM_CLOCK, Clock

__all__ = ["SmtpEmail", "smtp_error"]

_MESSAGE_LIMIT: Final = 300


def _step(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return "CONNECT"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "AUTH"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "EHLO"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "MAIL"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPRecipientsRefused):
        return "RCPT"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "DATA"
    return "SEND"


def _reply(code: int, message: str, call: dict[str, Any]) -> ExternalServiceError:
    text = " ".join(message.split())[:_MESSAGE_LIMIT] or None
    if 400 <= code < 500:
        return ServiceUnavailable(
            f"the server deferred the mail with {code}{f': {text}' if text else ''}; retry later",
            status=code,
            **call,
        )
    if 500 <= code < 600:
        return ServiceClientError(status=code, provider_message=text, code=str(code), **call)
    return ExternalServiceError(f"unexpected SMTP reply {code}", status=code, **call)


def smtp_error(
    exc: BaseException, *, service: str, timeout: float | None = None
) -> ExternalServiceError:
    """The seawall error for an aiosmtplib (or socket) failure (pure).

    Args:
        exc: what aiosmtplib raised.
        service: the channel's name, for the error.
        timeout: the timeout in force, for a `ServiceTimeout`.

    Returns:
        The error to raise (see the module's table).
    """
    call: dict[str, Any] = {"service": service, "method": "SMTP", "path": _step(exc)}
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        phase = "connect" if isinstance(exc, aiosmtplib.SMTPConnectError) else "read"
        return ServiceTimeout(phase=phase, seconds=timeout, **call)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if exc.recipients:
            first = exc.recipients[0]
            return _reply(first.code, first.message, call)
        return ServiceClientError(status=550, provider_message="recipients refused", **call)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc.code, exc.message, call)
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
        return ServiceUnavailable(
            f"connection failed or lost ({type(exc).__name__}); retry later", **call
        )
    if isinstance(exc, aiosmtplib.SMTPException):
        text = " ".join(exc.message.split())[:_MESSAGE_LIMIT]
        return ExternalServiceError(f"the SMTP exchange failed: {text}", **call)
    return ExternalServiceError(f"the SMTP exchange failed ({type(exc).__name__})", **call)


class SmtpEmail:
    """E-mail through an SMTP server (a `NotificationChannel`).

    TLS is required by default: STARTTLS on the submission port (587), or
    implicit TLS with ``use_tls=True`` (port 465). Plain text must be asked
    for (``start_tls=False``), for a local relay or a test server. Each send
    opens a connection, sends one message and closes it. Sends are not
    retried: an SMTP server may have taken a message whose answer was lost.

    Args:
        host: the server's host name.
        port: the server's port.
        sender: the ``From`` address (a notification's ``sender`` overrides it).
        username: the user to authenticate as, if the server needs it.
        password: that user's password (kept as a `SecretStr`, never shown).
        use_tls: connect with TLS from the start (port 465).
        start_tls: upgrade with STARTTLS; by default, whenever ``use_tls`` is off.
        timeout: seconds for connecting and for each reply.
        local_hostname: the name given in EHLO (the host's FQDN by default).
        name: the channel's name.
        clock: where ``accepted_at`` comes from.
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        username: str | None = None,
        password: str | SecretStr | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        timeout: float | timedelta = 10.0,
        local_hostname: str | None = None,
        name: str = "smtp",
        clock: Clock | None = None,
    ) -> None:
        if not host or not name:
            raise ValueError("host and name must not be empty")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if use_tls and start_tls:
            raise ValueError("use_tls and start_tls exclude each other")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        if not seconds > 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = (
            None
            if password is None
            else password
            if isinstance(password, SecretStr)
            else SecretStr(password)
        )
        self.use_tls = use_tls
        self.start_tls = (not use_tls) if start_tls is None else start_tls
        self.timeout = seconds
        self.local_hostname = local_hostname
        self._name = name
        self._clock = clock or SYSTEM_CLOCK

    def __repr__(self) -> str:
        who = f", username={self.username!r}, password=**********" if self.username else ""
        return f"SmtpEmail({self._name!r}, {self.host!r}, {self.port}{who})"

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name

    def message(self, notification: Notification) -> EmailMessage:
        """The e-mail `send` would send for *notification* (pure but for the Message-ID).

        Raises:
            ValueError: no e-mail address in ``to``, or no subject.
        """
        to = need_email_address(notification, self._name)
        sender = notification.sender or self.sender
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = need_subject(notification, self._name)
        message["Date"] = formatdate(self._clock.wall(), usegmt=True)
        # Given a domain, make_msgid does not look up this host's name (a blocking call).
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
        message.set_content(notification.body)
        if notification.html:
            message.add_alternative(notification.html, subtype="html")
        return message

    async def send(self, notification: Notification) -> Delivery:
        """Send an e-mail; the receipt's ``provider_id`` is its ``Message-ID``.

        Raises:
            ValueError: no e-mail address in ``to``, or no subject.
            seawall.errors.ExternalServiceError: the server did not take it
                (see `smtp_error`).
        """
        message = self.message(notification)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=None if self._password is None else self._password.get_secret_value(),
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                timeout=self.timeout,
                local_hostname=self.local_hostname,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # aiosmtplib's messages are the server's replies; they never hold the password.
            raise smtp_error(exc, service=self._name, timeout=self.timeout) from exc
        return delivered(self._name, str(message["Message-ID"]), self._clock)
