"""The demo's own consumer group: every new case is announced in Slack.

`seawall demo` adds this module to ``SEAWALL_CONSUMER_MODULES`` of the
``seawall serve`` it starts, next to ``seawall.app.consumers``. The group
``notifications__from_cases`` gets every ``case.created`` event, as the
service's ``activity__from_cases`` does: one event, two consumer groups, two
effects (a timeline line and a Slack message), each once per group.

It is configured by the demo through two variables of its own, outside the
``SEAWALL_`` settings (which have no place for a demo's knobs):

- ``DEMO_SLACK_WEBHOOK_URL`` is the Slack incoming webhook (a secret: its
  path is its key);
- ``DEMO_POISON_FLAG`` names a file: while it exists, a case whose title
  starts with "poison" is refused (`Unprocessable`), so it lands in the dead
  letters at once and can be replayed once the file is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.demo._stack import NOTIFICATIONS_CONSUMER, POISON_FLAG_VARIABLE, SLACK_URL_VARIABLE
from seawall.integrations import Notification, SlackWebhook
from seawall.messaging import Event, Unprocessable, consumer

__all__ = ["announce_case"]

_channel: SlackWebhook | None = None


def _slack() -> SlackWebhook:
    # One channel (one connection pool, one breaker) for the process, made on first use so
    # that its client belongs to the event loop of `seawall serve`.
    global _channel  # noqa: PLW0603 - a lazily made process-wide channel
    if _channel is None:
        # This module is a deployment's consumer module, loaded by name into `seawall serve`,
        # not library code; its only configuration is what the demo puts in its environment.
        url = os.environ.get(SLACK_URL_VARIABLE)
        if not url:
            raise Unprocessable(
                f"{SLACK_URL_VARIABLE} is not set: this consumer belongs to `seawall demo`"
            )
        _channel = SlackWebhook.build(SecretStr(url), name="slack")
    return _channel


def _poisoned(title: str) -> bool:
    flag = os.environ.get(POISON_FLAG_VARIABLE)
    return bool(flag) and title.startswith("poison") and Path(str(flag)).exists()


@consumer(durable=NOTIFICATIONS_CONSUMER, subjects=["seawall.cases.case.created"])
async def announce_case(event: Event, session: AsyncSession) -> None:
    """Post a new case to the team's Slack channel.

    Raises:
        seawall.messaging.Unprocessable: a "poison" case while the poison flag
            file exists, or the demo's Slack webhook is not configured.
        seawall.errors.ExternalServiceError: Slack did not take the message; the
            worker tries the event again later.
    """
    data = event.data or {}
    title = str(data.get("title", ""))
    if _poisoned(title):
        raise Unprocessable(f"the Slack formatter cannot take {title[:60]!r} (poison flag is up)")
    priority = str(data.get("priority", "medium"))
    await _slack().send(
        Notification(
            subject=f"New case ({priority})",
            body=f"{title}\ncase {event.subject}",
        )
    )
