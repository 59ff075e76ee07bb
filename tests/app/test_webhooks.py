"""``POST /webhooks/{provider}`` end to end: verify, dedupe, store, process, park, replay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from seawall.app import create_app
from seawall.app.consumers import webhook_processor
from seawall.config import Settings, WebhookSettings
from seawall.db import Database, outbox, webhook_events
from seawall.webhooks import (
    AwaitingRecord,
    WebhookEvent,
    WebhookHandlers,
    WebhookLog,
)
from tests.app.sqlite_lock import app_beside_a_lock

GITHUB_SECRET = "gh-s3cret"
STRIPE_SECRET = "whsec_stripe_s3cret"
SLACK_SECRET = "slack-s3cret"


def github_delivery(
    payload: dict[str, Any], *, event: str = "issues", delivery: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def stripe_delivery(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = int(time.time())
    signed = f"{stamp}.".encode() + body
    digest = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={digest}"}


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> WebhookHandlers:
    """A fresh registry for the service's processor, so tests do not leak handlers."""
    registry = WebhookHandlers()
    monkeypatch.setattr(webhook_processor, "handlers", registry)
    return registry


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(
        update={
            "webhooks": {
                "github": WebhookSettings(
                    secrets=[SecretStr("old"), SecretStr(GITHUB_SECRET)], rate_limit="10000/second"
                ),
                "stripe": WebhookSettings(secrets=[SecretStr(STRIPE_SECRET)]),
                "slack": WebhookSettings(secrets=[SecretStr(SLACK_SECRET)]),
                "limited": WebhookSettings(
                    secrets=[SecretStr(GITHUB_SECRET)], scheme="github", rate_limit="2/minute"
                ),
                "unconfigured": WebhookSettings(),
            }
        }
    )
    application = create_app(configured, database=database)
    async with application.router.lifespan_context(application):
        yield application


async def stored(database: Database) -> list[dict[str, Any]]:
    async with database.reading() as session:
        rows = (await session.execute(sa.select(webhook_events))).mappings().all()
    return [dict(row) for row in rows]


async def outbox_types(database: Database) -> list[str]:
    async with database.reading() as session:
        return list((await session.execute(sa.select(outbox.c.event_type))).scalars())


async def wait_for_status(database: Database, webhook_id: str, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for _ in range(300):
        rows = [r for r in await stored(database) if r["id"] == webhook_id]
        row = rows[0] if rows else {}
        if row.get("status") == status:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"webhook {webhook_id} never reached {status!r}: {row.get('status')}")


async def test_a_verified_delivery_is_stored_with_its_outbox_event(
    client: httpx.AsyncClient, database: Database, handlers: WebhookHandlers
) -> None:
    body, headers = github_delivery({"action": "opened", "issue": {"number": 1}})

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "accepted"
    [row] = await stored(database)
    assert (row["id"], row["provider"], row["event_type"]) == (
        answer["id"],
        "github",
        "issues.opened",
    )
    assert row["body"] == body
    assert row["delivery_id"] == headers["X-GitHub-Delivery"]
    assert "x-hub-signature-256" not in row["headers"]
    assert row["headers"]["x-github-event"] == "issues"
    assert "webhook.received" in await outbox_types(database)


async def test_an_unknown_or_unconfigured_provider_is_404(client: httpx.AsyncClient) -> None:
    for name in ("nobody", "unconfigured", "GitHub", "x" * 100, "..%2Fadmin"):
        response = await client.post(f"/webhooks/{name}", content=b"{}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: h.pop("X-Hub-Signature-256"),
        lambda h: h.update({"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        lambda h: h.update({"X-Hub-Signature-256": "garbage"}),
    ],
    ids=["unsigned", "wrong", "malformed"],
)
async def test_a_bad_signature_is_401_and_stores_nothing(
    client: httpx.AsyncClient, database: Database, tamper: Any
) -> None:
    body, headers = github_delivery({"action": "opened"})
    tamper(headers)

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert GITHUB_SECRET not in response.text
    assert await stored(database) == []
    assert "webhook.received" not in await outbox_types(database)


async def test_a_tampered_body_is_401(client: httpx.AsyncClient, database: Database) -> None:
    body, headers = github_delivery({"action": "opened", "amount": 1})

    response = await client.post(
        "/webhooks/github", content=body.replace(b"1", b"9"), headers=headers
    )

    assert response.status_code == 401
    assert await stored(database) == []


async def test_a_verified_but_malformed_body_is_400(
    client: httpx.AsyncClient, database: Database
) -> None:
    body = b"{not json"
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "d-1"}

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-webhook")
    assert await stored(database) == []


async def test_an_oversized_body_is_413(client: httpx.AsyncClient, database: Database) -> None:
    body, headers = github_delivery({"blob": "x" * 100_000})

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 413
    assert await stored(database) == []


async def test_a_redelivery_is_a_duplicate(client: httpx.AsyncClient, database: Database) -> None:
    body, headers = github_delivery({"action": "opened"})

    first = await client.post("/webhooks/github", content=body, headers=headers)
    again = await client.post("/webhooks/github", content=body, headers=headers)

    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": first.json()["id"]}
    assert len(await stored(database)) == 1


