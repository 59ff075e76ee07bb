"""Recovering missed deliveries from GitHub's and Stripe's APIs (the fakes), into the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from seawall.db import Database, outbox, webhook_events
from seawall.http import BearerToken, ExternalService
from seawall.testing import FakeGitHub, FakePaymentGateway
from seawall.webhooks import WebhookProvider, WebhookReceiver, recover_github, recover_stripe

STRIPE = WebhookProvider(name="stripe", scheme="stripe", secrets=(SecretStr("whsec_x"),))
GITHUB = WebhookProvider(name="github", scheme="github", secrets=(SecretStr("gh"),))


async def stored(database: Database) -> list[dict[str, object]]:
    async with database.reading() as session:
        rows = (await session.execute(sa.select(webhook_events))).mappings().all()
    return [dict(row) for row in rows]


async def received_events(database: Database) -> int:
    async with database.reading() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).where(outbox.c.event_type == "webhook.received")
        )
    return int(count or 0)


async def test_stripe_events_that_never_arrived_are_stored_once(database: Database) -> None:
    receiver = WebhookReceiver(database, {"stripe": STRIPE})
    with FakePaymentGateway() as fake:
        old = fake.add_event(
            "charge.succeeded",
            {"id": "ch_0"},
            created=int((datetime.now(UTC) - timedelta(days=3)).timestamp()),
        )
        events = [fake.add_event("charge.succeeded", {"id": f"ch_{n}"}) for n in range(1, 6)]
        # One of them did arrive as a webhook.
        arrived = events[2]
        await receiver.store(
            STRIPE, b"{}", {}, delivery_id=arrived["id"], event_type=arrived["type"], by_body=False
        )
        async with ExternalService("stripe-api", fake.url, auth=BearerToken("sk_test_fake")) as api:
            since = datetime.now(UTC) - timedelta(hours=1)
            first = await recover_stripe(api, receiver, STRIPE, since=since, page_size=2)
            again = await recover_stripe(api, receiver, STRIPE, since=since, page_size=2)

    assert (first.examined, first.stored, first.duplicates) == (5, 4, 1)
    assert (again.stored, again.duplicates) == (0, 5)
    rows = await stored(database)
    assert sorted(str(r["delivery_id"]) for r in rows) == sorted(e["id"] for e in events)
    assert old["id"] not in {r["delivery_id"] for r in rows}
    recovered = [r for r in rows if r["delivery_id"] != arrived["id"]]
    assert all(r["headers"]["x-seawall-recovered"] == "stripe-events-api" for r in recovered)  # type: ignore[index]
    assert await received_events(database) == 5


async def test_github_deliveries_that_failed_are_stored(database: Database) -> None:
    receiver = WebhookReceiver(database, {"github": GITHUB})
    with FakeGitHub() as github:
        hook = github.add_hook("octo", "repo")
        github.add_delivery(
            "octo",
            "repo",
            hook,
            "issues",
            {"action": "opened", "n": 0},
            action="opened",
            status_code=500,
            delivered_at=datetime.now(UTC) - timedelta(days=2),
        )
        failed = [
            github.add_delivery(
                "octo",
                "repo",
                hook,
                "issues",
                {"action": "edited", "n": n},
                action="edited",
                status_code=code,
            )
            for n, code in ((1, 500), (2, 0), (3, 502))
        ]
        ok = github.add_delivery("octo", "repo", hook, "push", {"ref": "main"}, status_code=200)
        await receiver.store(
            GITHUB, b"{}", {}, delivery_id=ok["guid"], event_type="push", by_body=False
        )

        async with ExternalService("github-api", github.url, auth=BearerToken("ghp_fake")) as api:
            report = await recover_github(
                api,
                receiver,
                GITHUB,
                repository="octo/repo",
                hook_id=hook,
                since=datetime.now(UTC) - timedelta(hours=1),
                page_size=2,
            )

    assert (report.examined, report.stored, report.duplicates, report.failed_upstream) == (
        4,
        3,
        1,
        3,
    )
    rows = {r["delivery_id"]: r for r in await stored(database)}
    for delivery in failed:
        row = rows[delivery["guid"]]
        assert row["event_type"] == "issues.edited"
        assert row["headers"]["x-seawall-recovered"] == "github-deliveries-api"  # type: ignore[index]


async def test_a_window_without_timezone_is_refused(database: Database) -> None:
    receiver = WebhookReceiver(database, {"stripe": STRIPE})
    async with ExternalService("stripe-api", "http://127.0.0.1:9") as api:
        with pytest.raises(ValueError, match="timezone"):
            await recover_stripe(api, receiver, STRIPE, since=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
