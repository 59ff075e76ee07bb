"""``GET /metrics`` of a running service after real traffic: families, labels and values."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from seawall.app import create_app
from seawall.app._metrics import DatabaseGauges
from seawall.app._state import ServiceState
from seawall.app.consumers import WEBHOOK_CONSUMER, webhook_processor
from seawall.config import ServiceSettings, Settings, WebhookSettings
from seawall.db import Database
from seawall.messaging import Event, Outbox, Unprocessable
from seawall.testing import EchoServer
from seawall.webhooks import WebhookEvent, WebhookHandlers

SECRET = "metrics-s3cret"
NEW_CASE = {"title": "Printer on fire", "priority": "high", "customer_id": "c-1"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, Any]]:
    """Samples by (name, labels), and the families by name."""
    samples: Samples = {}
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, family: str, /, **labels: str) -> float:
    return samples.get((family, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> tuple[Samples, dict[str, Any]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def github_delivery(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }


async def call_through(request: Request) -> dict[str, Any]:
    """A route that calls the fake provider, as a real endpoint would."""
    services = ServiceState.of(request).services
    response = await services[request.path_params["name"]].get("/items/{id}", path_params={"id": 1})
    return dict(response.json())


@pytest.fixture(scope="module")
def provider() -> Iterator[EchoServer]:
    with EchoServer() as fake:
        yield fake


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> WebhookHandlers:
    """A fresh registry for the service's processor, so tests do not leak handlers."""
    registry = WebhookHandlers()
    monkeypatch.setattr(webhook_processor, "handlers", registry)
    return registry


@pytest.fixture
def names() -> dict[str, str]:
    """A service and a provider name of this test alone: process-wide families keep counting."""
    tag = uuid.uuid4().hex[:8]
    return {"service": f"catalog-{tag}", "provider": f"gh-{tag}"}


@pytest.fixture
async def running(
    settings: Settings,
    database: Database,
    provider: EchoServer,
    names: dict[str, str],
    handlers: WebhookHandlers,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    provider.chaos.reset()
    configured = settings.model_copy(
        update={
            "metrics_cache_seconds": 0.0,
            "services": {
                names["service"]: ServiceSettings(
                    base_url=provider.url, retry_attempts=1, breaker_failures=2
                )
            },
            "webhooks": {
                names["provider"]: WebhookSettings(secrets=[SecretStr(SECRET)], scheme="github")
            },
        }
    )
    app = create_app(configured, database=database)
    app.add_api_route("/through/{name}", call_through)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, client
    provider.chaos.reset()


async def scrape_until(client: httpx.AsyncClient, done: Any) -> Samples:
    samples: Samples = {}
    for _ in range(300):
        samples, _families = await scrape(client)
        if done(samples):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError("the metrics never showed the expected values")


async def test_metrics_show_requests_calls_breaker_webhooks_and_dead_letters(
    running: tuple[FastAPI, httpx.AsyncClient],
    provider: EchoServer,
    names: dict[str, str],
    handlers: WebhookHandlers,
) -> None:
    _app, client = running
    service, hook = names["service"], names["provider"]

    async def refuse(event: WebhookEvent, session: Any) -> None:
        raise Unprocessable("this test's handler refuses every delivery")

    handlers.add(hook, "issues.*", refuse)
    before, _ = await scrape(client)

    created = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "m-1"})
    body, headers = github_delivery({"action": "opened", "issue": {"number": 1}})
    accepted = await client.post(f"/webhooks/{hook}", content=body, headers=headers)
    rejected = await client.post(
        f"/webhooks/{hook}", content=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"}
    )
    ok = await client.get(f"/through/{service}")
    provider.chaos.fail_next(1000, status=503, path_prefix="/items")
    failures = [await client.get(f"/through/{service}") for _ in range(3)]
    after = await scrape_until(
        client,
        lambda s: (
            value(s, "seawall_dead_letters", consumer=WEBHOOK_CONSUMER, state="dead") == 1
            and value(s, "seawall_outbox_pending") == 0
        ),
    )

    assert created.status_code == 201
    assert accepted.status_code == 200
    assert rejected.status_code == 401
    assert ok.status_code == 200
    assert [f.status_code for f in failures] == [503, 503, 503]
    # Requests, by route template and status (this app's own registry: exact counts).
    requests = "seawall_http_requests_total"
    assert value(after, requests, method="POST", route="/cases", status="201") == 1
    assert value(after, requests, method="POST", route="/webhooks/{provider}", status="200") == 1
    assert value(after, requests, method="POST", route="/webhooks/{provider}", status="401") == 1
    assert value(after, requests, method="GET", route="/through/{name}", status="503") == 3
    assert (
        value(after, "seawall_http_request_duration_seconds_count", method="POST", route="/cases")
        == 1
    )
    # External service attempts, the breaker and the rejection it caused.
    calls = "seawall_service_calls_total"
    assert value(after, calls, service=service, outcome="ok", attempt="1") == 1
    assert value(after, calls, service=service, outcome="unavailable", attempt="1") == 2
    assert (
        value(after, "seawall_service_call_duration_seconds_count", service=service, outcome="ok")
        == 1
    )
    assert value(after, "seawall_breaker_state", name=service) == 2
    assert value(after, "seawall_breaker_transitions_total", name=service, state="open") == 1
    assert value(after, "seawall_rejections_total", name=service, reason="circuit_open") == 1
    kinds = "seawall_resilience_events_total"
    assert value(after, kinds, policy="circuit_breaker", name=service, kind="breaker_opened") == 1
    # Webhooks by provider and status; the dead letter their handler caused.
    received = "seawall_webhooks_received_total"
    assert value(after, received, provider=hook, status="accepted") == 1
    assert value(after, received, provider=hook, status="invalid_signature") == 1
    assert value(after, "seawall_dead_letters", consumer=WEBHOOK_CONSUMER, state="dead") == 1
    assert value(after, "seawall_webhooks_backlog", provider=hook, status="received") == 1
    # The relay and the consumers (process-wide: compared with before).
    published = "seawall_relay_publishes_total"
    assert (
        value(after, published, outcome="published") - value(before, published, outcome="published")
        >= 2
    )
    messages = "seawall_consumer_messages_total"
    dead = value(after, messages, consumer=WEBHOOK_CONSUMER, outcome="dead_lettered")
    assert dead - value(before, messages, consumer=WEBHOOK_CONSUMER, outcome="dead_lettered") >= 1
    assert value(after, "seawall_consumer_lag_seconds_count", consumer=WEBHOOK_CONSUMER) >= 1
    # The outbox has been drained.
    assert value(after, "seawall_outbox_pending") == 0
    assert value(after, "seawall_outbox_lag_seconds") == 0
    assert value(after, "seawall_outbox_parked") == 0


