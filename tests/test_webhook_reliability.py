"""Webhooks through killed servers: every acknowledged delivery kept, every effect once.

A "provider" sends signed GitHub ``issues`` deliveries (one issue each) to
``seawall serve`` while the server is killed with SIGKILL at a random moment,
then restarted on the same database. Like GitHub and Stripe, the provider
sends again every delivery whose answer it did not get, with the same delivery
id and body, and it also re-sends some that were acknowledged (an answer lost
on the way back). Afterwards, with processing finished:

- every delivery acknowledged before a kill is stored, exactly once;
- every issue has exactly one case and one ``case.created`` event: no
  redelivery, kill or restart made an effect twice.

The figures of a run are printed (``-s``) and recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import signal
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from seawall import db as tables
from seawall.db import Database
from tests.live_server import Server, free_port, seawall_serve
from tests.test_reliability import database_url  # noqa: F401 - the fixture

SECRET = "reliability-s3cret"
CONCURRENCY = 16
SETTLE_SECONDS = 120.0


def _delivery(number: int) -> tuple[str, bytes, dict[str, str]]:
    guid = str(uuid.uuid4())
    body = json.dumps(
        {
            "action": "opened",
            "issue": {"number": number, "title": f"issue {number}", "state": "open"},
            "repository": {"full_name": "octo/reliability"},
        }
    ).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return (
        guid,
        body,
        {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": f"sha256={digest}",
        },
    )


async def _send(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> str | None:
    """POST one delivery: ``accepted`` or ``duplicate``, or None when the answer was lost."""
    try:
        response = await client.post("/webhooks/github", content=body, headers=headers)
    except httpx.TransportError:
        return None
    if response.status_code == 200:
        status: str = response.json()["status"]
        return status
    assert response.status_code in {503}, response.text
    return None


async def _load(
    server: Server,
    deliveries: list[tuple[str, bytes, dict[str, str]]],
    acknowledged: set[str],
    kill_after: int,
) -> None:
    queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
    for item in deliveries:
        queue.put_nowait(item)
    answered = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal answered
        while not queue.empty():
            guid, body, headers = queue.get_nowait()
            if await _send(client, body, headers) is not None:
                acknowledged.add(guid)
                answered += 1
                if answered >= kill_after and server.process.poll() is None:
                    server.process.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))


async def _counts(url: str) -> dict[str, object]:
    database = Database(url)
    try:
        async with database.reading() as session:
            per_delivery = dict(
                (
                    await session.execute(
                        sa.select(tables.webhook_events.c.delivery_id, sa.func.count()).group_by(
                            tables.webhook_events.c.delivery_id
                        )
                    )
                ).all()
            )
            unfinished = await session.scalar(
                sa.select(sa.func.count()).where(tables.webhook_events.c.status != "processed")
            )
            per_issue = dict(
                (
                    await session.execute(
                        sa.select(tables.cases.c.external_id, sa.func.count()).group_by(
                            tables.cases.c.external_id
                        )
                    )
                ).all()
            )
            created = dict(
                (
                    await session.execute(
                        sa.select(tables.outbox.c.aggregate_id, sa.func.count())
                        .where(tables.outbox.c.event_type == "case.created")
                        .group_by(tables.outbox.c.aggregate_id)
                    )
                ).all()
            )
    finally:
        await database.dispose()
    return {
        "per_delivery": per_delivery,
        "unfinished": int(unfinished or 0),
        "per_issue": per_issue,
        "created": created,
    }


async def _run(tmp_path: Path, url: str, deliveries: int, kills: int) -> dict[str, int]:
    items = [_delivery(n) for n in range(deliveries)]
    acknowledged: set[str] = set()
    port = free_port()
    settings = {
        "SEAWALL_DATABASE_URL": url,
        "SEAWALL_AUTO_MIGRATE": "true",
        "SEAWALL_WEBHOOKS__GITHUB__SECRETS": SECRET,
        "SEAWALL_WEBHOOKS__GITHUB__RATE_LIMIT": "1000000/second",
        "SEAWALL_LOG_LEVEL": "warning",
    }
    chunks = [items[i::kills] for i in range(kills)]
    for number, chunk in enumerate(chunks):
        run_dir = tmp_path / f"run-{number}"
        run_dir.mkdir()
        with seawall_serve(run_dir, port=port, **settings) as server:
            server.wait_until_ready()
            kill_after = random.randint(len(chunk) // 5, len(chunk) // 2)
            await _load(server, chunk, acknowledged, kill_after)
            assert server.process.wait(timeout=15) == -signal.SIGKILL
    before_kills = set(acknowledged)
    unanswered = deliveries - len(acknowledged)
    # The provider retries what it has no answer for, and some it had (lost acks).
    resent = [item for item in items if item[0] not in acknowledged]
    resent += random.sample(
        [item for item in items if item[0] in acknowledged], k=min(50, len(acknowledged))
    )
    statuses: list[str] = []
    with seawall_serve(tmp_path, port=port, **settings) as server:
        server.wait_until_ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
            for guid, body, headers in resent:
                status = await _send(client, body, headers)
                assert status is not None, "the restarted server must answer"
                statuses.append(status)
                acknowledged.add(guid)
        counts: dict[str, object] = {}
        for _ in range(int(SETTLE_SECONDS / 0.25)):
            counts = await _counts(url)
            if counts["unfinished"] == 0 and len(counts["per_issue"]) == deliveries:  # type: ignore[arg-type]
                break
            await asyncio.sleep(0.25)
        server.stop()

    counts = await _counts(url)
    per_delivery: dict[str, int] = counts["per_delivery"]  # type: ignore[assignment]
    per_issue: dict[str, int] = counts["per_issue"]  # type: ignore[assignment]
    created: dict[str, int] = counts["created"]  # type: ignore[assignment]
    assert before_kills <= set(per_delivery), "an acknowledged delivery was lost"
    assert set(per_delivery) == {guid for guid, _, _ in items}
    assert set(per_delivery.values()) == {1}, "a delivery was stored twice"
    assert counts["unfinished"] == 0, "some deliveries were never processed"
    assert len(per_issue) == deliveries
    assert set(per_issue.values()) == {1}, "an issue made more than one case"
    assert set(created.values()) == {1}, "a case has more than one case.created event"
    figures = {
        "deliveries": deliveries,
        "kills": kills,
        "acknowledged_before_kills": len(before_kills),
        "unanswered": unanswered,
        "resent": len(resent),
        "resent_answered_duplicate": statuses.count("duplicate"),
        "lost": deliveries - len(per_delivery),
        "stored_twice": sum(n - 1 for n in per_delivery.values()),
        "effects_twice": sum(n - 1 for n in per_issue.values()),
    }
    print(f"\nwebhook reliability ({url.split(':', 1)[0]}): {figures}")
    return figures


async def test_a_killed_server_keeps_every_acknowledged_webhook_and_applies_each_once(
    tmp_path: Path,
    database_url: str,  # noqa: F811 - the imported fixture
) -> None:
    figures = await _run(tmp_path, database_url, deliveries=200, kills=1)

    assert (figures["lost"], figures["stored_twice"], figures["effects_twice"]) == (0, 0, 0)


@pytest.mark.slow
async def test_repeated_kills_lose_no_webhook_and_double_no_effect(
    tmp_path: Path,
    database_url: str,  # noqa: F811 - the imported fixture
) -> None:
    figures = await _run(tmp_path, database_url, deliveries=2000, kills=5)

    assert (figures["lost"], figures["stored_twice"], figures["effects_twice"]) == (0, 0, 0)
