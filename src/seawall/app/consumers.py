"""The cases service's own consumers.

``activity__from_cases`` turns every case event into a line of the case's
timeline (``GET /cases/{id}/activity``). It is the service's proof that the
outbox, the relay, the bus and the inbox carry each event exactly once.
``webhooks__processor`` runs the handlers of each stored webhook delivery; the
service's own turns GitHub ``issues`` events into cases.
Deployments add their own modules with ``SEAWALL_CONSUMER_MODULES``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app._document_records import IMPORT_CONSUMER
from seawall.app._documents import importer
from seawall.app._github import issue_to_case
from seawall.app._payments import payment_to_case
from seawall.app._sync import crm_record_changed
from seawall.db import case_activity, insert_rows
from seawall.messaging import Event, Unprocessable, consumer
from seawall.webhooks import WebhookHandlers, WebhookProcessor

ACTIVITY_CONSUMER = "activity__from_cases"
WEBHOOK_CONSUMER = "webhooks__processor"

webhook_handlers = WebhookHandlers()
"""The service's webhook handlers, by provider and event type."""
webhook_processor = WebhookProcessor(webhook_handlers)
"""Runs them for each stored delivery; parks the ones whose record is not there yet."""

# GitHub issues become cases (provider "github": SEAWALL_WEBHOOKS__GITHUB__SECRETS);
# Stripe payments update the payment state of the case they name (provider "stripe").
webhook_handlers.add("github", "issues.*", issue_to_case)
webhook_handlers.add("stripe", ["payment_intent.*", "charge.*"], payment_to_case)
# A CRM change notice syncs the one ticket it names (provider "crm", SCHEME=standard).
webhook_handlers.add("crm", ["ticket.*", "customer.*"], crm_record_changed)


@consumer(durable=WEBHOOK_CONSUMER, subjects=["seawall.webhooks.webhook.>"])
async def process_webhook(event: Event, session: AsyncSession) -> None:
    """Run the handlers of a stored webhook delivery (received, retried or replayed)."""
    await webhook_processor.process(event, session)


# Its only effect is a row: the events in flight together share one transaction.
@consumer(
    durable=ACTIVITY_CONSUMER, subjects=["seawall.cases.case.>"], concurrency=100, batch_size=100
)
async def record_activity(event: Event, session: AsyncSession) -> None:
    """Append the event to its case's timeline."""
    if not event.subject:
        raise Unprocessable("a case event must name its case in 'subject'")
    row = {
        "case_id": event.subject,
        "event_id": event.id,
        "event_type": event.type,
        "summary": summarize(event.type, event.data or {}),
        "correlation_id": event.correlationid,
        "occurred_at": event.time,
        "recorded_at": datetime.now(UTC),
    }
    # Nothing reads the row back in this transaction: on SQLite it goes with the
    # batch's COMMIT, so a batch makes two hops (inbox, COMMIT) however many it holds.
    await insert_rows(session, case_activity, [row], along=True)


@consumer(durable=IMPORT_CONSUMER, subjects=["seawall.documents.document.uploaded"])
async def import_document(event: Event, session: AsyncSession) -> None:
    """Check an uploaded document, extract its text and page count, attach them to its case."""
    await importer.handle(event, session)


def summarize(event_type: str, data: dict[str, Any]) -> str:
    """One human line for a case event."""
    if event_type == "case.created":
        return f"created: {data.get('title', '')}"[:500]
    if event_type == "case.synced":
        return f"synced from the CRM: {data.get('action', '')}"[:500]
    changes = data.get("changes")
    if event_type == "case.updated" and isinstance(changes, dict) and changes:
        parts = []
        for name, change in sorted(changes.items()):
            if isinstance(change, dict):
                parts.append(f"{name} {change.get('from')!s} -> {change.get('to')!s}")
        return ("updated: " + ", ".join(parts))[:500]
    return event_type
