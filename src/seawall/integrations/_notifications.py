"""Notifications: one `NotificationChannel` interface, a `Notifier` that routes, a test channel.

Every way of reaching someone (e-mail through SendGrid or SMTP, SMS through
Twilio, a Slack webhook, your own) is a `NotificationChannel`: a ``name`` and
``async send(notification) -> Delivery``. The `Notifier` holds channels by
name and knows nothing else about them, so a new channel plugs in without
changing it (the strategy pattern).

Routing (`Notifier.send`): name one channel, or several to fail over in
order (the first that accepts wins), or none for all the notifier's channels
in the order they were given. Only failures of the outside world
(`seawall.errors.SeawallError`: the provider is down, refused, rate-limited,
its circuit is open) move on to the next channel; a `ValueError` (this
notification cannot go through this channel) or a bug stops the send.
`Notifier.broadcast` sends through several channels at once instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Protocol

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from seawall.errors import SeawallError
from seawall.http import PartialResults, gather_partial
from seawall.resilience import Clock

__all__ = [
    "Delivery",
    "Notification",
    "NotificationChannel",
    "Notifier",
]

_log = structlog.get_logger("seawall.integrations")
MAX_BODY_CHARS: Final = 1_000_000


def _one_line(value: str) -> str:
    # A line break in a header value starts a new header (header injection).
    if any(char in value for char in "\r\n\x00"):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


HeaderText = Annotated[str, AfterValidator(_one_line)]


class Notification(BaseModel):
    """Something to tell someone, in terms every channel understands.

    Attributes:
        to: the recipient in the channel's terms (an e-mail address, an E.164
            phone number); channels bound to one destination (a Slack
            webhook) ignore it.
        subject: a subject line; e-mail needs one, chat shows it in bold, SMS
            leaves it out.
        body: the plain-text message.
        html: an HTML alternative, used by e-mail channels.
        sender: overrides the channel's sender (an e-mail ``From``), if allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: HeaderText | None = None
    subject: HeaderText | None = None
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS, repr=False)
    html: str | None = Field(default=None, max_length=MAX_BODY_CHARS, repr=False)
    sender: HeaderText | None = None


class Delivery(BaseModel):
    """A channel's receipt: the provider accepted the notification.

    Attributes:
        channel: the channel's name.
        provider_id: the provider's id for the message (SendGrid's
            ``X-Message-Id``, Twilio's ``sid``, the SMTP ``Message-ID``), if it
            gives one.
        accepted_at: when the provider accepted it (UTC).
    """

    model_config = ConfigDict(frozen=True)

    channel: str
    provider_id: str | None = None
    accepted_at: datetime


class NotificationChannel(Protocol):
    """A way to send a `Notification`: e-mail, SMS, chat, your own."""

    @property
    def name(self) -> str:
        """The channel's name, by which a `Notifier` routes to it."""
        ...

    async def send(self, notification: Notification) -> Delivery:
        """Hand *notification* to the provider.

        Returns:
            The receipt.

        Raises:
            ValueError: the notification cannot go through this channel (no
                recipient, a recipient of the wrong kind, no subject for e-mail).
            seawall.errors.ExternalServiceError: the provider did not accept it.
        """
        ...


def delivered(channel: str, provider_id: str | None, clock: Clock) -> Delivery:
    """A `Delivery` for *channel* stamped with *clock*'s wall time."""
    return Delivery(
        channel=channel,
        provider_id=provider_id,
        accepted_at=datetime.fromtimestamp(clock.wall(), UTC),
    )


def need_recipient(notification: Notification, channel: str) -> str:
    """The notification's ``to``, or a `ValueError` naming *channel*."""
    if not notification.to:
        raise ValueError(f"channel {channel!r} needs a recipient: set notification.to")
    return notification.to


_EMAIL_ADDRESS: Final = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


