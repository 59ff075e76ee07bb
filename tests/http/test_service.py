"""`ExternalService` against a real HTTP server on loopback, with chaos.

The server is `seawall.testing.EchoServer`: a real socket, real keep-alive, and
chaos knobs for outages, slowness, 429s, malformed bodies, hangs and drops.
Retry delays run on a `FakeClock`, so no test waits for a backoff.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from structlog.testing import capture_logs

from seawall.errors import (
    CircuitOpenError,
    InvalidResponse,
    RateLimitExceeded,
    ServiceClientError,
    ServiceRateLimited,
    ServiceTimeout,
    ServiceUnavailable,
    TimeoutExceeded,
)
from seawall.health import ServiceCheck, overall_status
from seawall.http import (
    ApiKey,
    BasicAuth,
    BearerToken,
    ExternalService,
    OAuth2ClientCredentials,
    Timeouts,
    gather_partial,
)
from seawall.observability import bind_correlation
from seawall.resilience import CircuitBreaker, EventHub, RateLimit, ResilienceEvent, Retry
from seawall.resilience.redis import RedisRateLimitStorage
from seawall.testing import EchoServer, FakeClock, FakeCRM


class Item(BaseModel):
    id: str
    name: str
    price: int


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    with EchoServer() as fake:
        yield fake


@pytest.fixture
def echo(server: EchoServer) -> Iterator[EchoServer]:
    server.chaos.reset()
    server.clear()
    yield server
    server.chaos.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub() -> tuple[EventHub, list[ResilienceEvent]]:
    hub = EventHub()
    seen: list[ResilienceEvent] = []
    hub.subscribe(seen.append)
    return hub, seen


def make_service(
    echo: EchoServer,
    clock: FakeClock,
    hub: EventHub | None = None,
    **options: Any,
) -> ExternalService:
    hub = hub or EventHub()
    options.setdefault(
        "retry", Retry(max_attempts=3, base_delay=0.01, budget=False, clock=clock, events=hub)
    )
    options.setdefault(
        "breaker",
        CircuitBreaker(
            name="echo",
            failure_threshold=5,
            recovery_timeout=30.0,
            expected_exception=ExternalService.SICK,
            clock=clock,
            events=hub,
        ),
    )
    options.setdefault("timeouts", Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0))
    return ExternalService("echo", echo.url, clock=clock, events=hub, **options)


@pytest.fixture
async def service(echo: EchoServer, clock: FakeClock) -> AsyncIterator[ExternalService]:
    async with make_service(echo, clock) as svc:
        yield svc


async def test_a_get_returns_the_validated_model(
    service: ExternalService, echo: EchoServer
) -> None:
    item = await service.get("/items/{id}", path_params={"id": "42"}, model=Item)

    assert item == Item(id="42", name="item 42", price=1299)
    assert len(echo.requests) == 1


async def test_correlation_and_causation_ids_are_sent(
    service: ExternalService, echo: EchoServer
) -> None:
    with bind_correlation("corr-1", "cause-9"):
        response = await service.get("/echo")

    sent = response.json()["headers"]
    assert sent["x-correlation-id"] == "corr-1"
    assert sent["x-causation-id"] == "cause-9"
    assert response.correlation_id == "corr-1"


async def test_a_call_outside_any_context_gets_a_fresh_correlation_id(
    service: ExternalService,
) -> None:
    first = await service.get("/echo")
    second = await service.get("/echo")

    ids = {r.json()["headers"]["x-correlation-id"] for r in (first, second)}
    assert len(ids) == 2
    assert "x-causation-id" not in first.json()["headers"]


async def test_path_parameters_cannot_escape_their_segment(
    service: ExternalService, echo: EchoServer
) -> None:
    with pytest.raises(ServiceClientError) as caught:
        await service.get("/items/{id}/x", path_params={"id": "../../admin"})

    assert caught.value.status == 404
    assert echo.requests[-1].path == "/items/..%2F..%2Fadmin/x"


async def test_an_outage_opens_the_breaker_and_then_calls_fail_fast(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.fail_next(100, status=503)
    async with make_service(echo, clock) as svc:
        with pytest.raises(ServiceUnavailable):
            await svc.get("/items/{id}", path_params={"id": "1"})
        with pytest.raises((ServiceUnavailable, CircuitOpenError)):
            await svc.get("/items/{id}", path_params={"id": "1"})
        assert svc.breaker_state() == "open"
        sent = len(echo.requests)

        with pytest.raises(CircuitOpenError) as caught:
            await svc.get("/items/{id}", path_params={"id": "1"})

        assert len(echo.requests) == sent, "an open breaker must not send anything"
        assert caught.value.breaker == "echo"
        assert caught.value.retry_after > 0
        check = await ServiceCheck(svc).check()
        assert (check.status, check.breaker) == ("unhealthy", "open")

        # The provider recovers; after the recovery timeout one probe closes the breaker.
        echo.chaos.reset()
        clock.advance(31.0)
        item = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)

        assert item.id == "1"
        assert svc.breaker_state() == "closed"
        assert (await ServiceCheck(svc).check()).status == "healthy"


async def test_a_4xx_does_not_count_against_the_breaker(echo: EchoServer, clock: FakeClock) -> None:
    async with make_service(echo, clock) as svc:
        for _ in range(10):
            with pytest.raises(ServiceClientError):
                await svc.get("/status/{code}", path_params={"code": "404"})

        assert svc.breaker_state() == "closed"
        assert len(echo.requests) == 10, "a 4xx is never retried"


async def test_a_slow_answer_hits_the_read_timeout(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.latency(1.0)
    async with make_service(
        echo, clock, timeouts=Timeouts(connect=1.0, read=0.05), retry=False
    ) as svc:
        with pytest.raises(ServiceTimeout) as caught:
            await svc.get("/items/{id}", path_params={"id": "1"})

    assert (caught.value.phase, caught.value.seconds) == ("read", 0.05)
    assert caught.value.transient


async def test_a_hang_is_cut_by_the_timeout_and_retried(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.hang_next(1)
    async with make_service(echo, clock, timeouts=Timeouts(read=0.1)) as svc:
        response = await svc.get("/items/{id}", path_params={"id": "7"})

    assert (response.status_code, response.attempt) == (200, 2)


async def test_a_429_is_retried_after_the_delay_it_asks_for(
    echo: EchoServer, clock: FakeClock, hub: tuple[EventHub, list[ResilienceEvent]]
) -> None:
    echo.chaos.rate_limit_next(1, retry_after=7)
    async with make_service(echo, clock, hub[0]) as svc:
        response = await svc.get("/items/{id}", path_params={"id": "1"})

    assert response.attempt == 2
    assert clock.sleeps[0] >= 7.0
    scheduled = [e for e in hub[1] if e.kind == "retry_scheduled"]
    assert scheduled[0].attributes["reason"] == "ServiceRateLimited"


async def test_persistent_429s_surface_with_retry_after(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.rate_limit_next(10, retry_after=2)
    async with make_service(echo, clock) as svc:
        with pytest.raises(ServiceRateLimited) as caught:
            await svc.get("/items/{id}", path_params={"id": "1"})

        assert caught.value.retry_after == 2.0
        assert svc.breaker_state() == "closed", "429 means busy, not sick"


async def test_malformed_json_is_invalid_and_not_retried(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.malformed_next(1)
    async with make_service(echo, clock) as svc:
        with pytest.raises(InvalidResponse, match="malformed JSON"):
            await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)

    assert len(echo.requests) == 1


async def test_a_wrong_content_type_is_invalid(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.wrong_content_type_next(1)
    async with make_service(echo, clock) as svc:
        with pytest.raises(InvalidResponse, match="text/html"):
            await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)


async def test_a_payload_that_changed_shape_is_invalid(service: ExternalService) -> None:
    class Strict(BaseModel):
        id: int
        currency: str

    with pytest.raises(InvalidResponse, match="does not fit Strict") as caught:
        await service.get("/items/{id}", path_params={"id": "abc"}, model=Strict)

    assert len(caught.value.errors) == 2


async def test_a_dropped_connection_is_retried_for_a_get(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.drop_next(1)
    async with make_service(echo, clock) as svc:
        response = await svc.get("/items/{id}", path_params={"id": "1"})

    assert response.attempt == 2


async def test_a_post_without_idempotency_key_is_not_retried(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.fail_next(1, status=503)
    async with make_service(echo, clock) as svc:
        with pytest.raises(ServiceUnavailable):
            await svc.post("/echo", json={"amount": 100})

    assert len(echo.requests) == 1


async def test_a_post_with_an_idempotency_key_is_retried_with_the_same_key(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.fail_next(1, status=503)
    async with make_service(echo, clock) as svc:
        response = await svc.post("/echo", json={"amount": 100}, idempotency_key="order-42")

    assert response.attempt == 2
    keys = [request.headers.get("idempotency-key") for request in echo.requests]
    assert keys == ["order-42", "order-42"]


async def test_a_fallback_serves_an_optional_service(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.fail_next(100, status=500)
    async with make_service(echo, clock, critical=False) as svc:
        value = await svc.get("/items/{id}", path_params={"id": "1"}, fallback=lambda _: "cached")

        check = await ServiceCheck(svc).check()

    assert value == "cached"
    # The service is down, but it is optional: the application only degrades.
    assert (check.status, check.critical) == ("unhealthy", False)
    assert overall_status([check]) == "degraded"


async def test_a_stale_cached_answer_is_served_when_the_service_fails(
    echo: EchoServer, clock: FakeClock
) -> None:
    async with make_service(echo, clock, cache={"/items/{id}": 60.0}, stale_ttl=3600.0) as svc:
        first = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)
        again = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)
        assert len(echo.requests) == 1, "the second call is a cache hit"
        other = await svc.get("/items/{id}", path_params={"id": "2"}, model=Item)
        assert len(echo.requests) == 2, "another id is another cache entry"

        echo.chaos.fail_next(100, status=503)
        clock.advance(120.0)
        stale = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)

    assert first == again == stale
    assert other.id == "2"


async def test_stale_ttl_counts_past_the_ttl_and_ends(echo: EchoServer, clock: FakeClock) -> None:
    async with make_service(echo, clock, cache={"/items/{id}": 60.0}, stale_ttl=3600.0) as svc:
        first = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)
        echo.chaos.fail_next(100, status=503)
        clock.advance(60.0 + 3590.0)
        stale = await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)
        clock.advance(20.0)
        with pytest.raises((ServiceUnavailable, CircuitOpenError)):
            await svc.get("/items/{id}", path_params={"id": "1"}, model=Item)

    assert stale == first


def test_a_stale_ttl_shorter_than_a_cache_ttl_is_fine(echo: EchoServer) -> None:
    service = ExternalService("x", echo.url, cache={"/a": 7200.0}, stale_ttl=60.0)

    assert service.name == "x"


async def test_auth_schemes_reach_the_server(echo: EchoServer, clock: FakeClock) -> None:
    for auth, header, expected in [
        (BearerToken("t0ken"), "authorization", "Bearer t0ken"),
        (ApiKey("k3y", header="X-Api-Key"), "x-api-key", "k3y"),
        (BasicAuth("user", "pa55"), "authorization", "Basic dXNlcjpwYTU1"),
    ]:
        async with make_service(echo, clock, auth=auth) as svc:
            sent = (await svc.get("/echo")).json()["headers"]
        assert sent[header] == expected
        shown = repr(auth)
        assert all(secret not in shown for secret in ("t0ken", "k3y", "pa55"))


async def test_an_api_key_in_the_query_never_reaches_the_logs(
    echo: EchoServer, clock: FakeClock
) -> None:
    async with make_service(echo, clock, auth=ApiKey("s3cret-key", query="api_key")) as svc:
        with capture_logs() as logs:
            response = await svc.get("/echo", params={"q": "x"})

    assert response.json()["query"] == {"q": ["x"], "api_key": ["s3cret-key"]}
    called = [line for line in logs if line["event"] == "service_called"]
    assert called == [
        {
            "event": "service_called",
            "log_level": "info",
            "service": "echo",
            "method": "GET",
            "path": "/echo",
            "status": 200,
            "latency_ms": called[0]["latency_ms"],
            "attempt": 1,
        }
    ]
    assert "s3cret-key" not in repr(logs)


async def test_an_oversized_answer_is_refused(echo: EchoServer, clock: FakeClock) -> None:
    async with make_service(echo, clock, max_response_bytes=100) as svc:
        with pytest.raises(InvalidResponse, match="over the 100-byte limit"):
            await svc.post("/echo", content=b"x" * 500)


async def test_a_shared_rate_limit_counts_calls_from_every_instance(
    echo: EchoServer, clock: FakeClock, redis: Redis, redis_prefix: str
) -> None:
    def limited() -> ExternalService:
        return make_service(
            echo,
            clock,
            rate_limit=RateLimit(
                "3/minute",
                name="echo",
                storage=RedisRateLimitStorage(redis, prefix=redis_prefix),
            ),
        )

    async with limited() as one, limited() as two:
        for svc in (one, two, one):
            await svc.get("/items/{id}", path_params={"id": "1"})
        with pytest.raises(RateLimitExceeded):
            await two.get("/items/{id}", path_params={"id": "1"})

    assert len(echo.requests) == 3


async def test_gather_partial_keeps_what_finished_by_the_deadline(
    echo: EchoServer, clock: FakeClock
) -> None:
    echo.chaos.hang_next(1, path_prefix="/items/slow")
    async with make_service(echo, clock, retry=False) as svc:
        outcome = await gather_partial(
            {
                "fast": svc.get("/items/{id}", path_params={"id": "fast"}, model=Item),
                "slow": svc.get("/items/{id}", path_params={"id": "slow"}, model=Item),
                "broken": svc.get("/status/{code}", path_params={"code": "400"}),
            },
            timeout=0.5,
        )

    assert outcome.results == {"fast": Item(id="fast", name="item fast", price=1299)}
    assert isinstance(outcome.errors["slow"], TimeoutExceeded)
    assert isinstance(outcome.errors["broken"], ServiceClientError)
    assert not outcome.complete


async def test_no_task_or_connection_is_left_behind(echo: EchoServer, clock: FakeClock) -> None:
    before = len(asyncio.all_tasks())
    echo.chaos.hang_next(2)
    echo.chaos.drop_next(2)
    async with make_service(echo, clock, timeouts=Timeouts(read=0.1)) as svc:
        await asyncio.gather(
            *(svc.get("/items/{id}", path_params={"id": str(n)}) for n in range(20)),
            return_exceptions=True,
        )
        assert echo.stats.open_connections > 0

    open_after = await asyncio.to_thread(echo.wait_for_connections, 0)

    assert open_after == 0
    assert len(asyncio.all_tasks()) == before


async def test_retryable_overrides_the_methods_default(echo: EchoServer, clock: FakeClock) -> None:
    echo.chaos.fail_next(1, status=503)
    async with make_service(echo, clock) as svc:
        patched = await svc.patch("/echo", json={"name": "x"}, retryable=True)
        echo.chaos.fail_next(1, status=503)
        with pytest.raises(ServiceUnavailable):
            await svc.delete("/echo", retryable=False)

    assert patched.attempt == 2
    assert [r.method for r in echo.requests] == ["PATCH", "PATCH", "DELETE"]


async def test_oauth2_fetches_one_token_for_many_calls_and_refreshes_once_on_401(
    clock: FakeClock,
) -> None:
    async with FakeCRM() as crm:
        auth = OAuth2ClientCredentials(
            token_url=crm.url + "/oauth/token",
            client_id="seawall-crm-client",
            client_secret="seawall-crm-secret",
        )
        async with ExternalService("crm", crm.url, auth=auth, clock=clock) as svc:
            await asyncio.gather(*(svc.get("/api/v1/tickets") for _ in range(20)))
            assert crm.token_requests == 1

            crm.revoke_tokens()
            answers = await asyncio.gather(*(svc.get("/api/v1/tickets") for _ in range(10)))

            assert crm.token_requests == 2, "one refresh for all the calls rejected together"
            assert {answer.status_code for answer in answers} == {200}
            assert "seawall-crm-secret" not in repr(auth)


async def test_oauth2_wrong_credentials_are_a_401_client_error() -> None:
    async with FakeCRM() as crm:
        auth = OAuth2ClientCredentials(
            token_url=crm.url + "/oauth/token", client_id="seawall-crm-client", client_secret="no"
        )
        async with ExternalService("crm", crm.url, auth=auth) as svc:
            with pytest.raises(ServiceClientError) as caught:
                await svc.get("/api/v1/tickets")

    assert (caught.value.status, caught.value.code, caught.value.service) == (
        401,
        "invalid_client",
        "crm",
    )


async def test_a_compressed_answer_is_limited_by_its_decoded_size() -> None:
    # A narrow unit test of the size guard: 10 kB of gzip that inflates to 10 MB.
    bomb = gzip.compress(b"0" * 10_000_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=bomb,
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )

    async with ExternalService(
        "bomb",
        "http://bomb.test",
        transport=httpx.MockTransport(handler),
        max_response_bytes=1_000_000,
    ) as svc:
        with pytest.raises(InvalidResponse, match="over the 1000000-byte limit"):
            await svc.get("/x")


async def test_an_oauth2_token_is_renewed_shortly_before_it_expires(clock: FakeClock) -> None:
    async with FakeCRM(token_lifetime=300.0) as crm:
        auth = OAuth2ClientCredentials(
            token_url=crm.url + "/oauth/token",
            client_id="seawall-crm-client",
            client_secret="seawall-crm-secret",
            refresh_margin=60.0,
            clock=clock,
        )
        async with ExternalService("crm", crm.url, auth=auth, clock=clock) as svc:
            await svc.get("/api/v1/tickets")
            clock.advance(230.0)
            await svc.get("/api/v1/tickets")
            assert crm.token_requests == 1, "still 70 s from expiry: the cached token"
            clock.advance(20.0)
            await svc.get("/api/v1/tickets")

    assert crm.token_requests == 2, "within the margin: renewed before it expired"
