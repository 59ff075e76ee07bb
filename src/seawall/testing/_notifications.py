"""`FakeNotifications`: SendGrid-, Twilio- and Slack-style sending APIs on one fake server.

Each API checks its own kind of credentials, answers with its provider's
status codes and error shapes, and records what it accepted, so a test
asserts on what was sent (`FakeNotifications.emails`, ``sms``, ``slack``).
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final, Unpack

from pydantic import SecretStr

from seawall.testing._http import FakeRequest, FakeResponse
from seawall.testing._server import FakeServer, FakeServerOptions

__all__ = ["FakeNotifications", "SentEmail", "SentSMS", "SlackMessage"]

_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_SMS_MAX_CHARS: Final = 1600


@dataclass(frozen=True, slots=True)
class SentEmail:
    """An email accepted by the SendGrid-style API.

    Attributes:
        message_id: the ``X-Message-Id`` answered.
        sender: the ``from`` address.
        to: every ``to`` address of every personalization, in order.
        subject: the subject (the top-level one, else the first personalization's).
        text: the ``text/plain`` content, if any.
        html: the ``text/html`` content, if any.
        payload: the whole JSON body.
    """

    message_id: str
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SentSMS:
    """A text message accepted by the Twilio-style API."""

    sid: str
    account_sid: str
    to: str
    sender: str
    body: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A message accepted by the Slack-style incoming webhook."""

    path: str
    text: str | None
    blocks: list[Any] | None
    payload: dict[str, Any] = field(repr=False)


def _sendgrid_errors(*errors: tuple[str | None, str], status: int = 400) -> FakeResponse:
    document = {
        "errors": [{"message": message, "field": name, "help": None} for name, message in errors]
    }
    return FakeResponse.json(document, status)


def _is_address(value: object) -> bool:
    return isinstance(value, str) and "@" in value and " " not in value.strip()


def _check_mail(body: object) -> list[tuple[str | None, str]]:
    """What is wrong with a SendGrid mail-send body, as ``(field, message)`` pairs (pure)."""
    if not isinstance(body, dict):
        return [(None, "The request body must be a JSON object.")]
    problems: list[tuple[str | None, str]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            (
                "personalizations",
                "The personalizations field is required and must have at least one"
                " personalization.",
            )
        )
        personalizations = []
    for index, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            problems.append(
                (
                    f"personalizations.{index}.to",
                    "The to array is required for all personalizations.",
                )
            )
            continue
        for position, recipient in enumerate(recipients):
            if not (isinstance(recipient, dict) and _is_address(recipient.get("email"))):
                problems.append(
                    (
                        f"personalizations.{index}.to.{position}.email",
                        "Does not contain a valid address.",
                    )
                )
    sender = body.get("from")
    if not (isinstance(sender, dict) and _is_address(sender.get("email"))):
        problems.append(
            ("from.email", "The from object must be provided with a valid email address.")
        )
    every_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"]
        for p in personalizations
    )
    subject = body.get("subject")
    if not (isinstance(subject, str) and subject) and not every_has_subject:
        problems.append(("subject", "The subject is required."))
    content = body.get("content")
    if not (
        isinstance(content, list)
        and content
        and all(
            isinstance(block, dict)
            and isinstance(block.get("type"), str)
            and isinstance(block.get("value"), str)
            and block["value"]
            for block in content
        )
    ):
        problems.append(
            ("content", "There must be at least one content block with a type and a value.")
        )
    return problems


def _twilio_error(status: int, code: int, message: str) -> FakeResponse:
    document = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return FakeResponse.json(document, status)


