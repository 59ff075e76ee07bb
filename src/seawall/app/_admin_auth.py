"""Who may call ``/admin``: the authentication dependency, cursors and shared shapes."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Final

import structlog
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from seawall.app._problems import FieldError, Problem, ProblemDetails
from seawall.app._state import ServiceState
from seawall.auth import (
    ApiKeys,
    AuthenticationFailed,
    Authenticator,
    AuthGuard,
    FailedAuthLimiter,
    JwtValidator,
    MissingScope,
    Principal,
    Scope,
)
from seawall.config import Settings
from seawall.db import Database
from seawall.errors import RateLimitExceeded

log = structlog.get_logger("seawall.app")

PROBLEM: Final[dict[str, Any]] = {
    "model": ProblemDetails,
    "content": {"application/problem+json": {}},
}
AUTH_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: PROBLEM,
    403: PROBLEM,
    429: PROBLEM,
}

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminBearer",
    description="An API key (`sw_<id>_<secret>`, from `seawall admin keys create`) or a JWT "
    "of the identity provider configured with SEAWALL_ADMIN__JWKS_URL. GET needs the `read` "
    "scope; POST and DELETE need `operate`.",
)


def build_admin_auth(settings: Settings, database: Database, redis: Any = None) -> AuthGuard:
    """The admin API's authentication (API keys, JWTs) and failure limit, from the settings."""
    config = settings.admin
    jwt = None
    if config.jwks_url is not None:
        assert config.issuer is not None
        assert config.audience is not None
        jwt = JwtValidator(
            config.jwks_url,
            issuer=config.issuer,
            audience=config.audience,
            algorithms=config.algorithms,
            scopes_claim=config.scopes_claim,
            leeway=config.leeway_seconds,
            cache_ttl=config.jwks_cache_seconds,
        )
    storage = None
    if redis is not None:
        from seawall.resilience.redis import RedisRateLimitStorage  # noqa: PLC0415

        storage = RedisRateLimitStorage(redis)
    limiter = FailedAuthLimiter(config.failed_auth_rate_limit, storage=storage)
    return AuthGuard(Authenticator(api_keys=ApiKeys(database), jwt=jwt), limiter)


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _too_many(exc: RateLimitExceeded) -> Problem:
    wait = max(1, round(exc.retry_after + 0.5))
    return Problem(
        429,
        "too-many-failed-authentications",
        f"too many failed authentications from this address; retry in {wait}s",
        headers={"Retry-After": str(wait)},
    )


async def admin_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    """Authenticate the caller and check the scope the method needs.

    GET and HEAD need ``read``; every other method needs ``operate``. A failed
    authentication is ``401``, a missing scope ``403``; both count against the
    address's failure budget, past which it gets ``429`` with ``Retry-After``.
    """
    guard = ServiceState.of(request).admin_auth
    assert guard is not None, "the app was not started through its lifespan"
    address = _address(request)
    needed: Scope = "read" if request.method in {"GET", "HEAD"} else "operate"
    try:
        try:
            principal = await guard.authenticate(
                request.headers.get("authorization"), client=address
            )
        except AuthenticationFailed as exc:
            log.warning(
                "admin_auth_failed", address=address, path=request.url.path, reason=exc.reason
            )
            raise Problem(
                401,
                "unauthorized",
                exc.reason,
                headers={"WWW-Authenticate": 'Bearer realm="seawall-admin"'},
            ) from None
        if not principal.allows(needed):
            log.warning(
                "admin_scope_missing",
                subject=principal.subject,
                path=request.url.path,
                needed=needed,
            )
            await guard.forbidden(address)
            raise Problem(403, "forbidden", str(MissingScope(needed, principal.scopes)))
    except RateLimitExceeded as exc:
        log.warning("admin_auth_blocked", address=address, retry_after=round(exc.retry_after, 1))
        raise _too_many(exc) from None
    if needed == "operate":
        log.info(
            "admin_action",
            subject=principal.subject,
            method=request.method,
            path=request.url.path,
        )
    return principal


# -- cursors ------------------------------------------------------------------------

_CURSOR_LIMIT: Final = 200


def encode_cursor(*values: object) -> str:
    """An opaque cursor holding *values* (JSON in URL-safe base64)."""
    raw = json.dumps(list(values), separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, *types: type) -> list[Any]:
    """The values of a cursor made by `encode_cursor`, checked against *types*.

    Raises:
        Problem: 400, the cursor is not one this API returned.
    """
    try:
        if len(token) > _CURSOR_LIMIT:
            raise ValueError("too long")
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        for value, kind in zip(values, types, strict=True):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError("wrong type")
            if isinstance(value, str) and "\x00" in value:
                raise ValueError("NUL")
            if isinstance(value, str):
                value.encode("utf-8")  # a lone surrogate cannot be a bound value
            if isinstance(value, int) and not -(2**62) <= value <= 2**62:
                raise ValueError("out of range")
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise Problem(
            400,
            "invalid-cursor",
            "the cursor is not one this API returned",
            errors=[FieldError(field="query.cursor", message=str(exc), type="cursor")],
        ) from None
    return values


class Pagination(BaseModel):
    """Cursor pagination: pass ``next_cursor`` as ``cursor`` for the next page."""

    limit: int
    next_cursor: str | None = Field(description="None on the last page.")


class Count(BaseModel):
    """What an action did: its name (``replay``, ``purge``, ``release``, ...) and how many."""

    action: str
    count: int