async def test_every_family_is_seawalls_documented_and_bounded(
    running: tuple[FastAPI, httpx.AsyncClient], names: dict[str, str]
) -> None:
    _app, client = running
    created = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "m-2"})
    case_id = created.json()["id"]
    await client.get(f"/cases/{case_id}")
    await client.get("/no/such/path/12345")

    samples, families = await scrape(client)

    ours = {name for name in families if name.startswith("seawall_")}
    # The default registry's process and Python collectors are the only others.
    assert all(name.startswith(("seawall_", "process_", "python_")) for name in families)
    for name in ours:
        assert families[name].documentation, f"{name} has no help text"
        if families[name].type == "counter":
            assert (
                any(s.name == f"{name}_total" for s in families[name].samples)
                or not families[name].samples
            )
    assert {
        "seawall_http_requests",
        "seawall_http_request_duration_seconds",
        "seawall_outbox_pending",
        "seawall_outbox_lag_seconds",
        "seawall_dead_letters",
        "seawall_webhooks_backlog",
        "seawall_metrics_refresh_failures",
    } <= ours
    labels = {v for (_name, pairs) in samples for _key, v in pairs}
    assert not any(case_id in v for v in labels)
    assert "/cases/{case_id}" in labels
    assert "unmatched" in labels
    assert not any(v.startswith("/no/such") for v in labels)


async def test_sqlite_s_write_turn_is_counted_and_postgresql_has_none(
    running: tuple[FastAPI, httpx.AsyncClient], database: Database
) -> None:
    _app, client = running
    before, _ = await scrape(client)
    created = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "m-turn"})
    assert created.status_code == 201

    after, families = await scrape(client)

    turn = {
        "seawall_db_write_turn_acquisitions",
        "seawall_db_write_turn_wait_seconds",
        "seawall_db_write_turn_held_seconds",
        "seawall_db_write_turn_timeouts",
        "seawall_db_write_turn_held_commits",
    }
    if database.dialect != "sqlite":
        assert not turn & set(families)
        return
    assert turn <= set(families)
    taken = "seawall_db_write_turn_acquisitions_total"
    held = "seawall_db_write_turn_held_seconds_total"
    # The case and its outbox row, then its activity row: each write took a turn.
    assert value(after, taken) >= value(before, taken) + 1
    assert value(after, held) > value(before, held)
    assert value(after, "seawall_db_write_turn_timeouts_total") == 0
    stats = database.write_turn_stats
    assert value(after, taken) <= stats.acquired


async def test_openmetrics_is_answered_when_asked_for(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = running

    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert response.text.count("# EOF") == 1


async def test_an_unknown_method_shares_one_label(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = running

    await client.request("BREW", "/cases")
    samples, _ = await scrape(client)

    methods = {v for (name, pairs) in samples for k, v in pairs if k == "method"}
    assert "BREW" not in methods
    assert "OTHER" in methods


async def test_two_apps_in_one_process_keep_their_own_counts(
    settings: Settings, database: Database
) -> None:
    first, second = create_app(settings, database=database), create_app(settings, database=database)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b") as b,
    ):
        await a.get("/health/live")
        await a.get("/health/live")
        await b.get("/health/live")

        seen_a, _ = await scrape(a)
        seen_b, _ = await scrape(b)

    live = {"method": "GET", "route": "/health/live", "status": "200"}
    assert value(seen_a, "seawall_http_requests_total", **live) == 2
    assert value(seen_b, "seawall_http_requests_total", **live) == 1


async def test_database_gauges_reuse_their_snapshot_until_it_is_old(database: Database) -> None:
    now = [100.0]
    gauges = DatabaseGauges(database, max_age=5.0, clock=lambda: now[0])
    await gauges.refresh()
    async with database.transaction() as session:
        await Outbox().add(
            session, Event.create("case.created", source="/seawall/cases", subject="x")
        )

    await gauges.refresh()
    cached = gauges.snapshot
    now[0] += 5.0
    await gauges.refresh()

    assert cached is not None
    assert cached.outbox_pending == 0
    assert gauges.snapshot is not None
    assert gauges.snapshot.outbox_pending == 1


async def test_a_failed_refresh_keeps_the_last_snapshot_and_is_counted(tmp_path: Any) -> None:
    missing = Database(f"sqlite+aiosqlite:///{tmp_path}/absent/dir/none.db")
    gauges = DatabaseGauges(missing, max_age=0.0)

    await gauges.refresh()
    families = {family.name: family for family in gauges.collect()}

    await missing.dispose()
    assert gauges.snapshot is None
    assert gauges.failures == 1
    assert families["seawall_metrics_refresh_failures"].samples[0].value == 1
