"""External services declared in settings, built and held together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from seawall.config import ServiceSettings
from seawall.errors import ConfigurationError
from seawall.http._auth import ApiKey, Auth, BasicAuth, BearerToken, OAuth2ClientCredentials
from seawall.http._service import ExternalService, Timeouts
from seawall.resilience import CircuitBreaker, Clock, EventHub, RateLimit, Retry, events

__all__ = ["ServiceRegistry", "auth_from_settings", "service_from_settings"]


def auth_from_settings(
    name: str, config: ServiceSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Auth | None:
    """The `Auth` that *config* describes (see `ServiceSettings.scheme`).

    Raises:
        ConfigurationError: the chosen scheme lacks a value it needs (the error
            names the variable, never a secret).
    """
    scheme = config.scheme()
    prefix = f"SEAWALL_SERVICES__{name.upper()}__"

    def need(value: Any, key: str) -> Any:
        if value is None:
            raise ConfigurationError(f"required for auth {scheme!r}", key=prefix + key)
        return value

    if scheme == "none":
        return None
    if scheme == "bearer":
        return BearerToken(need(config.token, "TOKEN"))
    if scheme == "api_key":
        return ApiKey(
            need(config.api_key, "API_KEY"),
            header=config.api_key_header,
            query=config.api_key_query,
        )
    if scheme == "basic":
        return BasicAuth(need(config.username, "USERNAME"), need(config.password, "PASSWORD"))
    return OAuth2ClientCredentials(
        token_url=need(config.token_url, "TOKEN_URL"),
        client_id=need(config.client_id, "CLIENT_ID"),
        client_secret=need(config.client_secret, "CLIENT_SECRET"),
        scope=config.scope,
        service=name,
        transport=transport,
    )


def service_from_settings(
    name: str,
    config: ServiceSettings,
    *,
    redis: Any = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    hub: EventHub | None = None,
    **overrides: Any,
) -> ExternalService:
    """Build the `ExternalService` that *config* describes.

    Args:
        name: the service's name (``crm`` for ``SEAWALL_SERVICES__CRM__…``).
        config: its settings.
        redis: a ``redis.asyncio.Redis``; when given, the breaker's state and the
            rate limit are shared by every instance of the fleet through it.
        transport: an httpx transport (tests).
        clock: where the policies read time.
        hub: where the policies report.
        **overrides: `ExternalService` arguments that win over the settings
            (a ``fallback``, ``policies``, a ``model``-specific ``cache``).
    """
    hub = hub if hub is not None else events
    breaker_store = rate_storage = None
    if redis is not None:
        from seawall.resilience.redis import (  # noqa: PLC0415 - only with Redis
            RedisBreakerStore,
            RedisRateLimitStorage,
        )

        breaker_store = RedisBreakerStore(redis)
        rate_storage = RedisRateLimitStorage(redis)
    options: dict[str, Any] = {
        "timeouts": Timeouts(
            connect=config.timeout_connect,
            read=config.timeout_read,
            write=config.timeout_write,
            pool=config.timeout_pool,
        ),
        "total_timeout": config.total_timeout_seconds,
        "auth": auth_from_settings(name, config, transport=transport),
        "retry": Retry(max_attempts=config.retry_attempts, name=name, clock=clock, events=hub)
        if config.retry_attempts > 1
        else False,
        "breaker": CircuitBreaker(
            name=name,
            failure_threshold=config.breaker_failures,
            recovery_timeout=config.breaker_recovery_seconds,
            expected_exception=ExternalService.SICK,
            store=breaker_store,
            clock=clock,
            events=hub,
        ),
        "rate_limit": None
        if config.rate_limit is None
        else RateLimit(
            config.rate_limit,
            name=name,
            mode="wait",
            storage=rate_storage,
            clock=clock,
            events=hub,
        ),
        "bulkhead": config.max_concurrent,
        "cache": config.cache_seconds,
        "stale_ttl": config.stale_seconds,
        "critical": config.critical,
        "health_path": config.health_path,
        "max_connections": config.max_connections,
        "transport": transport,
        "clock": clock,
        "events": hub,
    }
    options.update(overrides)
    return ExternalService(name, config.base_url, **options)


class ServiceRegistry(Mapping[str, ExternalService]):
    """The external services of a process, by name, opened and closed together.

    ``async with ServiceRegistry.from_settings(settings.services) as services:``
    then ``services["crm"]``.
    """

    def __init__(self, services: Mapping[str, ExternalService] | None = None) -> None:
        self._services: dict[str, ExternalService] = dict(services or {})

    @classmethod
    def from_settings(
        cls, configs: Mapping[str, ServiceSettings], *, redis: Any = None, **options: Any
    ) -> ServiceRegistry:
        """Build every service in *configs* (``Settings.services``)."""
        return cls(
            {
                name: service_from_settings(name, config, redis=redis, **options)
                for name, config in configs.items()
            }
        )

    def add(self, service: ExternalService) -> ExternalService:
        """Hold *service* too (declared in code); returns it.

        Raises:
            ValueError: a service of that name is already held.
        """
        if service.name in self._services:
            raise ValueError(f"service {service.name!r} is already registered")
        self._services[service.name] = service
        return service

    def __getitem__(self, name: str) -> ExternalService:
        return self._services[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)

    def __repr__(self) -> str:
        return f"ServiceRegistry({sorted(self._services)!r})"

    def open(self) -> None:
        """Create every service's connection pool (calls also do it lazily)."""
        for service in self._services.values():
            service.open()

    async def __aenter__(self) -> ServiceRegistry:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every service's connections."""
        for service in self._services.values():
            await service.aclose()
