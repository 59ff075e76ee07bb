"""`FakeSMTPServer`: an SMTP sink on loopback that records every message it accepts.

Enough of RFC 5321 for real clients (``smtplib``, ``aiosmtplib``): EHLO/HELO,
AUTH PLAIN and LOGIN (when credentials are configured), MAIL FROM, RCPT TO,
DATA with dot-unstuffing, RSET, NOOP, VRFY and QUIT. Plain text only: there is
no STARTTLS, so clients must connect without TLS (``smtplib.SMTP`` without
``starttls()``; ``aiosmtplib`` with ``start_tls=False``). Nothing is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from pydantic import SecretStr

from seawall.testing._runner import ThreadedServer

__all__ = ["FakeSMTPServer", "SMTPMessage"]


@dataclass(frozen=True, slots=True)
class SMTPMessage:
    """A message accepted by `FakeSMTPServer`.

    Attributes:
        sender: the envelope sender (``MAIL FROM``; empty for a bounce).
        recipients: the envelope recipients (``RCPT TO``), in order.
        raw: the message bytes as received, after dot-unstuffing.
        message: *raw* parsed with the modern `email` policy (line endings as ``\n``).
        username: who authenticated, or None.
    """

    sender: str
    recipients: tuple[str, ...]
    raw: bytes = field(repr=False)
    message: EmailMessage = field(repr=False)
    username: str | None = None

    @property
    def subject(self) -> str | None:
        """The ``Subject`` header, if any."""
        value = self.message["Subject"]
        return None if value is None else str(value)


def _address(argument: str, keyword: str) -> tuple[str, str] | None:
    """The address and the parameters after ``FROM:`` or ``TO:``, or None (pure)."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword) :].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        return rest[1:end], rest[end + 1 :].strip()
    address, _, parameters = rest.partition(" ")
    return (address, parameters) if address else None


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


