"""External services in the running service: health, alerts and problem answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import SecretStr
from structlog.testing import capture_logs

from seawall.app import create_app
from seawall.app._state import ServiceState
from seawall.config import ServiceSettings, Settings
from seawall.db import Database
from seawall.testing import EchoServer, FakeNotifications
from tests.conftest import REDIS_URL, need_service


@pytest.fixture(scope="module")
def provider() -> Iterator[EchoServer]:
    with EchoServer() as fake:
        yield fake


@pytest.fixture
def echo(provider: EchoServer) -> Iterator[EchoServer]:
    provider.chaos.reset()
    provider.clear()
    yield provider
    provider.chaos.reset()


def with_services(settings: Settings, **services: ServiceSettings) -> Settings:
    return settings.model_copy(update={"services": services, "health_interval_seconds": 0.05})


async def call_through(request: Request) -> dict[str, Any]:
    """A route of the test app that calls the provider, as a real endpoint would."""
    services = ServiceState.of(request).services
    response = await services[request.path_params["name"]].get("/items/{id}", path_params={"id": 1})
    return dict(response.json())


@pytest.fixture
async def running(
    settings: Settings, database: Database, echo: EchoServer
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    configured = with_services(
        settings,
        catalog=ServiceSettings(
            base_url=echo.url, health_path="/items/health", retry_attempts=1, breaker_failures=2
        ),
        recommendations=ServiceSettings(
            base_url=echo.url + "/optional", critical=False, retry_attempts=1
        ),
    )
    app = create_app(configured, database=database)
    app.add_api_route("/through/{name}", call_through)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, client


async def wait_for(client: httpx.AsyncClient, predicate: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(200):
        response = await client.get("/health/dependencies")
        body = response.json() | {"http_status": response.status_code}
        if predicate(body):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"health never matched: {body}")


async def test_declared_services_are_listed_with_their_breaker(
    running: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = running

    body = await wait_for(client, lambda b: "catalog" in b["dependencies"])

    assert body["status"] == "healthy"
    catalog = body["dependencies"]["catalog"]
    assert (catalog["status"], catalog["critical"], catalog["breaker"], catalog["kind"]) == (
        "healthy",
        True,
        "closed",
        "http",
    )
    assert catalog["details"]["mode"] == "probe"
    assert catalog["latency_ms"] > 0
    assert body["dependencies"]["recommendations"]["critical"] is False


async def test_a_critical_service_down_makes_the_service_unhealthy(
    running: tuple[FastAPI, httpx.AsyncClient], echo: EchoServer
) -> None:
    _, client = running
    echo.chaos.fail_next(1000, status=503, path_prefix="/items")

    body = await wait_for(client, lambda b: b["status"] == "unhealthy")

    assert body["http_status"] == 503
    assert body["dependencies"]["catalog"]["healthy"] is False
    assert "503" in body["dependencies"]["catalog"]["error"]


async def test_a_failing_critical_call_answers_503_with_retry_after(
    running: tuple[FastAPI, httpx.AsyncClient], echo: EchoServer
) -> None:
    _, client = running
    echo.chaos.fail_next(1000, status=503, retry_after=4, path_prefix="/items")

    first = await client.get("/through/catalog")
    await client.get("/through/catalog")
    refused = await client.get("/through/catalog")

    assert first.status_code == 503
    assert first.headers["content-type"] == "application/problem+json"
    assert first.headers["retry-after"] == "4"
    assert "'catalog'" in first.json()["detail"]
    # Two failures open the breaker: now nothing is sent and the answer says when to retry.
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "circuit 'catalog' is open" in refused.json()["detail"]


async def test_an_unusable_answer_is_502(
    running: tuple[FastAPI, httpx.AsyncClient], echo: EchoServer
) -> None:
    _, client = running
    echo.chaos.malformed_next(1, path_prefix="/items")

    response = await client.get("/through/catalog")

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert "malformed JSON" in response.json()["detail"]


async def test_an_optional_service_down_only_degrades(
    running: tuple[FastAPI, httpx.AsyncClient], echo: EchoServer
) -> None:
    _, client = running
    echo.chaos.fail_next(1000, status=500, path_prefix="/optional")
    for _ in range(3):
        await client.get("/through/recommendations")

    body = await wait_for(
        client, lambda b: b["dependencies"]["recommendations"]["status"] == "unhealthy"
    )

    assert (body["status"], body["http_status"]) == ("degraded", 200)


async def test_a_breaker_opening_posts_to_the_ops_webhook(
    settings: Settings, database: Database, echo: EchoServer
) -> None:
    with FakeNotifications() as slack:
        configured = with_services(
            settings,
            catalog=ServiceSettings(base_url=echo.url, retry_attempts=1, breaker_failures=1),
        ).model_copy(
            update={"alert_webhook_url": SecretStr(slack.url + "/services/T000/B000/XXXX")}
        )
        app = create_app(configured, database=database)
        app.add_api_route("/through/{name}", call_through)
        echo.chaos.fail_next(5, status=500, path_prefix="/items")
        with capture_logs() as logs:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t"
                ) as client,
            ):
                await client.get("/through/catalog")
            # Shutting down waits for the alert in flight.

        assert len(slack.slack) == 1
        assert "catalog" in str(slack.slack[0])
        assert any(line["event"] == "dependency_alert" for line in logs)
        # The webhook's path is its secret: no log line may show it.
        assert "XXXX" not in repr(logs)


async def test_redis_is_checked_when_configured(settings: Settings, database: Database) -> None:
    configured = settings.model_copy(update={"redis_url": SecretStr(REDIS_URL)})
    app = create_app(configured, database=database)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        body = (await client.get("/health/dependencies")).json()

    redis = body["dependencies"]["redis"]
    if redis["status"] != "healthy":
        need_service("Redis", redis.get("error", ""))
    assert (redis["critical"], redis["kind"]) == (False, "redis")
