"""Authentication for operator APIs: API keys and federated JWTs, with scopes.

- API keys (`generate_api_key`, `ApiKeys`): ``sw_<id>_<secret>``; the id is
  public, only the SHA-256 of the key is stored, and checks run in constant time.
- JWTs (`JwtValidator`): bearer tokens of an identity provider, validated
  against its JWKS URL (fetched and cached through a `seawall.http.ExternalService`)
  with issuer, audience, expiry and algorithm allow-list checks.
- Scopes (`Scope`): ``read`` sees, ``operate`` may also act; ``operate``
  implies ``read``.
- `Authenticator` turns an ``Authorization: Bearer ...`` header into a
  `Principal`; `FailedAuthLimiter` rate-limits failures per client address;
  `AuthGuard` puts the two together for an HTTP layer.
"""

from seawall.auth._guard import Authenticator, AuthGuard, FailedAuthLimiter
from seawall.auth._jwt import DEFAULT_ALGORITHMS, JwtValidator, scopes_of
from seawall.auth._keys import (
    KEY_PREFIX,
    SCOPES,
    AuthenticationFailed,
    GeneratedKey,
    MissingScope,
    Principal,
    Scope,
    generate_api_key,
    hash_api_key,
    parse_api_key,
    scope_allows,
    secret_matches,
)
from seawall.auth._store import ApiKeyRecord, ApiKeys

__all__ = [
    "DEFAULT_ALGORITHMS",
    "KEY_PREFIX",
    "SCOPES",
    "ApiKeyRecord",
    "ApiKeys",
    "AuthGuard",
    "AuthenticationFailed",
    "Authenticator",
    "FailedAuthLimiter",
    "GeneratedKey",
    "JwtValidator",
    "MissingScope",
    "Principal",
    "Scope",
    "generate_api_key",
    "hash_api_key",
    "parse_api_key",
    "scope_allows",
    "scopes_of",
    "secret_matches",
]
