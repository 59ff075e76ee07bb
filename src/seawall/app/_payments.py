"""Stripe ``payment_intent.*`` and ``charge.*`` webhooks update a case's payment state.

The payment object names its case in ``metadata.case_id`` (the case's id or
its ``external_id``); `payment_from_event` reads that and the payment's state
(pure), and `payment_to_case` records it under the case's
``metadata["payment"]`` with a ``case.updated`` event. A payment for a case
that does not exist yet parks the delivery (`AwaitingRecord`) until the case is
created: `release_for_case` is called in the transaction that creates one.
Stripe's events can come out of order, so an event older than the payment state
already recorded (by the event's ``created`` time) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import _repository as repo
from seawall.app._domain import Case
from seawall.app._events import case_updated
from seawall.db import cases
from seawall.messaging import Outbox
from seawall.webhooks import AwaitingRecord, WebhookEvent, WebhookProcessor

log = structlog.get_logger("seawall.app")
_outbox = Outbox()

# Stripe's statuses, in our words; anything else is kept as it came.
_STATES: Final = {
    "succeeded": "paid",
    "paid": "paid",
    "requires_payment_method": "failed",
    "canceled": "canceled",
    "processing": "pending",
    "requires_action": "pending",
    "requires_confirmation": "pending",
    "requires_capture": "authorized",
    "pending": "pending",
    "failed": "failed",
}


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    """What a Stripe event says about a case's payment."""

    case_ref: str
    state: str
    payment_id: str
    amount: int | None
    currency: str | None
    refunded: int
    event_created: int


def payment_from_event(payload: Any) -> PaymentUpdate | None:
    """Read a ``payment_intent.*`` or ``charge.*`` event (pure).

    Returns:
        The update, or None when the payment names no case (not ours to track).
    """
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    metadata = obj.get("metadata")
    ref = metadata.get("case_id") if isinstance(metadata, dict) else None
    if not isinstance(ref, str) or not ref.strip():
        return None
    kind = str(payload.get("type") or "")
    status = str(obj.get("status") or "")
    if kind == "charge.refunded" or obj.get("refunded") is True:
        state = "refunded"
    elif kind.endswith(".payment_failed") or kind == "charge.failed":
        state = "failed"
    else:
        state = _STATES.get(status, status or "unknown")
    amount = obj.get("amount")
    refunded = obj.get("amount_refunded")
    created = payload.get("created")
    return PaymentUpdate(
        case_ref=ref.strip()[:200],
        state=state[:40],
        payment_id=str(obj.get("id") or "")[:100],
        amount=amount if isinstance(amount, int) else None,
        currency=str(obj["currency"])[:3] if isinstance(obj.get("currency"), str) else None,
        refunded=refunded if isinstance(refunded, int) else 0,
        event_created=created if isinstance(created, int) else 0,
    )


async def _find(session: AsyncSession, ref: str) -> Case | None:
    row = (
        await session.execute(
            sa.select(cases.c.id).where(sa.or_(cases.c.id == ref, cases.c.external_id == ref))
        )
    ).first()
    return None if row is None else await repo.get_case(session, str(row[0]), for_update=True)


async def payment_to_case(event: WebhookEvent, session: AsyncSession) -> None:
    """Record a Stripe payment event on its case (a webhook handler)."""
    update = payment_from_event(event.json())
    if update is None:
        return
    case = await _find(session, update.case_ref)
    if case is None:
        raise AwaitingRecord(
            f"case {update.case_ref!r} does not exist yet", waiting_for=f"case:{update.case_ref}"
        )
    known = case.metadata.get("payment")
    previous = known if isinstance(known, dict) else {}
    if int(previous.get("event_created") or 0) > update.event_created:
        log.info("stripe_event_stale", case_id=case.id, webhook_id=event.id)
        return
    payment = {
        "state": update.state,
        "payment_id": update.payment_id,
        "amount": update.amount,
        "currency": update.currency,
        "refunded": update.refunded,
        "event_created": update.event_created,
    }
    if payment == previous:
        return
    metadata = {**case.metadata, "payment": payment}
    updated = await repo.update_case(session, case, {})
    if updated is None:
        raise RuntimeError(f"case {case.id} changed while a payment was applied; retrying")
    await session.execute(cases.update().where(cases.c.id == case.id).values(metadata=metadata))
    updated = updated.model_copy(update={"metadata": metadata})
    await _outbox.add(
        session,
        case_updated(updated, {"payment": {"from": previous.get("state"), "to": update.state}}),
    )


async def release_for_case(processor: WebhookProcessor, session: AsyncSession, case: Case) -> int:
    """Release the deliveries parked for *case* (by id or external id), in its transaction."""
    keys = [f"case:{case.id}"]
    if case.external_id:
        keys.append(f"case:{case.external_id}")
    return await processor.release_waiting(session, *keys)