def _slack_text(status: int, text: str) -> FakeResponse:
    return FakeResponse.text(text, status)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class FakeNotifications(FakeServer):
    """Fake SendGrid, Twilio and Slack webhook APIs on one server (provider name ``notifications``).

    Routes:
        ``POST /v3/mail/send`` (SendGrid): ``Authorization: Bearer <key>`` and a
        JSON body with ``personalizations[].to[].email``, ``from.email``,
        ``subject`` and ``content[]``; answers 202 with an empty body and an
        ``X-Message-Id`` header; a bad body gives 400 ``{"errors": [{"message",
        "field", "help"}]}``, a bad key 401.
        ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (Twilio): HTTP
        Basic auth with the account sid and auth token, form fields ``To``
        (E.164), ``From`` and ``Body``; answers 201 ``{"sid": "SM...", "status":
        "queued", "to", "from", "body", ...}``; errors are ``{"code", "message",
        "more_info", "status"}`` (400 with 21211 for a bad ``To``, 21602 for no
        body, 21603 for no ``From``, 21604 for no ``To``; 401 with 20003).
        ``POST /services/{a}/{b}/{c}`` (Slack incoming webhook): a JSON body (or
        a ``payload`` form field) with ``text`` or ``blocks``; answers 200
        ``ok`` as text/plain; 400 ``no_text`` or ``invalid_payload``; a path
        other than *slack_webhook_path* gives 404 ``no_service``.

    Args:
        sendgrid_api_key: the key SendGrid clients must send.
        twilio_account_sid: the Twilio account (Basic user, and in the path).
        twilio_auth_token: the Twilio auth token (Basic password).
        slack_webhook_path: the only webhook path that exists.
        host, port, record, max_recorded, seed, clock: as for `FakeServer`.
    """

    provider_name = "notifications"

    def __init__(
        self,
        *,
        sendgrid_api_key: str | SecretStr = "SG.fake-sendgrid-key",
        twilio_account_sid: str = "AC00000000000000000000000000000000",
        twilio_auth_token: str | SecretStr = "fake-twilio-token",  # noqa: S107 - a fake credential
        slack_webhook_path: str = "/services/T000/B000/XXXX",
        **options: Unpack[FakeServerOptions],
    ) -> None:
        super().__init__(**options)
        self._sendgrid_api_key = SecretStr(_plain(sendgrid_api_key))
        self.twilio_account_sid = twilio_account_sid
        self._twilio_auth_token = SecretStr(_plain(twilio_auth_token))
        self.slack_webhook_path = slack_webhook_path
        self._lock = threading.Lock()
        self._emails: list[SentEmail] = []
        self._sms: list[SentSMS] = []
        self._slack: list[SlackMessage] = []
        self.route("POST", "/v3/mail/send", self._send_mail)
        self.route("POST", "/2010-04-01/Accounts/{sid}/Messages.json", self._send_sms)
        self.route("POST", "/services/{a}/{b}/{c}", self._post_slack)

    @property
    def emails(self) -> list[SentEmail]:
        """Emails accepted, oldest first (a copy)."""
        with self._lock:
            return list(self._emails)

    @property
    def sms(self) -> list[SentSMS]:
        """Text messages accepted, oldest first (a copy)."""
        with self._lock:
            return list(self._sms)

    @property
    def slack(self) -> list[SlackMessage]:
        """Slack messages accepted, oldest first (a copy)."""
        with self._lock:
            return list(self._slack)

    def clear(self) -> None:
        """Forget recorded requests, errors and every message sent."""
        super().clear()
        with self._lock:
            self._emails.clear()
            self._sms.clear()
            self._slack.clear()

    def _send_mail(self, request: FakeRequest) -> FakeResponse:
        key = request.bearer_token()
        if key is None or not _same(key, self._sendgrid_api_key.get_secret_value()):
            return _sendgrid_errors(
                (None, "The provided authorization grant is invalid, expired, or revoked"),
                status=401,
            )
        try:
            body = request.json()
        except ValueError:
            return _sendgrid_errors((None, "Invalid JSON in the request body."))
        problems = _check_mail(body)
        if problems:
            return _sendgrid_errors(*problems)
        personalizations = body["personalizations"]
        contents = {block["type"]: block["value"] for block in reversed(body["content"])}
        email = SentEmail(
            message_id=secrets.token_urlsafe(16),
            sender=body["from"]["email"],
            to=tuple(r["email"] for p in personalizations for r in p["to"]),
            subject=body.get("subject") or personalizations[0]["subject"],
            text=contents.get("text/plain"),
            html=contents.get("text/html"),
            payload=body,
        )
        with self._lock:
            self._emails.append(email)
        return FakeResponse.empty(202, {"X-Message-Id": email.message_id})

    def _send_sms(self, request: FakeRequest) -> FakeResponse:
        credentials = request.basic_auth()
        if credentials is None or not (
            _same(credentials[0], self.twilio_account_sid)
            and _same(credentials[1], self._twilio_auth_token.get_secret_value())
        ):
            return _twilio_error(401, 20003, "Authentication Error - invalid username or password")
        account_sid = request.path_params["sid"]
        if account_sid != self.twilio_account_sid:
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        try:
            form = request.form()
        except ValueError:
            return _twilio_error(400, 21602, "Message body is required.")
        to, sender, text = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if not text:
            return _twilio_error(400, 21602, "Message body is required.")
        if len(text) > _SMS_MAX_CHARS:
            return _twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        message = SentSMS(f"SM{secrets.token_hex(16)}", account_sid, to, sender, text)
        with self._lock:
            self._sms.append(message)
        return FakeResponse.json(
            {
                "sid": message.sid,
                "account_sid": account_sid,
                "status": "queued",
                "to": to,
                "from": sender,
                "body": text,
                "direction": "outbound-api",
                "num_segments": str(math.ceil(len(text) / 153) if len(text) > 160 else 1),
                "date_created": formatdate(self.clock.wall(), usegmt=True),
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{message.sid}.json",
            },
            201,
        )

    def _post_slack(self, request: FakeRequest) -> FakeResponse:
        if request.path != self.slack_webhook_path:
            return _slack_text(404, "no_service")
        try:
            if request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                payload = json.loads(request.form().get("payload", ""))
            else:
                payload = request.json()
        except ValueError:
            return _slack_text(400, "invalid_payload")
        if not isinstance(payload, dict):
            return _slack_text(400, "invalid_payload")
        text, blocks = payload.get("text"), payload.get("blocks")
        if not (isinstance(text, str) and text) and not (isinstance(blocks, list) and blocks):
            return _slack_text(400, "no_text")
        message = SlackMessage(
            request.path,
            text if isinstance(text, str) else None,
            blocks if isinstance(blocks, list) else None,
            payload,
        )
        with self._lock:
            self._slack.append(message)
        return _slack_text(200, "ok")


def _plain(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret
