"""HTTP notification channels: SendGrid e-mail, Twilio SMS and a Slack incoming webhook.

Each is a `NotificationChannel` over an `ExternalService`. None of these APIs
takes an idempotency key for sending, so sends are not retried (the service
retries only idempotent calls): a notification is sent at most once per call,
and a failure is for the caller, or the `Notifier`'s failover, to handle.
"""

from __future__ import annotations

import re
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, SecretStr

from seawall.http import BasicAuth, BearerToken, ExternalService, ServiceResponse
from seawall.integrations._adapter import ServiceAdapter
from seawall.integrations._notifications import (
    Delivery,
    Notification,
    delivered,
    need_email_address,
    need_recipient,
    need_subject,
)
from seawall.resilience import SYSTEM_CLOCK, Clock

__all__ = ["SendGridEmail", "SlackWebhook", "TwilioSms"]

_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_SLACK_PATH: Final = re.compile(r"/services/([^/]+)/([^/]+)/([^/]+)")
_SLACK_TEMPLATE: Final = "/services/{team}/{bot}/{token}"


class _Adapter(ServiceAdapter):
    """What the HTTP channels share: a service, maybe owned, a name and a clock."""

    def __init__(self, service: ExternalService, name: str, clock: Clock | None) -> None:
        if not name:
            raise ValueError("a channel needs a name")
        super().__init__(service)
        self._name = name
        self._clock = clock or SYSTEM_CLOCK

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name


class SendGridEmail(_Adapter):
    """E-mail through SendGrid's v3 mail send API (``POST /v3/mail/send``).

    Args:
        service: the `ExternalService` for the API, with ``Authorization: Bearer``.
        sender: the ``From`` address (a notification's ``sender`` overrides it).
        name: the channel's name.
        clock: where ``accepted_at`` comes from.
    """

    def __init__(
        self,
        service: ExternalService,
        *,
        sender: str,
        name: str = "email",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(service, name, clock)
        self.sender = sender

    def __repr__(self) -> str:
        return f"SendGridEmail({self.name!r}, {self.service!r}, sender={self.sender!r})"

    @classmethod
    def build(
        cls,
        *,
        api_key: str | SecretStr,
        sender: str,
        base_url: str = "https://api.sendgrid.com",
        name: str = "email",
        **options: Any,
    ) -> Self:
        """A channel with its own `ExternalService` (named *name*), closed by `aclose`.

        Args:
            api_key: the SendGrid API key.
            sender: the ``From`` address.
            base_url: the API's root.
            name: the channel's and the service's name.
            **options: further `ExternalService` options (``timeouts``, ``transport``, ...).
        """
        service = ExternalService(name, base_url, auth=BearerToken(api_key), **options)
        return cls(service, sender=sender, name=name, clock=options.get("clock"))._owned()

    async def send(self, notification: Notification) -> Delivery:
        """Send an e-mail; the receipt's ``provider_id`` is SendGrid's ``X-Message-Id``.

        Raises:
            ValueError: no e-mail address in ``to``, or no subject.
            seawall.errors.ExternalServiceError: SendGrid did not accept it.
        """
        to = need_email_address(notification, self.name)
        content = [{"type": "text/plain", "value": notification.body}]
        if notification.html:
            content.append({"type": "text/html", "value": notification.html})
        payload = {
            "personalizations": [{"to": [{"email": to}]}],
            "from": {"email": notification.sender or self.sender},
            "subject": need_subject(notification, self.name),
            "content": content,
        }
        response: ServiceResponse = await self.service.post("/v3/mail/send", json=payload)
        return delivered(self.name, response.headers.get("x-message-id"), self._clock)


class _TwilioMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sid: str


class TwilioSms(_Adapter):
    """SMS through Twilio's Messages API (form-encoded, HTTP basic auth).

    The subject of a notification is left out: a text message has none.

    Args:
        service: the `ExternalService` for the API, with `BasicAuth` (the
            account sid and the auth token).
        account_sid: the account the messages are sent from.
        from_number: the sending number (E.164) or a messaging service sid.
        name: the channel's name.
        clock: where ``accepted_at`` comes from.
    """

    def __init__(
        self,
        service: ExternalService,
        *,
        account_sid: str,
        from_number: str,
        name: str = "sms",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(service, name, clock)
        if not account_sid or not from_number:
            raise ValueError("account_sid and from_number must not be empty")
        self.account_sid = account_sid
        self.from_number = from_number

    def __repr__(self) -> str:
        return f"TwilioSms({self.name!r}, {self.service!r}, from_number={self.from_number!r})"

    @classmethod
    def build(
        cls,
        *,
        account_sid: str,
        auth_token: str | SecretStr,
        from_number: str,
        base_url: str = "https://api.twilio.com",
        name: str = "sms",
        **options: Any,
    ) -> Self:
        """A channel with its own `ExternalService` (named *name*), closed by `aclose`.

        Args:
            account_sid: the Twilio account sid (the basic-auth user).
            auth_token: its auth token (the basic-auth password).
            from_number: the sending number.
            base_url: the API's root.
            name: the channel's and the service's name.
            **options: further `ExternalService` options.
        """
        service = ExternalService(
            name, base_url, auth=BasicAuth(account_sid, auth_token), **options
        )
        return cls(
            service,
            account_sid=account_sid,
            from_number=from_number,
            name=name,
            clock=options.get("clock"),
        )._owned()

    async def send(self, notification: Notification) -> Delivery:
        """Send a text message; the receipt's ``provider_id`` is Twilio's message ``sid``.

        Raises:
            ValueError: ``to`` is not an E.164 phone number (``+14155550100``).
            seawall.errors.ExternalServiceError: Twilio did not accept it.
        """
        to = need_recipient(notification, self.name)
        if not _E164.fullmatch(to):
            raise ValueError(
                f"channel {self.name!r} sends SMS; notification.to is not an E.164 number"
            )
        message: _TwilioMessage = await self.service.post(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            path_params={"sid": self.account_sid},
            data={"To": to, "From": self.from_number, "Body": notification.body},
            model=_TwilioMessage,
        )
        return delivered(self.name, message.sid, self._clock)


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>); user text must not ping everyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhook(_Adapter):
    """Messages to a Slack channel through an incoming webhook.

    The webhook's URL is its credential: its path is sent as parameters of the
    template ``/services/{team}/{bot}/{token}``, which is all logs, metrics and
    errors show. ``to`` is ignored (the webhook is bound to one channel); a
    subject is shown in bold above the body; ``&``, ``<`` and ``>`` are escaped
    so user text cannot mention ``@channel`` or forge links.

    Args:
        service: the `ExternalService` for ``https://hooks.slack.com``.
        path: the webhook's path, ``/services/T…/B…/…``.
        name: the channel's name.
        clock: where ``accepted_at`` comes from.

    Raises:
        ValueError: *path* is not a Slack webhook path.
    """

    def __init__(
        self,
        service: ExternalService,
        path: str | SecretStr,
        *,
        name: str = "slack",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(service, name, clock)
        plain = path.get_secret_value() if isinstance(path, SecretStr) else path
        match = _SLACK_PATH.fullmatch(plain)
        if match is None:
            raise ValueError("a Slack webhook path looks like /services/T.../B.../...")
        team, bot, token = match.groups()
        self._path_params = {"team": team, "bot": bot, "token": SecretStr(token)}

    def __repr__(self) -> str:
        return f"SlackWebhook({self.name!r}, {self.service!r})"

    @classmethod
    def build(cls, webhook_url: str | SecretStr, *, name: str = "slack", **options: Any) -> Self:
        """A channel with its own `ExternalService` (named *name*), closed by `aclose`.

        Args:
            webhook_url: the whole webhook URL Slack gave (a secret).
            name: the channel's and the service's name.
            **options: further `ExternalService` options.

        Raises:
            ValueError: the URL is not ``http(s)://host/services/T…/B…/…``.
        """
        plain = (
            webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        )
        scheme, sep, rest = plain.partition("://")
        host, slash, path = rest.partition("/")
        if not sep or not slash or scheme not in {"http", "https"}:
            raise ValueError("webhook_url must be an http(s) URL with the webhook's path")
        service = ExternalService(name, f"{scheme}://{host}", **options)
        return cls(service, SecretStr("/" + path), name=name, clock=options.get("clock"))._owned()

    async def send(self, notification: Notification) -> Delivery:
        """Post the message; Slack gives no message id, so ``provider_id`` is None.

        Raises:
            seawall.errors.ExternalServiceError: Slack did not accept it
                (``no_service`` for a removed webhook, ``invalid_payload``).
        """
        text = _slack_escape(notification.body)
        if notification.subject:
            text = f"*{_slack_escape(notification.subject)}*\n{text}"
        params = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self._path_params.items()
        }
        await self.service.post(_SLACK_TEMPLATE, path_params=params, json={"text": text})
        return delivered(self.name, None, self._clock)