def need_email_address(notification: Notification, channel: str) -> str:
    """The notification's ``to`` if it is an e-mail address, else a `ValueError`."""
    to = need_recipient(notification, channel)
    if not _EMAIL_ADDRESS.fullmatch(to):
        raise ValueError(f"channel {channel!r} sends e-mail; notification.to is not an address")
    return to


def need_subject(notification: Notification, channel: str) -> str:
    """The notification's subject, or a `ValueError`: e-mail needs one."""
    if not notification.subject:
        raise ValueError(f"channel {channel!r} sends e-mail, which needs a subject")
    return notification.subject


class Notifier:
    """Sends notifications through named channels, with failover or to several at once.

    Args:
        channels: the channels, in order of preference (the failover order of
            ``send`` without ``via``).

    Raises:
        ValueError: no channels, or two with the same name.
    """

    def __init__(self, channels: Iterable[NotificationChannel]) -> None:
        self._channels: dict[str, NotificationChannel] = {}
        for channel in channels:
            if channel.name in self._channels:
                raise ValueError(f"two channels are named {channel.name!r}")
            self._channels[channel.name] = channel
        if not self._channels:
            raise ValueError("a Notifier needs at least one channel")

    def __repr__(self) -> str:
        return f"Notifier({list(self._channels)!r})"

    @property
    def channels(self) -> Mapping[str, NotificationChannel]:
        """The channels by name, in order of preference."""
        return dict(self._channels)

    def _pick(self, via: str | Sequence[str] | None) -> list[NotificationChannel]:
        names = [via] if isinstance(via, str) else list(self._channels if via is None else via)
        if not names:
            raise ValueError("via names no channel; give at least one, or None for all")
        unknown = [name for name in names if name not in self._channels]
        if unknown:
            raise ValueError(f"no channel named {unknown!r}; known: {sorted(self._channels)}")
        return [self._channels[name] for name in names]

    async def send(
        self, notification: Notification, *, via: str | Sequence[str] | None = None
    ) -> Delivery:
        """Send *notification* through one channel, or the first of several that takes it.

        Args:
            notification: what to send.
            via: a channel's name; several names to try in that order until
                one accepts; None for every channel in order of preference.

        Returns:
            The receipt of the channel that accepted it.

        Raises:
            ValueError: an unknown channel name, or a channel cannot carry
                this notification.
            seawall.errors.SeawallError: every channel tried failed; the last
                channel's error, with the others in its notes.
        """
        channels = self._pick(via)
        tried: list[str] = []
        for channel, fallback in itertools.pairwise(channels):
            try:
                return await self._send_one(channel, notification, len(tried) + 1)
            except SeawallError as exc:
                tried.append(f"{channel.name}: {type(exc).__name__}")
                _log.warning(
                    "notification_failed_over",
                    channel=channel.name,
                    next_channel=fallback.name,
                    error=type(exc).__name__,
                )
        try:
            return await self._send_one(channels[-1], notification, len(tried) + 1)
        except SeawallError as exc:
            if tried:
                exc.add_note("channels tried before: " + ", ".join(tried))
            raise

    @staticmethod
    async def _send_one(
        channel: NotificationChannel, notification: Notification, attempt: int
    ) -> Delivery:
        delivery = await channel.send(notification)
        _log.info(
            "notification_sent",
            channel=channel.name,
            provider_id=delivery.provider_id,
            attempt=attempt,
        )
        return delivery

    async def broadcast(
        self,
        notification: Notification,
        *,
        via: Sequence[str] | None = None,
        timeout: float | timedelta = 30.0,
    ) -> PartialResults[Delivery]:
        """Send *notification* through several channels at once.

        Args:
            notification: what to send.
            via: the channels' names; every channel when None.
            timeout: how long all of them together may take.

        Returns:
            The receipts and the errors, by channel name (one failure does not
            stop the others).
        """
        channels = self._pick(via)
        return await gather_partial(
            {channel.name: channel.send(notification) for channel in channels}, timeout=timeout
        )
