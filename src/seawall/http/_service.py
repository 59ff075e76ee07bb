"""`ExternalService`: one third-party API behind timeouts, retries, a breaker and auth.

Every call goes: fallback → cache (GET endpoints given a TTL) → retry → circuit
breaker → rate limit → bulkhead → one attempt. An attempt adds the credential
and the correlation headers, sends with httpx's per-phase timeouts, reads the
body up to a size limit, and turns the answer into a `ServiceResponse` or one
of the `ExternalServiceError` leaves. The policies are seawall's own
(`seawall.resilience`), so everything they report reaches the same logs and
metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, overload
from urllib.parse import quote

import httpx
import structlog
from prometheus_client import CollectorRegistry

from seawall.errors import (
    ExternalServiceError,
    ResilienceError,
    ServiceTimeout,
    ServiceUnavailable,
    TimeoutExceeded,
)
from seawall.http._attempt import Attempt, CallHealth
from seawall.http._auth import Auth
from seawall.http._response import ServiceResponse
from seawall.observability import ServiceCallMetrics
from seawall.resilience import (
    SYSTEM_CLOCK,
    Bulkhead,
    Cache,
    CacheBackend,
    CallContext,
    CircuitBreaker,
    Clock,
    EventHub,
    Fallback,
    Pipeline,
    RateLimit,
    Retry,
    Timeout,
    events,
)

__all__ = ["IDEMPOTENT_METHODS", "ExternalService", "Timeouts"]

M = TypeVar("M")

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods RFC 9110 calls idempotent: retried by default. POST and PATCH are
retried only with an idempotency key."""