async def test_concurrent_copies_get_one_accepted_and_duplicates(
    client: httpx.AsyncClient, database: Database
) -> None:
    body, headers = github_delivery({"action": "opened", "issue": {"number": 7}})

    answers = await asyncio.gather(
        *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(6))
    )

    assert [answer.status_code for answer in answers] == [200] * 6
    statuses = sorted(answer.json()["status"] for answer in answers)
    assert statuses == ["accepted"] + ["duplicate"] * 5
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert len(await stored(database)) == 1


async def test_a_locked_database_is_503_for_every_waiting_delivery(
    settings: Settings, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("holds SQLite's write lock")
    configured = settings.model_copy(
        update={"webhooks": {"github": WebhookSettings(secrets=[SecretStr(GITHUB_SECRET)])}}
    )
    deliveries = [github_delivery({"action": "opened", "n": n}) for n in range(3)]
    async with app_beside_a_lock(configured, database_url) as beside:
        await beside.lock()
        answers = await asyncio.gather(
            *(
                beside.client.post("/webhooks/github", content=body, headers=headers)
                for body, headers in deliveries
            )
        )
        beside.unlock()
        after = await beside.client.post(
            "/webhooks/github", content=deliveries[0][0], headers=deliveries[0][1]
        )
        rows = await stored(beside.database)

    assert [answer.status_code for answer in answers] == [503] * 3
    assert {answer.headers["content-type"] for answer in answers} == {"application/problem+json"}
    assert all(answer.headers["retry-after"] == "1" for answer in answers)
    assert after.json()["status"] == "accepted"
    assert len(rows) == 1


async def test_a_captured_github_body_under_a_fresh_id_is_a_duplicate(
    client: httpx.AsyncClient, database: Database
) -> None:
    body, headers = github_delivery({"action": "opened"}, delivery="original")
    await client.post("/webhooks/github", content=body, headers=headers)

    headers["X-GitHub-Delivery"] = "forged-fresh-id"
    replayed = await client.post("/webhooks/github", content=body, headers=headers)

    assert replayed.json()["status"] == "duplicate"
    assert len(await stored(database)) == 1


async def test_a_stripe_event_is_deduplicated_by_its_id(
    client: httpx.AsyncClient, database: Database
) -> None:
    event = {"id": "evt_1", "type": "charge.succeeded", "data": {"object": {"id": "ch_1"}}}
    first = await client.post(
        "/webhooks/stripe", content=stripe_delivery(event)[0], headers=stripe_delivery(event)[1]
    )
    body, headers = stripe_delivery(event)
    again = await client.post("/webhooks/stripe", content=body, headers=headers)

    assert first.json()["status"] == "accepted"
    assert again.json()["status"] == "duplicate"
    [row] = await stored(database)
    assert (row["delivery_id"], row["event_type"]) == ("evt_1", "charge.succeeded")


async def test_slack_url_verification_is_answered(
    client: httpx.AsyncClient, database: Database
) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aB"}).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }

    response = await client.post("/webhooks/slack", content=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aB"}
    assert await stored(database) == []


async def test_a_provider_past_its_rate_limit_gets_429(client: httpx.AsyncClient) -> None:
    answers = []
    for n in range(3):
        body, headers = github_delivery({"n": n})
        answers.append(await client.post("/webhooks/limited", content=body, headers=headers))

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert answers[2].headers["content-type"] == "application/problem+json"


async def test_handlers_process_each_delivery_and_record_the_outcome(
    client: httpx.AsyncClient, database: Database, handlers: WebhookHandlers
) -> None:
    seen: list[str | None] = []

    @handlers.on("github", "issues.*")
    async def on_issue(event: WebhookEvent, session: Any) -> None:
        seen.append(event.type)

    issue = await client.post(
        "/webhooks/github", content=(d := github_delivery({"action": "opened"}))[0], headers=d[1]
    )
    push = await client.post(
        "/webhooks/github", content=(p := github_delivery({}, event="push"))[0], headers=p[1]
    )

    processed = await wait_for_status(database, issue.json()["id"], "processed")
    ignored = await wait_for_status(database, push.json()["id"], "ignored")

    assert seen == ["issues.opened"]
    assert (processed["attempts"], ignored["attempts"]) == (1, 1)


async def test_an_event_before_its_record_is_parked_then_released(
    client: httpx.AsyncClient, database: Database, handlers: WebhookHandlers
) -> None:
    known: set[str] = set()
    applied: list[str] = []

    @handlers.on("stripe", "charge.*")
    async def on_charge(event: WebhookEvent, session: Any) -> None:
        case = event.json()["data"]["object"]["metadata"]["case"]
        if case not in known:
            raise AwaitingRecord(f"case {case} does not exist yet", waiting_for=f"case:{case}")
        applied.append(case)

    body, headers = stripe_delivery(
        {
            "id": "evt_9",
            "type": "charge.succeeded",
            "data": {"object": {"metadata": {"case": "c-1"}}},
        }
    )
    webhook_id = (await client.post("/webhooks/stripe", content=body, headers=headers)).json()["id"]

    parked = await wait_for_status(database, webhook_id, "parked")
    assert (parked["waiting_for"], parked["attempts"]) == ("case:c-1", 1)
    assert parked["next_attempt_at"] is not None
    assert applied == []

    # The case appears: releasing in its transaction sends the delivery back at once.
    known.add("c-1")
    async with database.transaction() as session:
        assert await webhook_processor.release_waiting(session, "case:c-1") == 1

    done = await wait_for_status(database, webhook_id, "processed")
    assert applied == ["c-1"]
    assert done["waiting_for"] is None


async def test_a_replay_skips_what_was_processed_unless_forced(
    client: httpx.AsyncClient, database: Database, handlers: WebhookHandlers
) -> None:
    runs: list[str] = []

    @handlers.on("github")
    async def count(event: WebhookEvent, session: Any) -> None:
        runs.append(event.id)

    body, headers = github_delivery({"action": "edited"})
    webhook_id = (await client.post("/webhooks/github", content=body, headers=headers)).json()["id"]
    await wait_for_status(database, webhook_id, "processed")

    log = WebhookLog(database)
    assert await log.replay([webhook_id]) == 1
    assert await log.replay([webhook_id], force=True) == 1
    for _ in range(300):
        if len(runs) >= 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)

    assert runs == [webhook_id, webhook_id], "the plain replay was skipped, the forced one ran"
    assert await log.replay(["no-such-id"]) == 0


async def test_shuffled_deliveries_with_duplicates_are_processed_once_each(
    client: httpx.AsyncClient, database: Database, handlers: WebhookHandlers
) -> None:
    processed: list[str] = []

    @handlers.on("github")
    async def record(event: WebhookEvent, session: Any) -> None:
        processed.append(event.json()["n"])

    rng = random.Random(7)
    unique = [github_delivery({"n": n}) for n in range(700)]
    deliveries = unique + [rng.choice(unique) for _ in range(300)]  # 1,000, 30 % duplicates
    rng.shuffle(deliveries)

    gate = asyncio.Semaphore(100)

    async def send(body: bytes, headers: dict[str, str]) -> httpx.Response:
        # Like a provider: at most 100 in flight, and a 503 (pool busy) is sent again.
        async with gate:
            for _ in range(20):
                answer = await client.post("/webhooks/github", content=body, headers=headers)
                if answer.status_code != 503:
                    return answer
                await asyncio.sleep(0.05)
            return answer

    answers = await asyncio.gather(*(send(b, h) for b, h in deliveries))

    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == 700
    assert statuses.count("duplicate") == 300
    for _ in range(1500):
        if len(processed) >= 700:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert sorted(processed) == list(range(700)), "each event processed exactly once"


# --- fuzz: whatever a stranger sends, no 5xx and nothing stored ----------------------------

HEADER_NAMES = st.sampled_from(
    [
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "X-GitHub-Event",
        "Stripe-Signature",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "Content-Type",
        "X-Shopify-Hmac-Sha256",
        "webhook-signature",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
    st.builds(lambda n: f"t={n},v1={'a' * 64}", st.integers()),
    st.builds(lambda h: f"sha256={h}", st.text(alphabet="0123456789abcdef", max_size=70)),
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=8,
        ),
    ),
)


