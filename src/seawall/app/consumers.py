"""The cases service's own consumers.

``activity__from_cases`` turns every case event into a line of the case's
timeline (``GET /cases/{id}/activity``). It is the service's proof that the
outbox, the relay, the bus and the inbox carry each event exactly once.
Deployments add their own modules with ``SEAWALL_CONSUMER_MODULES``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import case_activity
from seawall.messaging import Event, Unprocessable, consumer

ACTIVITY_CONSUMER = "activity__from_cases"


@consumer(durable=ACTIVITY_CONSUMER, subjects=["seawall.cases.case.>"])
async def record_activity(event: Event, session: AsyncSession) -> None:
    """Append the event to its case's timeline."""
    if not event.subject:
        raise Unprocessable("a case event must name its case in 'subject'")
    await session.execute(
        case_activity.insert().values(
            case_id=event.subject,
            event_id=event.id,
            event_type=event.type,
            summary=summarize(event.type, event.data or {}),
            correlation_id=event.correlationid,
            occurred_at=event.time,
            recorded_at=datetime.now(UTC),
        )
    )


def summarize(event_type: str, data: dict[str, Any]) -> str:
    """One human line for a case event."""
    if event_type == "case.created":
        return f"created: {data.get('title', '')}"[:500]
    changes = data.get("changes")
    if event_type == "case.updated" and isinstance(changes, dict) and changes:
        parts = []
        for name, change in sorted(changes.items()):
            if isinstance(change, dict):
                parts.append(f"{name} {change.get('from')!s} -> {change.get('to')!s}")
        return ("updated: " + ", ".join(parts))[:500]
    return event_type