class _Connection:
    """One client connection: its streams and what it has said so far."""

    __slots__ = ("greeted", "reader", "recipients", "sender", "username", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeted = False
        self.username: str | None = None
        self.sender: str | None = None
        self.recipients: list[str] = []

    def reset(self) -> None:
        """Forget the mail transaction under way (RSET, EHLO, after DATA)."""
        self.sender = None
        self.recipients = []

    async def reply(self, *lines: str) -> None:
        """Send a reply; several lines make a multi-line reply (``250-...``, then ``250 ...``)."""
        *first, last = lines
        payload = "".join(f"{line[:3]}-{line[4:]}\r\n" for line in first) + f"{last}\r\n"
        self.writer.write(payload.encode())
        await self.writer.drain()

    async def read_line(self) -> str | None:
        """The next line without its line ending, or None when the client went away."""
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")


class FakeSMTPServer(ThreadedServer):
    """A loopback SMTP sink that keeps every accepted message in `messages` (provider ``smtp``).

    Starts and stops like the fake HTTP servers (``with``, ``async with``,
    `start`/`stop`, ``python -m seawall.testing smtp``). With *username* and
    *password*, AUTH PLAIN and LOGIN are offered and required before MAIL.
    There is no STARTTLS: clients connect in plain text.

    Args:
        username: the user clients must authenticate as (None: no AUTH).
        password: that user's password.
        hostname: the name the server greets with.
        max_message_bytes: larger messages are refused with 552 (advertised as SIZE).
        host: the address to bind.
        port: the port to bind; 0 picks a free one.

    Raises:
        ValueError: only one of *username* and *password* is given.
    """

    provider_name = "smtp"
    scheme = "smtp"

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | SecretStr | None = None,
        hostname: str = "fake-smtp.seawall.test",
        max_message_bytes: int = 10 * 1024 * 1024,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username = username
        self._password = (
            None
            if password is None
            else password
            if isinstance(password, SecretStr)
            else SecretStr(password)
        )
        self.hostname = hostname
        self.max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._messages: list[SMTPMessage] = []
        self._auth_failures = 0

    @property
    def messages(self) -> list[SMTPMessage]:
        """Messages accepted, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def auth_failures(self) -> int:
        """Failed AUTH attempts."""
        return self._auth_failures

    def clear(self) -> None:
        """Forget the accepted messages."""
        with self._lock:
            self._messages.clear()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = _Connection(reader, writer)
        await connection.reply(f"220 {self.hostname} ESMTP seawall fake ready")
        while True:
            line = await connection.read_line()
            if line is None:
                return
            verb, _, argument = line.partition(" ")
            verb, argument = verb.upper(), argument.strip()
            if verb == "QUIT":
                await connection.reply("221 2.0.0 bye")
                return
            if verb == "AUTH":
                await self._auth(connection, argument)
            elif verb == "DATA":
                if not await self._data(connection):
                    return
            else:
                await connection.reply(*self._command(connection, verb, argument))

    def _command(self, connection: _Connection, verb: str, argument: str) -> list[str]:
        """The reply lines to a command that takes no further input."""
        if verb == "EHLO":
            connection.greeted = True
            connection.reset()
            lines = [f"250 {self.hostname} greets {argument or 'you'}"]
            lines += [f"250 SIZE {self.max_message_bytes}", "250 8BITMIME", "250 SMTPUTF8"]
            if self.username is not None:
                lines.append("250 AUTH PLAIN LOGIN")
            return [*lines, "250 HELP"]
        if verb == "HELO":
            connection.greeted = True
            connection.reset()
            return [f"250 {self.hostname}"]
        if verb == "MAIL":
            return [self._mail(connection, argument)]
        if verb == "RCPT":
            return [self._rcpt(connection, argument)]
        if verb in ("RSET", "NOOP"):
            if verb == "RSET":
                connection.reset()
            return ["250 2.0.0 OK"]
        if verb == "VRFY":
            return ["252 2.1.5 cannot verify, but will accept"]
        if verb == "HELP":
            return ["214 2.0.0 EHLO HELO AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT"]
        if verb == "STARTTLS":
            return ["502 5.5.1 STARTTLS is not supported by this fake"]
        return ["500 5.5.2 command not recognized"]

    async def _data(self, connection: _Connection) -> bool:
        """Take a message after DATA; False when the client went away mid-message."""
        if not connection.recipients:
            await connection.reply("503 5.5.1 RCPT TO first")
            return True
        await connection.reply("354 end data with <CR><LF>.<CR><LF>")
        data = await self._read_data(connection.reader)
        if data is None:
            return False
        await connection.reply(self._accept_message(connection, data))
        return True

    async def _auth(self, connection: _Connection, argument: str) -> None:
        if self.username is None or self._password is None:
            await connection.reply("502 5.5.1 AUTH is not enabled")
            return
        if not connection.greeted:
            await connection.reply("503 5.5.1 EHLO first")
            return
        if connection.username is not None:
            await connection.reply("503 5.5.1 already authenticated")
            return
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if not initial:
                await connection.reply("334 ")
                initial = await connection.read_line() or ""
            decoded = _b64(initial)
            parts = decoded.split("\0") if decoded is not None else []
            user, password = (parts[1], parts[2]) if len(parts) == 3 else (None, None)
        elif mechanism == "LOGIN":
            if not initial:
                await connection.reply("334 VXNlcm5hbWU6")  # "Username:"
                initial = await connection.read_line() or ""
            user = _b64(initial)
            await connection.reply("334 UGFzc3dvcmQ6")  # "Password:"
            password = _b64(await connection.read_line() or "")
        else:
            await connection.reply("504 5.5.4 unrecognized authentication mechanism")
            return
        if user is None or password is None:
            await connection.reply("501 5.5.2 cannot decode the credentials")
            return
        if hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
            password.encode(), self._password.get_secret_value().encode()
        ):
            connection.username = user
            await connection.reply("235 2.7.0 authentication successful")
        else:
            self._auth_failures += 1
            await connection.reply("535 5.7.8 authentication credentials invalid")

    def _mail(self, connection: _Connection, argument: str) -> str:
        if not connection.greeted:
            return "503 5.5.1 EHLO first"
        if self.username is not None and connection.username is None:
            return "530 5.7.0 authentication required"
        if connection.sender is not None:
            return "503 5.5.1 nested MAIL command"
        parsed = _address(argument, "FROM:")
        if parsed is None:
            return "501 5.5.4 syntax: MAIL FROM:<address>"
        sender, parameters = parsed
        for parameter in parameters.split():
            name, _, value = parameter.partition("=")
            if name.upper() == "SIZE" and value.isdigit() and int(value) > self.max_message_bytes:
                return "552 5.3.4 message size exceeds the fixed limit"
        connection.sender = sender
        return "250 2.1.0 OK"

    def _rcpt(self, connection: _Connection, argument: str) -> str:
        if connection.sender is None:
            return "503 5.5.1 MAIL FROM first"
        parsed = _address(argument, "TO:")
        if parsed is None or not parsed[0]:
            return "501 5.5.4 syntax: RCPT TO:<address>"
        connection.recipients.append(parsed[0])
        return "250 2.1.5 OK"

    async def _read_data(self, reader: asyncio.StreamReader) -> bytearray | None:
        """The message up to the lone dot, dot-unstuffed; None if the client went away."""
        data = bytearray()
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return None
            if line in (b".\r\n", b".\n"):
                return data
            if line.startswith(b"."):
                line = line[1:]
            # Past the limit, keep reading to the end but stop storing.
            if len(data) <= self.max_message_bytes:
                data += line

    def _accept_message(self, connection: _Connection, data: bytearray) -> str:
        sender, recipients = connection.sender or "", tuple(connection.recipients)
        connection.reset()
        if len(data) > self.max_message_bytes:
            return "552 5.3.4 message size exceeds the fixed limit"
        raw = bytes(data)
        # Parsed with Python's own line endings, so get_content() gives '\n' like a str would.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        if not isinstance(parsed, EmailMessage):  # pragma: no cover - the default policy makes one
            raise TypeError("the email parser did not make an EmailMessage")
        message = SMTPMessage(sender, recipients, raw, parsed, connection.username)
        with self._lock:
            self._messages.append(message)
        return f"250 2.0.0 OK queued as {secrets.token_hex(6)}"
