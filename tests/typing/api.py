"""Type-checked (mypy --strict) to prove the public signatures; never run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import create_app
from seawall.config import Settings, load_settings
from seawall.db import Database, migrate
from seawall.idempotency import Claim, IdempotencyStore, StoredResponse
from seawall.messaging import Event, Outbox
from seawall.observability import bind_correlation, current_correlation_id


async def uses_public_api(session: AsyncSession) -> None:
    settings: Settings = load_settings(port=8080)
    app: FastAPI = create_app(settings)
    assert app.title
    database = Database(settings.database_url.get_secret_value(), pool_size=5, timeout=2.0)
    await migrate(database)
    store = IdempotencyStore(database, ttl=timedelta(hours=1), lock_timeout=30.0)
    claimed: Claim | StoredResponse = await store.claim("POST /x", "key", "fingerprint")
    if isinstance(claimed, Claim):
        await store.complete(session, claimed, StoredResponse(201, "{}"))
        await store.release(claimed)
    with bind_correlation("abc"):
        event = Event.create("case.created", source="/test", subject="1", data={"a": 1})
        await Outbox().add(session, event)
        correlation: str | None = current_correlation_id()
        assert correlation == "abc"


# --- resilience: decorators keep their signatures (ParamSpec), sync and async -------------------

from seawall.resilience import (  # noqa: E402 - grouped with the code it proves
    Bulkhead,
    Cache,
    Chaos,
    CircuitBreaker,
    Fallback,
    Pipeline,
    RateLimit,
    Retry,
    Timeout,
    circuit,
    retry,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)


class ExternalServiceError(Exception):
    pass


@circuit(failure_threshold=5, recovery_timeout=30, expected_exception=ExternalServiceError)
async def call_payment_gateway(request: str) -> int:
    return len(request)


@circuit
def sync_breaker(x: int, *, y: str = "a") -> bytes:
    return y.encode() * x


@retry(wait=wait_exponential(multiplier=1, min=1, max=60), stop=stop_after_attempt(5))
async def fetch_with_retry(url: str) -> bytes:
    return url.encode()


@retry(stop=stop_after_attempt(5) | stop_after_delay(30), wait=wait_fixed(1) + wait_fixed(2))
def sync_retry(a: int, *, b: float = 1.0) -> float:
    return a * b


pipeline = Pipeline([CircuitBreaker(name="p"), Retry(), Timeout(per_attempt=2), RateLimit("5/s")])


@pipeline
async def through_pipeline(sku: str, *, qty: int = 1) -> float:
    return float(qty)


@Timeout(per_attempt=2)
@Bulkhead(max_concurrent=2)
@Cache(ttl=60)
@Fallback(value=0.0)
@Chaos()
async def stacked(x: str) -> float:
    return float(len(x))


async def uses_resilience() -> None:
    paid: int = await call_payment_gateway("r")
    raw: bytes = sync_breaker(1, y="b")
    body: bytes = await fetch_with_retry("https://example.test")
    product: float = sync_retry(2, b=1.5)
    price: float = await through_pipeline("sku", qty=2)
    value: float = await stacked("abc")
    direct: int = await Retry().call(call_payment_gateway, "x")
    print(paid, raw, body, product, price, value, direct)


# --- outbound HTTP: a model= call returns that model; partial results keep their type ----------

from pydantic import BaseModel  # noqa: E402 - grouped with the code it proves

from seawall.health import HealthMonitor, HealthReport, ServiceCheck  # noqa: E402
from seawall.http import (  # noqa: E402
    ExternalService,
    OAuth2ClientCredentials,
    PartialResults,
    ServiceRegistry,
    ServiceResponse,
    Timeouts,
    gather_partial,
)
from seawall.testing import EchoServer, FakeCRM  # noqa: E402


class Ticket(BaseModel):
    id: str


async def uses_http_api() -> None:
    auth = OAuth2ClientCredentials(token_url="https://a/token", client_id="c", client_secret="s")
    async with ExternalService(
        "crm", "https://crm.example.com", auth=auth, timeouts=Timeouts()
    ) as crm:
        ticket: Ticket = await crm.request(
            "GET", "/tickets/{id}", path_params={"id": 1}, model=Ticket
        )
        raw: ServiceResponse = await crm.request("GET", "/tickets")
        assert ticket.id
        assert raw.ok
        page: PartialResults[Ticket] = await gather_partial(
            {"a": crm.request("GET", "/a", model=Ticket)}, timeout=1.0
        )
        assert page.complete
        report: HealthReport = await HealthMonitor([ServiceCheck(crm)]).run_once()
        assert report.status in {"healthy", "degraded", "unhealthy"}
    services = ServiceRegistry({"crm": crm})
    assert services["crm"] is crm
    with EchoServer() as echo, FakeCRM(token_lifetime=60.0) as fake:
        assert echo.url
        assert fake.url


# --- webhooks: verification is pure; the receiver, processor and log are typed ----------------

from seawall.webhooks import (  # noqa: E402
    AwaitingRecord,
    HmacScheme,
    WebhookEvent,
    WebhookFilter,
    WebhookHandlers,
    WebhookLog,
    verify,
)


async def uses_webhooks_api(database: Database, session: AsyncSession) -> None:
    verify("github", {"X-Hub-Signature-256": "sha256=00"}, b"{}", ["secret"], tolerance=300)
    verify(HmacScheme(header="X-Sig", prefix="sha256="), {}, b"", ["s"], now=1.0)
    handlers = WebhookHandlers()

    @handlers.on("stripe", ["charge.*"])
    async def on_charge(event: WebhookEvent, session: AsyncSession) -> None:
        if event.type is None:
            raise AwaitingRecord("not yet", waiting_for="case:1")

    found = await WebhookLog(database).list(WebhookFilter(provider="stripe"), limit=10)
    assert all(item.status for item in found)
