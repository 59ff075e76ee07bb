"""``seawall webhooks list | show | replay`` on a migrated SQLite file filled beforehand."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from seawall.db import Database, outbox, webhook_events
from seawall.testing import FakePaymentGateway
from seawall.webhooks import WebhookFilter, WebhookLog, WebhookProvider, WebhookReceiver
from tests.test_cli_messaging import _seawall

pytestmark = pytest.mark.usefixtures("isolated_environment", "logging_restored")

SECRET = "cli-s3cret"


@pytest.fixture
def migrated(database_file: str) -> str:
    """The migrated SQLite file's async URL (the file is SEAWALL_DATABASE_URL too)."""
    return database_file.replace("sqlite://", "sqlite+aiosqlite://")


GITHUB = WebhookProvider(name="github", scheme="github", secrets=(SecretStr(SECRET),))


def test_webhooks_list_says_so_when_there_are_none(migrated: str) -> None:
    result = _seawall("webhooks", "list")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no webhook deliveries"  # and no empty table above it


async def _receive(url: str, payloads: list[tuple[str, dict[str, object]]]) -> list[str]:
    database = Database(url)
    receiver = WebhookReceiver(database, {"github": GITHUB})
    ids = []
    try:
        for n, (event, payload) in enumerate(payloads):
            body = json.dumps(payload).encode()
            digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            receipt = await receiver.receive(
                GITHUB,
                {
                    "X-Hub-Signature-256": f"sha256={digest}",
                    "X-GitHub-Event": event,
                    "X-GitHub-Delivery": f"d-{n}",
                    "Authorization": "Bearer must-not-be-kept",
                },
                body,
            )
            assert receipt.webhook_id is not None
            ids.append(receipt.webhook_id)
    finally:
        await database.dispose()
    return ids


async def _replays(url: str) -> list[dict[str, object]]:
    database = Database(url)
    try:
        async with database.reading() as session:
            rows = await session.execute(
                sa.select(outbox.c.payload).where(outbox.c.event_type == "webhook.replayed")
            )
            return [dict(row[0]) for row in rows]
    finally:
        await database.dispose()


def test_list_show_and_replay(migrated: str) -> None:
    url = migrated
    ids = asyncio.run(
        _receive(url, [("issues", {"action": "opened"}), ("push", {"ref": "main"}), ("issues", {})])
    )

    listed = _seawall("webhooks", "list", "--json")
    issues = _seawall("webhooks", "list", "--json", "--type", "issues*")
    shown = _seawall("webhooks", "show", ids[1])
    replayed = _seawall("webhooks", "replay", "--type", "issues*", "--force")
    refused = _seawall("webhooks", "replay")
    missing = _seawall("webhooks", "show", "no-such-id")
    bad_status = _seawall("webhooks", "list", "--status", "lost")

    assert listed.returncode == 0
    assert {json.loads(line)["id"] for line in listed.stdout.splitlines()} == set(ids)
    assert [json.loads(line)["type"] for line in issues.stdout.splitlines()] == [
        "issues",
        "issues.opened",
    ]
    detail = json.loads(shown.stdout)
    assert (detail["body"], detail["type"], detail["status"]) == (
        {"ref": "main"},
        "push",
        "received",
    )
    assert "authorization" not in detail["headers"]
    assert "x-hub-signature-256" not in detail["headers"]
    assert replayed.stdout.strip() == "2 webhook delivery(ies) queued for replay"
    replays = asyncio.run(_replays(url))
    assert sorted(str(r["id"]) for r in replays) == sorted([ids[0], ids[2]])
    assert all(r["force"] is True for r in replays)
    assert refused.returncode == 2
    assert missing.returncode == 1
    assert bad_status.returncode == 2


def test_the_log_filters_by_time_and_status(migrated: str) -> None:
    url = migrated
    ids = asyncio.run(_receive(url, [("issues", {"n": 1}), ("issues", {"n": 2})]))

    async def check() -> None:
        database = Database(url)
        try:
            async with database.transaction() as session:
                await session.execute(
                    webhook_events.update()
                    .where(webhook_events.c.id == ids[0])
                    .values(status="parked", received_at=datetime.now(UTC) - timedelta(days=2))
                )
            log = WebhookLog(database)
            recent = await log.list(WebhookFilter(since=datetime.now(UTC) - timedelta(days=1)))
            parked = await log.list(WebhookFilter(status="parked"))
            assert [w.id for w in recent] == [ids[1]]
            assert [w.id for w in parked] == [ids[0]]
            assert (await log.get(ids[0])) is not None
        finally:
            await database.dispose()

    asyncio.run(check())


def test_recover_reads_missed_stripe_events_into_the_store(
    migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakePaymentGateway() as stripe:
        for n in range(3):
            stripe.add_event("charge.succeeded", {"id": f"ch_{n}"})
        monkeypatch.setenv("SEAWALL_SERVICES__STRIPE__BASE_URL", stripe.url)
        monkeypatch.setenv("SEAWALL_SERVICES__STRIPE__TOKEN", "sk_test_fake")
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

        first = _seawall("webhooks", "recover", "stripe", "--since", since)
        again = _seawall("webhooks", "recover", "stripe", "--since", since)
        no_api = _seawall("webhooks", "recover", "stripe", "--since", since, "--service", "nope")
        github_without_hook = _seawall("webhooks", "recover", "github", "--since", since)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "examined": 3,
        "stored": 3,
        "duplicates": 0,
        "failed_upstream": 0,
    }
    assert json.loads(again.stdout)["duplicates"] == 3
    assert no_api.returncode == 2
    assert github_without_hook.returncode == 2
    listed = _seawall("webhooks", "list", "--json", "--provider", "stripe")
    assert len(listed.stdout.splitlines()) == 3