@given(
    provider=st.sampled_from(["github", "stripe", "slack", "limited", "nobody"]),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=5),
    body=BODIES,
)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_random_deliveries_get_4xx_and_store_nothing(
    client: httpx.AsyncClient,
    database: Database,
    provider: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    response = await client.post(f"/webhooks/{provider}", content=body, headers=headers)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored(database) == []


# --- the fast path (WebhookFastPath answers before FastAPI's routing) ----------------


async def test_the_fast_path_answers_like_the_route_with_the_request_context(
    client: httpx.AsyncClient,
) -> None:
    body, headers = github_delivery({"action": "opened"})

    answer = await client.post(
        "/webhooks/github", content=body, headers={**headers, "X-Correlation-Id": "fast-path-1"}
    )
    unknown = await client.post("/webhooks/nobody", content=body, headers=headers)

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-correlation-id"] == "fast-path-1"
    assert answer.json()["status"] == "accepted"
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["correlation_id"] == unknown.headers["x-correlation-id"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/webhooks/github", 405), ("POST", "/webhooks/", 404), ("POST", "/webhooks/a/b", 404)],
)
async def test_what_the_fast_path_does_not_take_goes_to_fastapi(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path, content=b"{}")

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_database_error_in_the_fast_path_gets_the_apps_503(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = app.state.seawall.webhooks

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", None, Exception("connection reset"))

    monkeypatch.setattr(receiver, "receive", broken)
    body, headers = github_delivery({"action": "opened"})

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "retry-after" in response.headers


async def test_an_unexpected_error_in_the_fast_path_is_a_logged_500(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = app.state.seawall.webhooks

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(receiver, "receive", broken)
    body, headers = github_delivery({"action": "opened"})

    response = await client.post("/webhooks/github", content=body, headers=headers)

    assert response.status_code == 500
    assert response.json()["type"] == "urn:seawall:problem:internal-error"
