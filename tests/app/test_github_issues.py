"""GitHub ``issues`` webhooks become cases: the mapping, and the handler end to end."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr

from seawall.app import create_app
from seawall.app._domain import Priority, Status
from seawall.app._github import case_from_issue
from seawall.config import Settings, WebhookSettings
from seawall.db import Database, cases, outbox
from seawall.errors import Unprocessable

SECRET = "gh-issues-s3cret"


def issue_payload(
    action: str,
    *,
    number: int = 1347,
    state: str = "open",
    labels: tuple[str, ...] = (),
    updated_at: str = "2026-11-23T10:00:00Z",
    state_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "action": action,
        "issue": {
            "number": number,
            "title": "  Found   a bug ",
            "state": state,
            "state_reason": state_reason,
            "labels": [{"name": name} for name in labels],
            "html_url": f"https://github.com/octo/repo/issues/{number}",
            "updated_at": updated_at,
        },
        "repository": {"full_name": "octo/repo"},
    }


def test_an_issue_maps_to_a_case() -> None:
    mapped = case_from_issue(issue_payload("opened", labels=("bug", "Priority: High")))

    assert mapped.external_id == "github:octo/repo#1347"
    assert (mapped.title, mapped.status, mapped.priority) == (
        "Found a bug",
        Status.OPEN,
        Priority.HIGH,
    )
    assert mapped.github["labels"] == ["Priority: High", "bug"]


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("open", None, Status.OPEN),
        ("closed", "completed", Status.RESOLVED),
        ("closed", None, Status.RESOLVED),
        ("closed", "not_planned", Status.CLOSED),
    ],
)
def test_the_issue_state_maps_to_a_status(state: str, reason: str | None, expected: Status) -> None:
    assert case_from_issue(issue_payload("x", state=state, state_reason=reason)).status is expected


@pytest.mark.parametrize("labels", [(), ("enhancement",), ("p3",)])
def test_labels_without_urgency_give_medium_or_low(labels: tuple[str, ...]) -> None:
    expected = Priority.LOW if labels == ("p3",) else Priority.MEDIUM
    assert case_from_issue(issue_payload("opened", labels=labels)).priority is expected


@pytest.mark.parametrize(
    "payload",
    [{}, {"issue": {}}, {"issue": {"number": "1"}, "repository": {"full_name": "a/b"}}, []],
)
def test_a_payload_without_issue_is_unprocessable(payload: Any) -> None:
    with pytest.raises(Unprocessable):
        case_from_issue(payload)


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(
        update={"webhooks": {"github": WebhookSettings(secrets=[SecretStr(SECRET)])}}
    )
    application = create_app(configured, database=database)
    async with application.router.lifespan_context(application):
        yield application


async def deliver(client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    body = json.dumps(payload).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = await client.post(
        "/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={digest}",
        },
    )
    assert response.json()["status"] == "accepted"
    return str(response.json()["id"])


async def the_case(database: Database, ready: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for _ in range(300):
        async with database.reading() as session:
            found = (
                (
                    await session.execute(
                        sa.select(cases).where(cases.c.external_id.like("github:%"))
                    )
                )
                .mappings()
                .all()
            )
        assert len(found) <= 1, "one issue, one case"
        row = dict(found[0]) if found else {}
        if row and ready(row):
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"the case never got there: {row}")


async def test_an_issue_opens_then_resolves_its_case(
    client: httpx.AsyncClient, database: Database
) -> None:
    await deliver(client, issue_payload("opened", labels=("urgent",)))
    opened = await the_case(database, lambda r: True)
    await deliver(
        client, issue_payload("closed", state="closed", updated_at="2026-11-23T11:00:00Z")
    )
    closed = await the_case(database, lambda r: r["status"] == "resolved")

    assert (opened["status"], opened["priority"], opened["title"]) == (
        "open",
        "high",
        "Found a bug",
    )
    assert closed["id"] == opened["id"]
    assert closed["priority"] == "medium", "the urgent label was removed"
    assert closed["metadata"]["github"]["url"] == "https://github.com/octo/repo/issues/1347"
    async with database.reading() as session:
        types = list(
            (
                await session.execute(
                    sa.select(outbox.c.event_type).where(outbox.c.subject == opened["id"])
                )
            ).scalars()
        )
    assert sorted(types) == ["case.created", "case.updated"]


async def test_an_older_event_arriving_late_changes_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    await deliver(
        client, issue_payload("closed", state="closed", updated_at="2026-11-23T12:00:00Z")
    )
    await the_case(database, lambda r: r["status"] == "resolved")
    late = await deliver(client, issue_payload("opened", updated_at="2026-11-23T10:00:00Z"))
    for _ in range(300):
        async with database.reading() as session:
            status = await session.scalar(
                sa.text("SELECT status FROM webhook_events WHERE id = :id"), {"id": late}
            )
        if status == "processed":
            break
        await asyncio.sleep(0.02)

    case = await the_case(database, lambda r: True)
    assert case["status"] == "resolved"


async def test_deliveries_about_one_issue_at_once_make_one_case(
    client: httpx.AsyncClient, database: Database
) -> None:
    ids = await asyncio.gather(
        *(
            deliver(client, issue_payload("labeled", updated_at=f"2026-11-23T10:00:0{n}Z"))
            for n in range(6)
        )
    )
    for _ in range(300):
        async with database.reading() as session:
            done = await session.scalar(
                sa.text("SELECT count(*) FROM webhook_events WHERE status = 'processed'")
            )
        if done == len(ids):
            break
        await asyncio.sleep(0.02)

    await the_case(database, lambda r: True)  # asserts one case, not six
