"""Outgoing calls to third-party HTTP APIs, each through one `ExternalService`.

An `ExternalService` owns an ``httpx.AsyncClient`` and its pooled connections,
a resilience pipeline (retry, circuit breaker, rate limit, bulkhead, cache,
fallback from `seawall.resilience`), authentication (`BearerToken`, `ApiKey`,
`BasicAuth`, `OAuth2ClientCredentials`), correlation headers, and one error
tree (`seawall.errors.ExternalServiceError`). Application code calls adapters
(`seawall.integrations`), adapters call an `ExternalService`, and nothing else
touches httpx or a provider's payloads.

Services are declared in code or in settings (``SEAWALL_SERVICES__<NAME>__…``,
built by `ServiceRegistry.from_settings`). `gather_partial` runs several calls
under one deadline and keeps what succeeded. See ``docs/integrations.md``.
"""

from seawall.errors import (
    ExternalServiceError,
    InvalidResponse,
    ServiceClientError,
    ServiceRateLimited,
    ServiceTimeout,
    ServiceUnavailable,
)
from seawall.http._auth import ApiKey, Auth, BasicAuth, BearerToken, OAuth2ClientCredentials
from seawall.http._gather import PartialResults, gather_partial
from seawall.http._registry import ServiceRegistry, auth_from_settings, service_from_settings
from seawall.http._response import ServiceResponse, classify, provider_message, validate
from seawall.http._service import IDEMPOTENT_METHODS, ExternalService, Timeouts

__all__ = [
    "IDEMPOTENT_METHODS",
    "ApiKey",
    "Auth",
    "BasicAuth",
    "BearerToken",
    "ExternalService",
    "ExternalServiceError",
    "InvalidResponse",
    "OAuth2ClientCredentials",
    "PartialResults",
    "ServiceClientError",
    "ServiceRateLimited",
    "ServiceRegistry",
    "ServiceResponse",
    "ServiceTimeout",
    "ServiceUnavailable",
    "Timeouts",
    "auth_from_settings",
    "classify",
    "gather_partial",
    "provider_message",
    "service_from_settings",
    "validate",
]