_log = structlog.get_logger("seawall.http")
_CACHEABLE: Final = frozenset({"GET", "HEAD"})
_ERRORS: Final = (ExternalServiceError, ResilienceError)
# Errors that say the service is sick (the breaker counts them); a 4xx or a body
# we cannot use says nothing about its health.
_SICK: Final = (ServiceTimeout, ServiceUnavailable, TimeoutExceeded)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each phase of one attempt.

    Attributes:
        connect: to open a connection (TCP and TLS).
        read: between two chunks of the answer.
        write: between two chunks of the request.
        pool: to get a free connection from our own pool.
    """

    connect: float = 5.0
    read: float = 10.0
    write: float = 10.0
    pool: float = 5.0

    def __post_init__(self) -> None:
        for phase in ("connect", "read", "write", "pool"):
            value = getattr(self, phase)
            if not value > 0:
                raise ValueError(f"the {phase} timeout must be positive")

    def httpx(self) -> httpx.Timeout:
        """The same limits as an `httpx.Timeout`."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def _path(template: str, params: Mapping[str, object] | None) -> str:
    if template and not template.startswith("/"):
        raise ValueError(
            f"path must be empty (the base URL itself) or start with '/': {template!r}"
        )
    if not params:
        return template
    # Each value is quoted whole: "../admin" or "a/b" cannot move the request elsewhere.
    quoted = {name: quote(str(value), safe="") for name, value in params.items()}
    try:
        return template.format_map(quoted)
    except KeyError as exc:
        raise ValueError(f"no value for path parameter {exc.args[0]!r} of {template!r}") from None


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class ExternalService:
    """A third-party HTTP API with timeouts, retries, a breaker, auth and correlation.

    Use it as an async context manager (it owns an `httpx.AsyncClient` and its
    pooled connections)::

        async with ExternalService("crm", "https://crm.example.com/api", auth=...) as crm:
            ticket = await crm.get("/tickets/{id}", path_params={"id": 42}, model=Ticket)

    With nothing configured it is safe: connect 5 s, read 10 s; idempotent
    methods (and POST/PATCH with an ``idempotency_key``) get up to 3 attempts
    with full-jitter backoff that honours ``Retry-After``; a breaker opens
    after 5 consecutive failures (timeouts, connection failures, 5xx) for 30 s.

    Args:
        name: the service's name, in logs, metrics, errors and health.
        base_url: the API's root; paths are appended to it.
        timeouts: per-phase limits (`Timeouts`), or one number for every phase.
        total_timeout: a deadline for the whole call with its retries, if any.
        auth: how requests authenticate (`BearerToken`, `ApiKey`, `BasicAuth`,
            `OAuth2ClientCredentials`), if at all.
        retry: the `Retry` policy; ``False`` for none.
        breaker: the `CircuitBreaker`; ``False`` for none.
        rate_limit: a `RateLimit` (give it a Redis storage to share it across
            instances) or a rate string such as ``"100/second"``; calls wait
            for a slot up to 10 s.
        bulkhead: a `Bulkhead`, or the largest number of calls in flight.
        cache: TTLs per GET endpoint, keyed by path template (``"/rates/{ccy}"``);
            seconds or timedelta.
        stale_ttl: how long past its TTL a cached answer may still be served
            when the service fails (stale-if-error); None for never.
        cache_backend: where cached answers live (memory by default).
        fallback: a `Fallback` for every call (an optional service's default).
        policies: further policies (`Chaos`, a user's own), placed by stage.
        critical: whether the application cannot work without this service;
            `/health/dependencies` reports it as unhealthy rather than degraded.
        health_path: a cheap GET endpoint the health monitor probes; without
            one, health is judged from the calls made.
        headers: headers sent on every call (``User-Agent``, an API version).
        idempotency_header: where an ``idempotency_key`` is sent.
        max_connections: the pool size.
        max_keepalive: idle connections kept open.
        max_response_bytes: larger answers are refused (`InvalidResponse`).
        transport: an httpx transport (tests, or a custom TLS set-up).
        clock: where the policies read time.
        events: where the policies report (the global hub by default).
        registry: where each attempt is counted (``seawall_service_calls_total``,
            ``seawall_service_call_duration_seconds``); the default registry if omitted.
    """

    SICK: Final = _SICK
    """The errors a breaker counts: timeouts, connection failures and 5xx."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeouts: Timeouts | float | None = None,
        total_timeout: float | timedelta | None = None,
        auth: Auth | None = None,
        retry: Retry | Literal[False] | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        rate_limit: RateLimit | str | None = None,
        bulkhead: Bulkhead | int | None = None,
        cache: Mapping[str, float | timedelta] | None = None,
        stale_ttl: float | timedelta | None = None,
        cache_backend: CacheBackend | None = None,
        fallback: Fallback | None = None,
        policies: Iterable[Any] = (),
        critical: bool = True,
        health_path: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_header: str = "Idempotency-Key",
        max_connections: int = 100,
        max_keepalive: int = 20,
        max_response_bytes: int = 10 << 20,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not name:
            raise ValueError("a service needs a name")
        url = httpx.URL(base_url)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError(f"base_url must be an absolute http(s) URL: {base_url!r}")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        self.name = name
        self.base_url = str(base_url).rstrip("/")
        self.critical = critical
        self.health_path = health_path
        self.auth = auth
        if auth is not None and hasattr(auth, "service"):
            auth.service = name
        self.timeouts = (
            timeouts
            if isinstance(timeouts, Timeouts)
            else Timeouts()
            if timeouts is None
            else Timeouts(timeouts, timeouts, timeouts, timeouts)
        )
        self.idempotency_header = idempotency_header
        self.max_response_bytes = max_response_bytes
        self._clock = clock or SYSTEM_CLOCK
        hub = events if events is not None else _default_hub()
        self.retry: Retry | None = (
            None
            if retry is False
            else retry or Retry(max_attempts=3, name=name, clock=clock, events=hub)
        )
        self.breaker: CircuitBreaker | None = (
            None
            if breaker is False
            else breaker
            or CircuitBreaker(
                name=name,
                failure_threshold=5,
                recovery_timeout=30.0,
                expected_exception=_SICK,
                clock=clock,
                events=hub,
            )
        )
        self.rate_limit = (
            RateLimit(rate_limit, name=name, mode="wait", clock=clock, events=hub)
            if isinstance(rate_limit, str)
            else rate_limit
        )
        self.bulkhead = (
            Bulkhead(max_concurrent=bulkhead, max_queue=bulkhead * 10, name=name, events=hub)
            if isinstance(bulkhead, int)
            else bulkhead
        )
        self.fallback = fallback
        base: list[Any] = [
            policy
            for policy in (self.retry, self.breaker, self.rate_limit, self.bulkhead, fallback)
            if policy is not None
        ]
        if total_timeout is not None:
            base.append(
                Timeout(per_attempt=None, total=total_timeout, name=name, clock=clock, events=hub)
            )
        base.extend(policies)
        self.pipeline = Pipeline(base, name=name)
        self._cached: dict[str, Pipeline] = {}
        for template, ttl in (cache or {}).items():
            _path(template, None)
            policy = Cache(
                ttl=ttl,
                # Cache counts stale_ttl from when the answer was stored; ours is past the TTL.
                stale_ttl=None if stale_ttl is None else _seconds(ttl) + _seconds(stale_ttl),
                backend=cache_backend,
                key=_cache_key,
                stale_on=_ERRORS,
                name=f"{name}:{template}",
                clock=clock,
                events=hub,
            )
            self._cached[template] = Pipeline([*base, policy], name=name)
        self._default_headers = dict(headers or {})
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.health = CallHealth()
        self.metrics = ServiceCallMetrics(registry)

    def __repr__(self) -> str:
        # Scheme and host only: some base URLs carry a secret in their path (webhooks).
        url = httpx.URL(self.base_url)
        return f"ExternalService({self.name!r}, '{url.scheme}://{url.host}')"

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def open(self) -> None:
        """Create the connection pool (`__aenter__` does it; calls also do it lazily)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeouts.httpx(),
                limits=self._limits,
                transport=self._transport,
                follow_redirects=False,
                trust_env=False,
            )

    async def aclose(self) -> None:
        """Close every pooled connection. The service can be opened again."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- calls -------------------------------------------------------------

    @overload
    async def request(
        self,
        method: str,
        path: str,
        *,
        model: None = None,
        path_params: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retryable: bool | None = None,
        accept: Collection[int] = (),
        fallback: Callable[[Exception | None], Any] | None = None,
    ) -> ServiceResponse: ...

    @overload
    async def request(
        self,
        method: str,
        path: str,
        *,
        model: type[M],
        path_params: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retryable: bool | None = None,
        accept: Collection[int] = (),
        fallback: Callable[[Exception | None], Any] | None = None,
    ) -> M: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        model: Any = None,
        path_params: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retryable: bool | None = None,
        accept: Collection[int] = (),
        fallback: Callable[[Exception | None], Any] | None = None,
    ) -> Any:
        """Call the service and return its answer.

        Args:
            method: the HTTP method.
            path: a path template (``"/tickets/{id}"``), joined to ``base_url``;
                logs, metrics, errors and cache settings use the template. An
                empty path calls ``base_url`` itself (a webhook URL).
            model: validate the JSON body into this type and return it.
            path_params: values for the template, each URL-quoted whole.
            params: the query string.
            json: a body sent as JSON.
            data: a body sent as ``application/x-www-form-urlencoded``.
            content: a raw body.
            headers: extra headers for this call.
            idempotency_key: sent in ``idempotency_header``; it makes a POST or
                PATCH safe to retry.
            retryable: whether a failed attempt may be sent again; by default
                only idempotent methods and calls with an ``idempotency_key``.
                Say True for a PATCH that sets fields (the same twice is the
                same), False for a PUT or DELETE with side effects.
            accept: non-2xx statuses to return rather than raise (such as 404).
            fallback: ``fallback(error)`` gives the answer when the call fails
                (after retries, with the breaker open, ...); the service is then
                reported degraded.

        Returns:
            A `ServiceResponse`, or the validated *model*.

        Raises:
            ServiceTimeout: a phase ran out of time on the last attempt.
            ServiceUnavailable: 5xx or no connection, on the last attempt.
            ServiceRateLimited: 429 on the last attempt.
            ServiceClientError: a 4xx (not retried).
            InvalidResponse: the answer is not what was expected.
            seawall.errors.CircuitOpenError: the breaker is open; nothing was sent.
            seawall.errors.ResilienceError: another policy refused the call.
        """
        method = method.upper()
        context = CallContext(
            operation=f"{method} {path}",
            idempotent=method in IDEMPOTENT_METHODS if retryable is None else retryable,
            idempotency_key=idempotency_key,
        )
        pipeline = self.pipeline
        if self._cached and method in _CACHEABLE:
            cached = self._cached.get(path)
            if cached is not None:
                pipeline = cached
                context.key = _cache_identity(method, path, path_params, params, model)
        attempt = Attempt(
            self,
            method,
            path,
            _path(path, path_params),
            context,
            model,
            params,
            json,
            data,
            content,
            headers,
            idempotency_key,
            accept,
        )
        if fallback is None:
            return await pipeline.run(attempt.run, context)
        try:
            return await pipeline.run(attempt.run, context)
        except _ERRORS as exc:
            self.health.degraded_at = self._clock.wall()
            _log.warning(
                "service_fallback_used",
                service=self.name,
                method=method,
                path=path,
                error=type(exc).__name__,
            )
            return fallback(exc)

    async def get(self, path: str, **kwargs: Any) -> Any:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Any:
        """``request("POST", path, ...)``: retried only with an ``idempotency_key``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Any:
        """``request("PUT", path, ...)``."""
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Any:
        """``request("PATCH", path, ...)``: retried only with an ``idempotency_key``."""
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Any:
        """``request("DELETE", path, ...)``."""
        return await self.request("DELETE", path, **kwargs)

    # -- health ------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """Where the service's policies and health read the time."""
        return self._clock

    def breaker_state(self) -> str | None:
        """The breaker's state (``closed``, ``open``, ``half_open``), or None without one."""
        return None if self.breaker is None else self.breaker.state.value

    async def probe(self) -> float:
        """Call ``health_path`` once, outside the retries and the breaker.

        Returns:
            The latency in milliseconds.

        Raises:
            ExternalServiceError: the probe failed (how, as for `request`).
        """
        if self.health_path is None:
            raise ValueError(f"service {self.name!r} has no health_path")
        context = CallContext(operation=f"GET {self.health_path}")
        attempt = Attempt(
            self,
            "GET",
            self.health_path,
            self.health_path,
            context,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            (),
            probe=True,
        )
        started = time.perf_counter()
        await attempt.run()
        return (time.perf_counter() - started) * 1000.0

    # -- one attempt -------------------------------------------------------

    def _client_now(self) -> httpx.AsyncClient:
        if self._client is None:
            self.open()
        assert self._client is not None
        return self._client


def _default_hub() -> EventHub:
    return events


def _cache_key(context: CallContext) -> str:
    return context.key or context.operation


def _cache_identity(
    method: str,
    path: str,
    path_params: Mapping[str, object] | None,
    params: Mapping[str, Any] | None,
    model: Any,
) -> str:
    parts = [method, path]
    if path_params:
        parts.append(repr(sorted((k, str(v)) for k, v in path_params.items())))
    if params:
        parts.append(repr(sorted((k, repr(v)) for k, v in params.items())))
    if model is not None:
        parts.append(getattr(model, "__qualname__", None) or repr(model))
    return " ".join(parts)
