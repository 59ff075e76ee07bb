"""The Cases API over ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from seawall.config import Settings
from seawall.db import Database, cases, outbox
from seawall.idempotency import request_fingerprint
from tests.app.sqlite_lock import app_beside_a_lock

NEW_CASE = {"title": "Refund not received", "priority": "high", "customer_id": "cus_1"}


async def count(database: Database, table: sa.Table) -> int:
    async with database.sessions() as session:
        return int(
            (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        )


async def events(database: Database) -> list[dict[str, Any]]:
    async with database.sessions() as session:
        rows = (await session.execute(sa.select(outbox).order_by(outbox.c.seq))).mappings()
        return [dict(row) for row in rows]


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/cases", json={**NEW_CASE, **fields}, headers=key())
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:seawall:problem:{slug}"
    assert body["title"]
    return body


# --- creating ---------------------------------------------------------------------------------


async def test_create_writes_the_case_and_its_event_in_one_go(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = {**key(), "X-Correlation-Id": "corr-123", "X-Causation-Id": "evt-9"}

    response = await client.post("/cases", json=NEW_CASE, headers=headers)

    case = response.json()
    assert response.status_code == 201
    assert response.headers["location"] == f"/cases/{case['id']}"
    assert response.headers["etag"] == '"v1"'
    assert response.headers["x-correlation-id"] == "corr-123"
    assert case["status"] == "open"
    assert case["priority"] == "high"
    assert case["version"] == 1
    assert case["metadata"] == {}
    [event] = await events(database)
    assert event["event_type"] == "case.created"
    assert event["aggregate_type"] == "case"
    assert event["aggregate_id"] == case["id"]
    assert event["subject"] == case["id"]
    assert event["payload"]["title"] == "Refund not received"
    assert event["correlation_id"] == "corr-123"
    assert event["causation_id"] == "evt-9"
    # The service's relay runs in this fixture, so the row may already be published.


async def test_create_keeps_optional_fields_and_metadata(client: httpx.AsyncClient) -> None:
    case = await create(client, external_id="crm-7", metadata={"channel": "email", "n": [1, 2]})

    assert case["external_id"] == "crm-7"
    assert case["customer_id"] == "cus_1"
    assert case["metadata"] == {"channel": "email", "n": [1, 2]}


async def test_create_without_idempotency_key_is_400_and_writes_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    response = await client.post("/cases", json=NEW_CASE)

    assert_problem(response, 400, "idempotency-key-required")
    assert await count(database, cases) == 0
    assert await count(database, outbox) == 0


async def test_create_accepts_the_x_idempotency_key_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/cases", json=NEW_CASE, headers={"X-Idempotency-Key": "x-1"})

    assert response.status_code == 201


async def test_two_different_key_headers_are_refused(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "a", "X-Idempotency-Key": "b"}

    response = await client.post("/cases", json=NEW_CASE, headers=headers)

    assert_problem(response, 400, "idempotency-key-conflict")


async def test_invalid_idempotency_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "x" * 256})

    assert_problem(response, 400, "idempotency-key-invalid")


# --- idempotency through the API --------------------------------------------------------------


async def test_repeat_with_same_body_replays_the_first_response(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = key()
    first = await client.post("/cases", json=NEW_CASE, headers=headers)
    reordered = json.dumps(dict(reversed(list(NEW_CASE.items()))), indent=2)

    again = await client.post(
        "/cases", content=reordered, headers={**headers, "Content-Type": "application/json"}
    )

    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert "idempotent-replayed" not in first.headers
    assert await count(database, cases) == 1
    assert await count(database, outbox) == 1


async def test_repeat_with_another_body_is_422_and_writes_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = key()
    await client.post("/cases", json=NEW_CASE, headers=headers)

    response = await client.post("/cases", json={**NEW_CASE, "title": "Other"}, headers=headers)

    assert_problem(response, 422, "idempotency-key-reused")
    assert await count(database, cases) == 1


async def test_repeat_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient, app: FastAPI, database: Database
) -> None:
    body = json.dumps(NEW_CASE).encode()
    fingerprint = request_fingerprint("POST", "/cases", body)
    await app.state.seawall.idempotency.claim("POST /cases", "busy", fingerprint)

    response = await client.post(
        "/cases",
        content=body,
        headers={"Idempotency-Key": "busy", "Content-Type": "application/json"},
    )

    assert_problem(response, 409, "idempotency-key-in-flight")
    assert response.headers["retry-after"] == "1"
    assert await count(database, cases) == 0


async def test_concurrent_requests_with_one_key_create_exactly_one_case(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = key()

    responses = await asyncio.gather(
        *(client.post("/cases", json=NEW_CASE, headers=headers) for _ in range(8))
    )

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert await count(database, cases) == 1
    assert await count(database, outbox) == 1


async def test_a_key_with_a_failed_request_body_stays_unused(client: httpx.AsyncClient) -> None:
    headers = key()
    await client.post("/cases", json={**NEW_CASE, "priority": "urgent"}, headers=headers)

    response = await client.post("/cases", json=NEW_CASE, headers=headers)

    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "priority": "urgent"}, "body.priority"),
        ({"title": "x"}, "body.priority"),
        ({"title": 5, "priority": "low"}, "body.title"),
        ({"title": "   ", "priority": "low"}, "body.title"),
        ({"title": "x" * 201, "priority": "low"}, "body.title"),
        ({"title": "x", "priority": "low", "metadata": [1]}, "body.metadata"),
        ({"title": "x", "priority": "low", "status": "closed"}, "body.status"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, database: Database, body: Any, field: str
) -> None:
    response = await client.post("/cases", json=body, headers=key())

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert await count(database, cases) == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient, database: Database) -> None:
    response = await client.post(
        "/cases",
        content=b'{"title": "x", "priority": ',
        headers={**key(), "Content-Type": "application/json"},
    )

    problem = assert_problem(response, 400, "malformed-json")
    assert problem["errors"][0]["field"] == "body"
    assert await count(database, cases) == 0


async def test_body_over_the_limit_is_413_by_content_length(
    client: httpx.AsyncClient, database: Database
) -> None:
    big = {**NEW_CASE, "metadata": {"blob": "x" * 70_000}}

    response = await client.post("/cases", json=big, headers=key())

    assert_problem(response, 413, "payload-too-large")
    assert response.headers["x-correlation-id"]
    assert await count(database, cases) == 0


async def test_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, database: Database
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "x", "priority": "low", "metadata": {"blob": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}}'

    response = await client.post(
        "/cases", content=chunks(), headers={**key(), "Content-Type": "application/json"}
    )

    assert_problem(response, 413, "payload-too-large")
    assert await count(database, cases) == 0


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing-here")
    wrong_method = await client.delete("/cases")

    assert_problem(missing, 404, "not-found")
    assert_problem(wrong_method, 405, "method-not-allowed")


# --- listing ----------------------------------------------------------------------------------


async def test_list_pages_newest_first_with_totals(client: httpx.AsyncClient) -> None:
    made = [await create(client, title=f"case {n}") for n in range(5)]

    first = (await client.get("/cases", params={"page": 1, "limit": 2})).json()
    last = (await client.get("/cases", params={"page": 3, "limit": 2})).json()
    beyond = (await client.get("/cases", params={"page": 9, "limit": 2})).json()

    assert [c["id"] for c in first["data"]] == [made[4]["id"], made[3]["id"]]
    assert first["pagination"] == {"page": 1, "limit": 2, "total": 5, "totalPages": 3}
    assert [c["id"] for c in last["data"]] == [made[0]["id"]]
    assert beyond["data"] == []


async def test_list_defaults_to_the_first_page_of_twenty(client: httpx.AsyncClient) -> None:
    await create(client)

    body = (await client.get("/cases")).json()

    assert body["pagination"] == {"page": 1, "limit": 20, "total": 1, "totalPages": 1}


async def test_list_filters_by_status_and_priority(client: httpx.AsyncClient) -> None:
    low = await create(client, priority="low")
    high = await create(client, priority="high")
    await client.patch(f"/cases/{high['id']}", json={"status": "in_progress"})

    by_priority = (await client.get("/cases", params={"priority": "low"})).json()
    by_status = (await client.get("/cases", params={"status": "in_progress"})).json()
    both = (await client.get("/cases", params={"status": "open", "priority": "high"})).json()

    assert [c["id"] for c in by_priority["data"]] == [low["id"]]
    assert [c["id"] for c in by_status["data"]] == [high["id"]]
    assert both["data"] == []


async def test_cursor_mode_walks_every_case_once(client: httpx.AsyncClient) -> None:
    made = [await create(client, title=f"case {n}") for n in range(7)]
    seen: list[str] = []
    cursor = ""

    while True:
        body = (await client.get("/cases", params={"cursor": cursor, "limit": 3})).json()
        seen += [c["id"] for c in body["data"]]
        assert set(body["pagination"]) == {"limit", "next_cursor"}
        if body["pagination"]["next_cursor"] is None:
            break
        cursor = body["pagination"]["next_cursor"]

    assert seen == [c["id"] for c in reversed(made)]


async def test_cursor_mode_applies_filters(client: httpx.AsyncClient) -> None:
    for n in range(4):
        await create(client, priority="low" if n % 2 else "high")
    params = {"limit": 1, "priority": "low"}

    first = (await client.get("/cases", params={**params, "cursor": ""})).json()
    cursor = first["pagination"]["next_cursor"]
    second = (await client.get("/cases", params={**params, "cursor": cursor})).json()

    assert [c["priority"] for c in first["data"] + second["data"]] == ["low", "low"]
    assert second["pagination"]["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"limit": 0}, 422, "query.limit"),
        ({"limit": 101}, 422, "query.limit"),
        ({"page": 0}, 422, "query.page"),
        ({"page": "two"}, 422, "query.page"),
        ({"page": 10**30}, 422, "query.page"),
        ({"status": "lost"}, 422, "query.status"),
        ({"priority": "urgent"}, 422, "query.priority"),
        ({"cursor": "not-a-cursor"}, 400, "query.cursor"),
        ({"cursor": "W10"}, 400, "query.cursor"),
        ({"cursor": "x" * 300}, 422, "query.cursor"),
        ({"cursor": "", "page": 1}, 400, "query.cursor"),
    ],
)
async def test_bad_paging_is_a_4xx_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], status: int, field: str
) -> None:
    response = await client.get("/cases", params=params)

    problem = response.json()
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {error["field"] for error in problem["errors"]}


# --- reading and changing ---------------------------------------------------------------------


async def test_read_returns_the_case_with_its_etag(client: httpx.AsyncClient) -> None:
    made = await create(client)

    response = await client.get(f"/cases/{made['id']}")

    assert response.status_code == 200
    assert response.json() == made
    assert response.headers["etag"] == '"v1"'


async def test_read_with_a_matching_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    made = await create(client)

    response = await client.get(f"/cases/{made['id']}", headers={"If-None-Match": '"v1"'})

    assert response.status_code == 304


async def test_unknown_case_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/cases/{uuid.uuid4()}")

    assert_problem(response, 404, "case-not-found")


async def test_patch_changes_status_and_writes_an_event(
    client: httpx.AsyncClient, database: Database
) -> None:
    made = await create(client)

    response = await client.patch(
        f"/cases/{made['id']}",
        json={"status": "in_progress", "priority": "low"},
        headers={"If-Match": '"v1"', "X-Correlation-Id": "patch-1"},
    )

    case = response.json()
    assert response.status_code == 200
    assert response.headers["etag"] == '"v2"'
    assert (case["status"], case["priority"], case["version"]) == ("in_progress", "low", 2)
    assert case["updated_at"] > made["updated_at"]
    updated = (await events(database))[-1]
    assert updated["event_type"] == "case.updated"
    assert updated["correlation_id"] == "patch-1"
    assert updated["payload"]["changes"] == {
        "status": {"from": "open", "to": "in_progress"},
        "priority": {"from": "high", "to": "low"},
    }


async def test_patch_with_a_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, database: Database
) -> None:
    made = await create(client)
    await client.patch(f"/cases/{made['id']}", json={"priority": "low"})

    response = await client.patch(
        f"/cases/{made['id']}", json={"status": "closed"}, headers={"If-Match": '"v1"'}
    )

    assert_problem(response, 412, "stale-version")
    assert response.headers["etag"] == '"v2"'
    assert (await client.get(f"/cases/{made['id']}")).json()["status"] == "open"
    assert await count(database, outbox) == 2


async def test_patch_accepts_weak_and_wildcard_etags(client: httpx.AsyncClient) -> None:
    made = await create(client)

    weak = await client.patch(
        f"/cases/{made['id']}", json={"priority": "low"}, headers={"If-Match": 'W/"v1"'}
    )
    star = await client.patch(
        f"/cases/{made['id']}", json={"priority": "medium"}, headers={"If-Match": "*"}
    )

    assert weak.status_code == 200
    assert star.status_code == 200


async def test_closed_case_cannot_be_reopened(client: httpx.AsyncClient) -> None:
    made = await create(client)
    await client.patch(f"/cases/{made['id']}", json={"status": "closed"})

    response = await client.patch(f"/cases/{made['id']}", json={"status": "open"})

    problem = assert_problem(response, 409, "invalid-transition")
    assert problem["errors"][0]["field"] == "body.status"


async def test_patch_without_a_change_writes_no_event(
    client: httpx.AsyncClient, database: Database
) -> None:
    made = await create(client)

    response = await client.patch(f"/cases/{made['id']}", json={"priority": "high"})

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert await count(database, outbox) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body"), ({"title": "new"}, "body.title"), ({"status": "lost"}, "body.status")],
)
async def test_invalid_patch_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    made = await create(client)

    response = await client.patch(f"/cases/{made['id']}", json=body)

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}


async def test_patch_of_unknown_case_is_404(client: httpx.AsyncClient) -> None:
    response = await client.patch(f"/cases/{uuid.uuid4()}", json={"status": "closed"})

    assert_problem(response, 404, "case-not-found")


async def test_patch_with_an_idempotency_key_replays(
    client: httpx.AsyncClient, database: Database
) -> None:
    made = await create(client)
    headers = key()
    first = await client.patch(f"/cases/{made['id']}", json={"priority": "low"}, headers=headers)

    again = await client.patch(f"/cases/{made['id']}", json={"priority": "low"}, headers=headers)

    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await count(database, outbox) == 2


async def test_reads_answer_while_another_connection_holds_sqlites_write_lock(
    client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("holds SQLite's write lock")
    case = await create(client)

    # A second app on the same file: a read that asked for the write lock would
    # fail fast with 503.
    async with app_beside_a_lock(settings, database_url) as beside:
        await beside.lock()
        try:
            answers = [
                await beside.client.get(path)
                for path in (
                    "/cases",
                    f"/cases/{case['id']}",
                    f"/cases/{case['id']}/activity",
                    f"/cases/{case['id']}/documents",
                    "/documents/no-such-document/metadata",
                )
            ]
        finally:
            beside.unlock()

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 404]


# --- correlation, health, docs ----------------------------------------------------------------


async def test_correlation_id_is_made_when_missing_or_malformed(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/health/live")
    hostile = await client.get("/health/live", headers={"X-Correlation-Id": "a b\x7f<script>"})

    assert uuid.UUID(missing.headers["x-correlation-id"]).version == 4
    assert uuid.UUID(hostile.headers["x-correlation-id"]).version == 4


async def test_problems_carry_the_correlation_id(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/cases/{uuid.uuid4()}", headers={"X-Correlation-Id": "c-42"})

    assert response.json()["correlation_id"] == "c-42"


async def test_health_endpoints_answer(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")

    assert live.json() == {"status": "ok", "checks": {}}
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["status"] == "ok"


async def test_openapi_describes_the_cases_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()

    assert {"/cases", "/cases/{case_id}", "/health/live", "/health/ready"} <= set(spec["paths"])
    assert (await client.get("/docs")).status_code == 200
