"""The admin API (``/admin``): authentication, scopes, failure limits and every endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr

from seawall.app import create_app
from seawall.auth import ApiKeys
from seawall.config import AdminSettings, ServiceSettings, Settings
from seawall.db import Database, outbox, webhook_events
from seawall.messaging import DeadLetters, Event
from seawall.testing import EchoServer
from tests.app.test_cases import NEW_CASE
from tests.auth.identity import AUDIENCE, ISSUER, FakeIdentityProvider
from tests.conftest import need_service
from tests.messaging.nats_helpers import NATS_SERVER, PrivateNatsServer

PROBLEM = "application/problem+json"


@pytest.fixture
def idp() -> Iterator[FakeIdentityProvider]:
    with FakeIdentityProvider() as server:
        yield server


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def admin_settings(
    settings: Settings, idp: FakeIdentityProvider, echo: EchoServer, rate: str
) -> Settings:
    return settings.model_copy(
        update={
            "admin": AdminSettings(
                jwks_url=idp.jwks_url,
                issuer=ISSUER,
                audience=AUDIENCE,
                failed_auth_rate_limit=rate,
            ),
            "services": {"catalog": ServiceSettings(base_url=echo.url, retry_attempts=1)},
        }
    )


class Admin:
    """A client of a started app, with a read key and an operate key."""

    def __init__(self, client: httpx.AsyncClient, read: str, operate: str) -> None:
        self.client = client
        self.read = {"Authorization": f"Bearer {read}"}
        self.operate = {"Authorization": f"Bearer {operate}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.read, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, headers=self.operate, **kwargs)


@pytest.fixture
def rate() -> str:
    return "1000/minute"


@pytest.fixture
async def started(
    settings: Settings, database: Database, idp: FakeIdentityProvider, echo: EchoServer, rate: str
) -> AsyncIterator[tuple[FastAPI, Admin]]:
    app = create_app(admin_settings(settings, idp, echo, rate), database=database)
    keys = ApiKeys(database)
    _, read = await keys.create("reader", "read")
    _, operate = await keys.create("operator", "operate")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, Admin(client, read.get_secret_value(), operate.get_secret_value())


@pytest.fixture
def admin(started: tuple[FastAPI, Admin]) -> Admin:
    return started[1]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"never happened: {what}")


# -- authentication -------------------------------------------------------------------


async def test_no_credentials_is_401_with_a_problem(admin: Admin) -> None:
    response = await admin.client.get("/admin/breakers")

    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "urn:seawall:problem:unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sw_0123456789ab_" + "a" * 43,
        "Bearer sw_garbage",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 10_000,
        "Bearer \x7f\x7f",
    ],
)
async def test_bad_credentials_are_401_and_never_echoed(admin: Admin, header: str) -> None:
    response = await admin.client.get("/admin/breakers", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert header.split(" ", 1)[-1][:20] not in response.text


async def test_a_revoked_key_is_401(admin: Admin, database: Database) -> None:
    keys = ApiKeys(database)
    record, token = await keys.create("leaver", "operate")
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    assert (await admin.client.get("/admin/breakers", headers=headers)).status_code == 200

    await keys.revoke(record.id)
    response = await admin.client.get("/admin/breakers", headers=headers)

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


async def test_a_read_key_cannot_operate(admin: Admin) -> None:
    response = await admin.client.post("/admin/breakers/catalog/open", headers=admin.read)

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert "operate" in response.json()["detail"]


async def test_a_valid_jwt_with_operate_scope_works(
    admin: Admin, idp: FakeIdentityProvider
) -> None:
    token = idp.token(scope="read operate")

    response = await admin.client.post(
        "/admin/breakers/catalog/reset", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200


async def test_a_jwt_with_read_scope_only_reads(admin: Admin, idp: FakeIdentityProvider) -> None:
    headers = {"Authorization": f"Bearer {idp.token(scope='read')}"}

    read = await admin.client.get("/admin/breakers", headers=headers)
    act = await admin.client.post("/admin/breakers/catalog/reset", headers=headers)

    assert (read.status_code, act.status_code) == (200, 403)


@pytest.mark.parametrize(
    "claims",
    [
        {"expires_in": -3600},
        {"issuer": "https://evil.example.test/"},
        {"audience": "another-api"},
    ],
)
async def test_expired_or_foreign_jwts_are_401(
    admin: Admin, idp: FakeIdentityProvider, claims: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {idp.token(scope='operate', **claims)}"}

    response = await admin.client.get("/admin/breakers", headers=headers)

    assert response.status_code == 401


async def test_a_forged_jwt_is_401(admin: Admin, idp: FakeIdentityProvider) -> None:
    from joserfc.jwk import RSAKey

    intruder = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    headers = {"Authorization": f"Bearer {idp.token(scope='operate', key=intruder)}"}

    response = await admin.client.get("/admin/breakers", headers=headers)

    assert response.status_code == 401


@pytest.mark.parametrize("rate", ["3/minute"])
async def test_failures_are_rate_limited_per_address(admin: Admin) -> None:
    bad = {"Authorization": "Bearer sw_0123456789ab_" + "a" * 43}
    statuses = [
        (await admin.client.get("/admin/breakers", headers=bad)).status_code for _ in range(4)
    ]

    blocked = await admin.client.get("/admin/breakers", headers=admin.read)

    assert statuses == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert blocked.headers["content-type"] == PROBLEM
    assert int(blocked.headers["retry-after"]) >= 1


@pytest.mark.parametrize("rate", ["2/minute"])
async def test_missing_scopes_count_as_failures_too(admin: Admin) -> None:
    statuses = [
        (await admin.client.post("/admin/outbox/requeue", headers=admin.read)).status_code
        for _ in range(3)
    ]

    assert statuses == [403, 403, 429]


async def test_the_public_api_needs_no_credentials(admin: Admin) -> None:
    response = await admin.client.get("/health/live")

    assert response.status_code == 200


async def test_every_admin_route_is_in_the_schema_with_its_security(admin: Admin) -> None:
    schema = (await admin.client.get("/openapi.json")).json()

    admin_paths = {path: ops for path, ops in schema["paths"].items() if path.startswith("/admin")}

    assert "AdminBearer" in schema["components"]["securitySchemes"]
    assert {
        "/admin/dependencies",
        "/admin/breakers",
        "/admin/outbox",
        "/admin/consumers",
        "/admin/dead-letters",
        "/admin/webhooks",
        "/admin/parked",
    } <= set(admin_paths)
    for ops in admin_paths.values():
        for op in ops.values():
            assert op["security"] == [{"AdminBearer": []}]
            assert "401" in op["responses"]


# -- dependencies and breakers --------------------------------------------------------


async def test_dependencies_list_each_with_its_breaker(admin: Admin) -> None:
    response = await admin.get("/admin/dependencies")

    assert response.status_code == 200
    body = response.json()
    names = [item["name"] for item in body["data"]]
    assert names == sorted(names)
    assert {"database", "outbox", "catalog"} <= set(names)
    catalog = next(item for item in body["data"] if item["name"] == "catalog")
    assert catalog["breaker"] == "closed"


async def test_a_forced_open_breaker_is_reported_open_then_closed(admin: Admin) -> None:
    opened = await admin.post("/admin/breakers/catalog/open", json={"duration_seconds": 600})
    listed = await admin.get("/admin/breakers")
    closed = await admin.post("/admin/breakers/catalog/close")

    assert opened.status_code == 200
    assert opened.json()["state"] == "open"
    assert opened.json()["retry_after_seconds"] > 500
    view = listed.json()["data"]
    assert [(b["name"], b["state"]) for b in view] == [("catalog", "open")]
    assert closed.json()["state"] == "closed"


async def test_an_open_breaker_refuses_the_service_calls(started: tuple[FastAPI, Admin]) -> None:
    app, admin = started
    await admin.post("/admin/breakers/catalog/open")

    service = app.state.seawall.services["catalog"]
    assert service.breaker_state() == "open"
    await admin.post("/admin/breakers/catalog/reset")
    assert service.breaker_state() == "closed"


@pytest.mark.parametrize("path", ["/admin/breakers/nope/open", "/admin/breakers/nope/reset"])
async def test_an_unknown_breaker_is_404(admin: Admin, path: str) -> None:
    response = await admin.post(path)

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("body", [{"duration_seconds": -1}, {"duration_seconds": "x"}, [1]])
async def test_a_bad_open_duration_is_422(admin: Admin, body: Any) -> None:
    response = await admin.post("/admin/breakers/catalog/open", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


# -- outbox and consumers -------------------------------------------------------------


async def test_the_outbox_reports_lag_recent_events_and_requeues(
    admin: Admin, database: Database
) -> None:
    event = Event.create("case.created", source="/cases", subject="case-x", data={"title": "t"})
    async with database.transaction() as session:
        await session.execute(
            outbox.insert().values(
                event_id=event.id,
                event_type=event.type,
                source=event.source,
                subject=event.subject,
                aggregate_type="case",
                aggregate_id="case-x",
                payload=event.data,
                occurred_at=event.time,
                created_at=datetime.now(UTC),
                attempts=3,
                parked_at=datetime.now(UTC),
                last_error="refused",
            )
        )

    lag = await admin.get("/admin/outbox")
    recent = await admin.get("/admin/outbox/recent", params={"state": "parked"})
    requeued = await admin.post("/admin/outbox/requeue", json={"seqs": None})

    assert lag.json()["parked"] == 1
    [row] = recent.json()["data"]
    assert (row["event_id"], row["state"], row["last_error"]) == (event.id, "parked", "refused")
    assert requeued.json() == {"action": "requeue", "count": 1}


async def test_recent_outbox_events_page_by_cursor(admin: Admin, database: Database) -> None:
    for n in range(5):
        await admin.client.post(
            "/cases",
            json={**NEW_CASE, "title": f"case {n}"},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )

    first = (await admin.get("/admin/outbox/recent", params={"limit": 3})).json()
    second = (
        await admin.get(
            "/admin/outbox/recent",
            params={"limit": 3, "cursor": first["pagination"]["next_cursor"]},
        )
    ).json()

    seqs = [row["seq"] for row in first["data"] + second["data"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 5
    assert second["pagination"]["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["!!!", "W10", "WyJ4Il0", "x" * 201])
async def test_a_forged_cursor_is_400_or_422(admin: Admin, cursor: str) -> None:
    response = await admin.get("/admin/dead-letters", params={"cursor": cursor})

    assert response.status_code in {400, 422}
    assert response.headers["content-type"] == PROBLEM


def _cursor(values: list[Any]) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/admin/dead-letters", _cursor([10**23])),
        ("/admin/outbox/recent", _cursor([10**23])),
        ("/admin/webhooks", _cursor(["2026-01-01T00:00:00+00:00", "\ud800"])),
    ],
    ids=["huge-id", "huge-seq", "lone-surrogate"],
)
async def test_a_cursor_that_cannot_be_bound_is_400(admin: Admin, path: str, cursor: str) -> None:
    response = await admin.get(path, params={"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["type"] == "urn:seawall:problem:invalid-cursor"


async def test_consumers_report_lag_and_dead_letters(admin: Admin) -> None:
    response = await admin.get("/admin/consumers")

    assert response.status_code == 200
    data = {item["durable"]: item for item in response.json()["data"]}
    assert {"activity__from_cases", "webhooks__processor"} <= set(data)
    activity = data["activity__from_cases"]
    assert (activity["bus"], activity["running_here"], activity["dead_letters"]) == (
        "inprocess",
        True,
        0,
    )
    assert activity["pending"] >= 0


# -- dead letters ---------------------------------------------------------------------


async def dead_letter(database: Database, *, consumer: str = "activity__from_cases") -> int:
    event = Event.create(
        "case.created", source="/cases", subject=f"case-{uuid.uuid4()}", data={"title": "t"}
    )
    letters = DeadLetters(database)
    async with database.transaction() as session:
        await letters.record(
            session,
            consumer=consumer,
            message_id=event.id,
            subject="seawall.cases.case.created",
            event_type=event.type,
            body=event.model_dump_json(),
            error="RuntimeError: boom",
            attempt=5,
        )
    [found] = [x for x in await letters.list(state=None) if x.message_id == event.id]
    return found.id


async def test_a_replayed_dead_letter_leaves_the_list(admin: Admin, database: Database) -> None:
    letter = await dead_letter(database)
    listed = (await admin.get("/admin/dead-letters")).json()["data"]
    shown = await admin.get(f"/admin/dead-letters/{letter}")

    replayed = await admin.post(f"/admin/dead-letters/{letter}/replay")

    assert [item["id"] for item in listed] == [letter]
    assert shown.json()["body"]["type"] == "case.created"
    assert shown.json()["history"][0]["error"] == "RuntimeError: boom"
    assert replayed.status_code == 202
    assert (await admin.get("/admin/dead-letters")).json()["data"] == []

    async def done() -> bool:
        body = (await admin.get(f"/admin/dead-letters/{letter}")).json()
        return bool(body["state"] == "replayed")

    await eventually(done, "the worker replays the dead letter")
    again = await admin.post(f"/admin/dead-letters/{letter}/replay")
    assert again.status_code == 409


async def test_dead_letters_are_replayed_and_purged_in_bulk(
    admin: Admin, database: Database
) -> None:
    first = await dead_letter(database)
    second = await dead_letter(database, consumer="nobody-runs-this")

    replay = await admin.post("/admin/dead-letters/replay", json={"consumer": "nobody-runs-this"})
    purge = await admin.post("/admin/dead-letters/purge", json={"ids": [first]})
    deleted = await admin.client.delete(f"/admin/dead-letters/{second}", headers=admin.operate)

    assert replay.json() == {"action": "replay", "count": 1}
    assert purge.json() == {"action": "purge", "count": 1}
    assert deleted.status_code == 409  # waiting for its replay
    assert (await admin.get(f"/admin/dead-letters/{first}")).status_code == 404


@pytest.mark.parametrize(
    "body", [{}, {"ids": []}, {"ids": ["x"]}, {"consumer": "a\x00b"}, {"all": "maybe"}]
)
async def test_a_bulk_action_without_a_valid_selection_is_422(admin: Admin, body: Any) -> None:
    response = await admin.post("/admin/dead-letters/purge", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_a_bulk_action_needs_a_json_body(admin: Admin) -> None:
    response = await admin.post("/admin/dead-letters/purge", content=b"all=true")

    assert response.status_code in {415, 422}
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("path", ["/admin/dead-letters/999999", "/admin/dead-letters/0"])
async def test_an_unknown_dead_letter_is_404_or_422(admin: Admin, path: str) -> None:
    response = await admin.get(path)

    assert response.status_code in {404, 422}
    assert response.headers["content-type"] == PROBLEM


# -- webhooks and parked deliveries ---------------------------------------------------


async def stored_webhook(
    database: Database, *, status: str, provider: str = "acme", minutes_ago: int = 0
) -> str:
    webhook_id = str(uuid.uuid4())
    body = b'{"hello": "world"}'
    async with database.transaction() as session:
        await session.execute(
            webhook_events.insert().values(
                id=webhook_id,
                provider=provider,
                delivery_id=webhook_id,
                event_type="thing.happened",
                body=body,
                body_sha256=hashlib.sha256(body).hexdigest(),
                headers={"content-type": "application/json"},
                status=status,
                attempts=1,
                last_error="waiting" if status == "parked" else None,
                received_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
                next_attempt_at=datetime.now(UTC) + timedelta(hours=1)
                if status == "parked"
                else None,
                waiting_for="case:123" if status == "parked" else None,
            )
        )
    return webhook_id


async def webhook_status(admin: Admin, webhook_id: str) -> str:
    return str((await admin.get(f"/admin/webhooks/{webhook_id}")).json()["status"])


async def test_webhooks_are_listed_filtered_and_paged(admin: Admin, database: Database) -> None:
    ids = [await stored_webhook(database, status="failed", minutes_ago=n) for n in range(3)]
    other = await stored_webhook(database, status="processed", provider="other")

    failed = (await admin.get("/admin/webhooks", params={"status": "failed", "limit": 2})).json()
    rest = (
        await admin.get(
            "/admin/webhooks",
            params={"status": "failed", "limit": 2, "cursor": failed["pagination"]["next_cursor"]},
        )
    ).json()
    by_provider = (await admin.get("/admin/webhooks", params={"provider": "other"})).json()
    by_type = (await admin.get("/admin/webhooks", params={"type": "thing.*"})).json()
    shown = (await admin.get(f"/admin/webhooks/{ids[0]}")).json()

    assert [w["id"] for w in failed["data"] + rest["data"]] == ids
    assert rest["pagination"]["next_cursor"] is None
    assert [w["id"] for w in by_provider["data"]] == [other]
    assert len(by_type["data"]) == 4
    assert shown["body"] == {"hello": "world"}
    assert "body" not in failed["data"][0]


async def test_a_replayed_webhook_is_processed_again(admin: Admin, database: Database) -> None:
    webhook_id = await stored_webhook(database, status="failed")

    response = await admin.post(f"/admin/webhooks/{webhook_id}/replay", json={"force": False})

    assert response.status_code == 202

    async def ignored() -> bool:  # no handler is registered for "acme"
        return await webhook_status(admin, webhook_id) == "ignored"

    await eventually(ignored, "the replay is processed")


async def test_a_bulk_webhook_replay_needs_a_filter(admin: Admin, database: Database) -> None:
    await stored_webhook(database, status="failed")

    empty = await admin.post("/admin/webhooks/replay", json={})
    chosen = await admin.post("/admin/webhooks/replay", json={"provider": "acme"})

    assert empty.status_code == 400
    assert empty.headers["content-type"] == PROBLEM
    assert chosen.json() == {"action": "replay", "count": 1}


async def test_a_released_parked_webhook_leaves_the_parked_list(
    admin: Admin, database: Database
) -> None:
    webhook_id = await stored_webhook(database, status="parked")
    parked = (await admin.get("/admin/parked")).json()["data"]

    released = await admin.post(f"/admin/parked/{webhook_id}/release")

    assert [(p["id"], p["waiting_for"]) for p in parked] == [(webhook_id, "case:123")]
    assert released.json() == {"action": "release", "count": 1}

    async def gone() -> bool:
        return not (await admin.get("/admin/parked")).json()["data"]

    await eventually(gone, "the released delivery is processed")
    assert await webhook_status(admin, webhook_id) == "ignored"
    assert (await admin.post(f"/admin/parked/{webhook_id}/release")).status_code == 409


async def test_parked_webhooks_are_released_by_what_they_wait_for(
    admin: Admin, database: Database
) -> None:
    await stored_webhook(database, status="parked")

    nothing = await admin.post("/admin/parked/release", json={"waiting_for": "case:999"})
    released = await admin.post("/admin/parked/release", json={"waiting_for": "case:123"})

    assert nothing.json()["count"] == 0
    assert released.json()["count"] == 1


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/admin/webhooks", {"status": "bogus"}),
        ("/admin/webhooks", {"since": "yesterday"}),
        ("/admin/webhooks", {"limit": "0"}),
        ("/admin/webhooks", {"provider": "a\x00b"}),
        ("/admin/parked", {"limit": "501"}),
    ],
)
async def test_bad_filters_are_422(admin: Admin, path: str, params: dict[str, str]) -> None:
    response = await admin.get(path, params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_an_unknown_webhook_is_404(admin: Admin) -> None:
    shown = await admin.get("/admin/webhooks/nope")
    replayed = await admin.post("/admin/webhooks/nope/replay")
    released = await admin.post("/admin/parked/nope/release")

    assert (shown.status_code, replayed.status_code, released.status_code) == (404, 404, 404)


async def test_actions_write_nothing_when_refused(admin: Admin, database: Database) -> None:
    webhook_id = await stored_webhook(database, status="parked")

    await admin.client.post(f"/admin/parked/{webhook_id}/release", headers=admin.read)

    async with database.reading() as session:
        replays = await session.scalar(
            sa.select(sa.func.count()).where(outbox.c.event_type == "webhook.replayed")
        )
    assert replays == 0


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNatsServer]:
    """A nats-server of this test's own: the service's stream captures ``seawall.>``."""
    if NATS_SERVER is None:
        need_service("nats-server", "the binary is not installed")
    assert NATS_SERVER is not None
    server = PrivateNatsServer(NATS_SERVER, tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


async def test_consumers_report_jetstream_lag_per_durable(
    settings: Settings,
    database: Database,
    idp: FakeIdentityProvider,
    echo: EchoServer,
    private_nats: PrivateNatsServer,
) -> None:
    configured = admin_settings(settings, idp, echo, "1000/minute").model_copy(
        update={"nats_url": SecretStr(private_nats.url)}
    )
    app = create_app(configured, database=database)
    _, key = await ApiKeys(database).create("reader", "read")
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):

        async def known() -> bool:
            body = (await client.get("/admin/consumers", headers=headers)).json()
            return all(item["pending"] is not None for item in body["data"])

        await eventually(known, "the worker subscribes on JetStream")
        body = (await client.get("/admin/consumers", headers=headers)).json()

    activity = next(i for i in body["data"] if i["durable"] == "activity__from_cases")
    assert (activity["bus"], activity["running_here"], activity["error"]) == ("nats", True, None)
    assert activity["pending"] >= 0
    assert activity["ack_pending"] >= 0


HOSTILE_PARAMS = ["0", "-1", "99999999999999999999999", "a%00b", "x" * 300, "%C3%A9%F0%9F%92%A5"]
HOSTILE_BODIES = [b"{", b"[]", b'{"ids": [1e309]}', b'{"ids": "x"}', b"\xff\xfe", b"null"]


async def test_no_admin_operation_fails_with_a_server_error_on_hostile_input(
    admin: Admin,
) -> None:
    schema = (await admin.client.get("/openapi.json")).json()
    operations = [
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        if path.startswith("/admin")
        for method in ops
    ]
    answers = []

    for method, path in operations:
        for value in HOSTILE_PARAMS:
            url = re.sub(r"\{[^}]+\}", value, path)
            for body in HOSTILE_BODIES if method == "POST" else [None]:
                response = await admin.client.request(
                    method,
                    url,
                    content=body,
                    params={"cursor": value, "limit": value},
                    headers={**admin.operate, "Content-Type": "application/json"},
                )
                answers.append((method, url, response.status_code, response.headers))

    assert len(operations) >= 20
    assert [a[:3] for a in answers if a[2] >= 500] == []
    assert all(h["content-type"] == PROBLEM for _, _, status, h in answers if status >= 400)
