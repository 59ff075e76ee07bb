"""OpenTelemetry spans of the running service, caught by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from seawall.app import create_app
from seawall.app._state import ServiceState
from seawall.config import ServiceSettings, Settings, TracingSettings
from seawall.db import Database
from seawall.observability import (
    CORRELATION_ATTRIBUTE,
    disable_tracing,
    enable_tracing,
    tracing_enabled,
)
from seawall.testing import EchoServer

NEW_CASE = {"title": "Printer on fire", "priority": "high", "customer_id": "c-1"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    enable_tracing(provider)
    yield memory
    disable_tracing()
    provider.shutdown()


@pytest.fixture(scope="module")
def provider() -> Iterator[EchoServer]:
    with EchoServer() as fake:
        yield fake


async def call_through(request: Request) -> dict[str, Any]:
    services = ServiceState.of(request).services
    response = await services["catalog"].get("/items/{id}", path_params={"id": 7})
    return dict(response.json())


@pytest.fixture
async def client(
    settings: Settings, database: Database, provider: EchoServer, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    provider.clear()
    configured = settings.model_copy(
        update={"services": {"catalog": ServiceSettings(base_url=provider.url, retry_attempts=1)}}
    )
    app: FastAPI = create_app(configured, database=database)
    app.add_api_route("/through", call_through)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        yield c


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def spans_named(
    exporter: InMemorySpanExporter, name: str, *, group: str | None = None
) -> list[ReadableSpan]:
    for _ in range(1000):
        found = [
            s
            for s in named(exporter, name)
            if group is None or (s.attributes or {}).get("messaging.consumer.group.name") == group
        ]
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no span named {name!r}")


async def test_an_incoming_request_continues_the_callers_trace(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "Idempotency-Key": "t-1"}

    response = await client.post("/cases", json=NEW_CASE, headers=headers)

    [server] = named(exporter, "POST /cases")
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/cases"
    assert server.attributes["http.response.status_code"] == response.status_code
    assert server.attributes[CORRELATION_ATTRIBUTE] == response.headers["X-Correlation-Id"]


async def test_an_outgoing_call_is_a_client_span_whose_traceparent_is_sent(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, provider: EchoServer
) -> None:
    response = await client.get("/through")

    [server] = named(exporter, "GET /through")
    [call] = named(exporter, "GET /items/{id}")
    sent = provider.requests[-1].headers["traceparent"]
    assert response.status_code == 200
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None
    assert call.parent.span_id == server.context.span_id
    assert sent.startswith(f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-")
    assert call.attributes is not None
    assert call.attributes["seawall.service"] == "catalog"
    assert call.attributes[CORRELATION_ATTRIBUTE] == response.headers["X-Correlation-Id"]


async def test_the_consumer_span_continues_the_relays_publish_through_the_event(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    response = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "t-2"})

    published = await spans_named(exporter, "publish case.created")
    consumed = await spans_named(exporter, "process case.created", group="activity__from_cases")

    correlation = response.headers["X-Correlation-Id"]
    [publish] = [
        s for s in published if (s.attributes or {}).get(CORRELATION_ATTRIBUTE) == correlation
    ]
    assert publish.kind is SpanKind.PRODUCER
    activity = [
        s
        for s in consumed
        if s.attributes and s.attributes["messaging.consumer.group.name"] == "activity__from_cases"
    ]
    assert activity, "the activity consumer left no span"
    for span in activity:
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == publish.context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == publish.context.span_id
        assert span.attributes is not None
        assert span.attributes[CORRELATION_ATTRIBUTE] == correlation
    assert publish.attributes is not None
    assert publish.attributes[CORRELATION_ATTRIBUTE] == correlation


async def test_the_setting_turns_tracing_on_for_the_apps_lifetime(
    settings: Settings, database: Database
) -> None:
    configured = settings.model_copy(
        update={"tracing": TracingSettings(enabled=True, exporter="console")}
    )
    app = create_app(configured, database=database)

    async with app.router.lifespan_context(app):
        during = tracing_enabled()
    after = tracing_enabled()

    assert during is True
    assert after is False


def test_without_the_extra_the_service_runs_and_refuses_to_trace(tmp_path: Any) -> None:
    # The SDK and exporter made unimportable, as on an install without seawall[otel]
    # (FastAPI itself depends on opentelemetry-api, so the API stays).
    script = (
        "import sys, asyncio\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "import httpx\n"
        "from seawall.app import create_app\n"
        "from seawall.config import Settings, TracingSettings\n"
        "from seawall.errors import ConfigurationError\n"
        f"url = 'sqlite+aiosqlite:///{tmp_path}/t.db'\n"
        "settings = Settings(_env_file=None, _secrets_dir=None, database_url=url)\n"
        "app = create_app(settings)\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        t = httpx.ASGITransport(app=app)\n"
        "        async with httpx.AsyncClient(transport=t, base_url='http://t') as c:\n"
        "            assert (await c.get('/metrics')).status_code == 200\n"
        "            assert (await c.get('/health/live')).status_code == 200\n"
        "asyncio.run(main())\n"
        "traced = settings.model_copy(update={'tracing': TracingSettings(enabled=True)})\n"
        "try:\n"
        "    create_app(traced)\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install 'seawall[otel]'" in result.stdout


def test_the_library_does_not_load_opentelemetry_until_tracing_is_enabled() -> None:
    script = (
        "import sys\n"
        "import seawall.http, seawall.messaging, seawall.webhooks, seawall.observability\n"
        "from seawall.observability import span\n"
        "with span('nothing') as s:\n"
        "    assert s is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]
