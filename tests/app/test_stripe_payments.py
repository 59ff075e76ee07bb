"""Stripe payment webhooks update the case they name, parking until the case exists."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr

from seawall.app import create_app
from seawall.app._payments import payment_from_event
from seawall.config import Settings, WebhookSettings
from seawall.db import Database, cases, webhook_events
from tests.app.test_cases import NEW_CASE, key

SECRET = "whsec_payments_s3cret"


def stripe_event(
    kind: str, *, case: str | None = "crm-77", status: str = "succeeded", created: int = 1000
) -> dict[str, Any]:
    metadata = {} if case is None else {"case_id": case}
    return {
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "type": kind,
        "created": created,
        "data": {
            "object": {
                "id": "pi_123",
                "amount": 4200,
                "currency": "eur",
                "status": status,
                "metadata": metadata,
            }
        },
    }


def test_a_payment_event_names_its_case_and_state() -> None:
    update = payment_from_event(stripe_event("payment_intent.succeeded"))

    assert update is not None
    assert (update.case_ref, update.state, update.amount, update.currency) == (
        "crm-77",
        "paid",
        4200,
        "eur",
    )


@pytest.mark.parametrize(
    ("kind", "status", "state"),
    [
        ("payment_intent.payment_failed", "requires_payment_method", "failed"),
        ("payment_intent.processing", "processing", "pending"),
        ("charge.refunded", "succeeded", "refunded"),
        ("payment_intent.amount_capturable_updated", "requires_capture", "authorized"),
        ("payment_intent.created", "something_new", "something_new"),
    ],
)
def test_stripe_states_map_to_ours(kind: str, status: str, state: str) -> None:
    update = payment_from_event(stripe_event(kind, status=status))
    assert update is not None
    assert update.state == state


@pytest.mark.parametrize(
    "payload", [{}, [], {"data": {}}, stripe_event("charge.succeeded", case=None)]
)
def test_a_payment_without_a_case_is_not_ours(payload: Any) -> None:
    assert payment_from_event(payload) is None


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(
        update={"webhooks": {"stripe": WebhookSettings(secrets=[SecretStr(SECRET)])}}
    )
    application = create_app(configured, database=database)
    async with application.router.lifespan_context(application):
        yield application


async def deliver(client: httpx.AsyncClient, event: dict[str, Any]) -> str:
    body = json.dumps(event).encode()
    stamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    response = await client.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": f"t={stamp},v1={digest}", "Content-Type": "application/json"},
    )
    assert response.json()["status"] == "accepted", response.text
    return str(response.json()["id"])


async def status_of(database: Database, webhook_id: str, wanted: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for _ in range(300):
        async with database.reading() as session:
            found = (
                (
                    await session.execute(
                        sa.select(webhook_events).where(webhook_events.c.id == webhook_id)
                    )
                )
                .mappings()
                .first()
            )
        row = dict(found) if found else {}
        if row.get("status") == wanted:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"{webhook_id} never became {wanted}: {row.get('status')}")


async def payment_of(database: Database, external_id: str) -> Any:
    async with database.reading() as session:
        metadata = await session.scalar(
            sa.select(cases.c.metadata).where(cases.c.external_id == external_id)
        )
    return (metadata or {}).get("payment")


async def test_a_payment_before_its_case_is_parked_then_applied_when_the_case_appears(
    client: httpx.AsyncClient, database: Database
) -> None:
    webhook_id = await deliver(client, stripe_event("payment_intent.succeeded"))
    parked = await status_of(database, webhook_id, "parked")
    assert parked["waiting_for"] == "case:crm-77"

    created = await client.post("/cases", json={**NEW_CASE, "external_id": "crm-77"}, headers=key())
    assert created.status_code == 201

    await status_of(database, webhook_id, "processed")
    payment = await payment_of(database, "crm-77")
    assert (payment["state"], payment["amount"], payment["payment_id"]) == ("paid", 4200, "pi_123")


async def test_an_older_payment_event_does_not_undo_a_newer_one(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await client.post("/cases", json={**NEW_CASE, "external_id": "crm-77"}, headers=key())
    assert created.status_code == 201
    newer = await deliver(client, stripe_event("charge.refunded", created=2000))
    await status_of(database, newer, "processed")
    older = await deliver(client, stripe_event("payment_intent.succeeded", created=1000))
    await status_of(database, older, "processed")

    assert (await payment_of(database, "crm-77"))["state"] == "refunded"


async def test_a_payment_for_no_case_is_processed_without_effect(
    client: httpx.AsyncClient, database: Database
) -> None:
    webhook_id = await deliver(client, stripe_event("charge.succeeded", case=None))

    await status_of(database, webhook_id, "processed")
