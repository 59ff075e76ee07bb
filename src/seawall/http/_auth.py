"""Authentication for outgoing calls: bearer token, API key, HTTP basic, OAuth 2.0.

Each scheme is an `Auth`: ``apply`` adds the credential to a request before it
is sent; ``refresh`` is called once when the service answers 401, and says
whether a fresh credential is now in place (so the request is worth sending
once more). Only `OAuth2ClientCredentials` can refresh.

Credentials are `pydantic.SecretStr` inside, so reprs and logs show
``**********``.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from seawall.errors import (
    InvalidResponse,
    ServiceClientError,
    ServiceTimeout,
    ServiceUnavailable,
)
from seawall.http._response import classify
from seawall.resilience import SYSTEM_CLOCK, Clock

__all__ = ["ApiKey", "Auth", "BasicAuth", "BearerToken", "OAuth2ClientCredentials"]


def _secret(value: str | SecretStr, name: str) -> SecretStr:
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    if not secret.get_secret_value():
        raise ValueError(f"{name} must not be empty")
    return secret


class Auth(Protocol):
    """How an `ExternalService` authenticates its requests."""

    async def apply(self, request: httpx.Request) -> None:
        """Add the credential to *request* (headers or query)."""
        ...

    async def refresh(self, rejected: httpx.Request) -> bool:
        """The service answered *rejected* with 401: renew the credential if possible.

        Returns:
            True when a new credential is in place and sending again can help.
        """
        ...


class BearerToken:
    """``Authorization: Bearer <token>`` with a fixed token."""

    __slots__ = ("_header",)

    def __init__(self, token: str | SecretStr) -> None:
        self._header = SecretStr("Bearer " + _secret(token, "token").get_secret_value())

    def __repr__(self) -> str:
        return "BearerToken(**********)"

    async def apply(self, request: httpx.Request) -> None:
        """Set the ``Authorization`` header."""
        request.headers["Authorization"] = self._header.get_secret_value()

    async def refresh(self, rejected: httpx.Request) -> bool:
        """A fixed token cannot be renewed."""
        return False


class ApiKey:
    """An API key in a header (``X-Api-Key`` by default) or a query parameter.

    Args:
        key: the key.
        header: the header to put it in (ignored when *query* is given).
        query: put the key in this query parameter instead. Logs never show the
            query string, so the key does not leak through them.
        prefix: text before the key in the header (``"Token "``).
    """

    __slots__ = ("_key", "header", "prefix", "query")

    def __init__(
        self,
        key: str | SecretStr,
        *,
        header: str = "X-Api-Key",
        query: str | None = None,
        prefix: str = "",
    ) -> None:
        self._key = _secret(key, "key")
        self.header = header
        self.query = query
        self.prefix = prefix

    def __repr__(self) -> str:
        where = f"query={self.query!r}" if self.query else f"header={self.header!r}"
        return f"ApiKey(**********, {where})"

    async def apply(self, request: httpx.Request) -> None:
        """Set the header or the query parameter."""
        key = self._key.get_secret_value()
        if self.query:
            request.url = request.url.copy_merge_params({self.query: key})
        else:
            request.headers[self.header] = self.prefix + key

    async def refresh(self, rejected: httpx.Request) -> bool:
        """A fixed key cannot be renewed."""
        return False


class BasicAuth:
    """HTTP basic authentication (RFC 7617)."""

    __slots__ = ("_header", "username")

    def __init__(self, username: str, password: str | SecretStr) -> None:
        if not username or ":" in username:
            raise ValueError("username must be non-empty and hold no ':'")
        self.username = username
        raw = f"{username}:{_secret(password, 'password').get_secret_value()}".encode()
        self._header = SecretStr("Basic " + base64.b64encode(raw).decode("ascii"))

    def __repr__(self) -> str:
        return f"BasicAuth({self.username!r}, **********)"

    async def apply(self, request: httpx.Request) -> None:
        """Set the ``Authorization`` header."""
        request.headers["Authorization"] = self._header.get_secret_value()

    async def refresh(self, rejected: httpx.Request) -> bool:
        """Fixed credentials cannot be renewed."""
        return False


class OAuth2ClientCredentials:
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4), built on Authlib.

    Authlib prepares the token request (grant parameters, client
    authentication) and reads the token; seawall sends it with httpx, so a
    failure is one of our errors (a ``401 invalid_client`` is a
    `ServiceClientError` with ``status`` 401 and ``code`` ``invalid_client``).

    The access token is fetched on first use and cached until *refresh_margin*
    before it expires. However many calls need a token at once, one request goes
    to the token endpoint and the others wait for it. When the service rejects a
    token with 401 (revoked early), `refresh` fetches a new one, once for all
    the calls that were rejected with that same token.

    Args:
        token_url: the token endpoint.
        client_id: the client's id.
        client_secret: the client's secret.
        scope: the scopes to ask for (space separated), if any.
        audience: an ``audience`` parameter, for providers that want one (Auth0).
        auth_method: ``client_secret_basic`` (credentials in the Authorization
            header, the RFC's default) or ``client_secret_post`` (in the form).
        refresh_margin: renew this long before the token expires.
        default_lifetime: assumed lifetime when the server gives no ``expires_in``.
        timeout: seconds for one token request.
        service: the name errors carry (the `ExternalService` sets it).
        transport: an httpx transport for the token requests (tests).
        clock: where expiry is timed.

    Raises:
        ExternalServiceError: from `apply` and `refresh`, when no token can be had:
            `ServiceClientError` (wrong credentials), `ServiceUnavailable`,
            `ServiceTimeout`, `InvalidResponse`.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        scope: str | None = None,
        audience: str | None = None,
        auth_method: str = "client_secret_basic",
        refresh_margin: float | timedelta = 60.0,
        default_lifetime: float | timedelta = 300.0,
        timeout: float = 10.0,
        service: str = "oauth2",
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        if auth_method not in {"client_secret_basic", "client_secret_post"}:
            raise ValueError("auth_method must be client_secret_basic or client_secret_post")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = _secret(client_secret, "client_secret")
        self.scope = scope
        self.audience = audience
        self.auth_method = auth_method
        self.refresh_margin = _seconds(refresh_margin)
        self.default_lifetime = _seconds(default_lifetime)
        self.timeout = timeout
        self.service = service
        self._transport = transport
        self._clock = clock or SYSTEM_CLOCK
        self._token: SecretStr | None = None
        self._header: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many tokens were fetched (for tests and health)."""

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials({self.token_url!r}, client_id={self.client_id!r})"

    async def apply(self, request: httpx.Request) -> None:
        """Set ``Authorization: Bearer`` with a valid token, fetching one if needed."""
        header = self._header
        if header is None or self._clock.monotonic() >= self._renew_at:
            header = await self._renew(stale=header)
        request.headers["Authorization"] = header

    async def refresh(self, rejected: httpx.Request) -> bool:
        """Drop the token *rejected* carried and fetch a new one (once for all callers)."""
        await self._renew(stale=rejected.headers.get("Authorization"), force=True)
        return True

    def invalidate(self) -> None:
        """Forget the cached token: the next call fetches a new one."""
        self._header = None
        self._token = None

    async def _renew(self, *, stale: str | None, force: bool = False) -> str:
        async with self._lock:
            header = self._header
            # Another caller renewed it while this one waited: use theirs.
            if header is not None and header != stale:
                return header
            if header is not None and not force and self._clock.monotonic() < self._renew_at:
                return header
            token, lifetime = await self._fetch()
            self._token = SecretStr(token)
            self._header = header = "Bearer " + token
            self._renew_at = self._clock.monotonic() + max(0.0, lifetime - self.refresh_margin)
            return header

    async def _fetch(self) -> tuple[str, float]:
        # Authlib builds the request (grant parameters, client authentication) and
        # reads the token; the HTTP exchange is ours, so its failures land in our
        # error tree and tests can hand in a transport. Imported here: Authlib
        # loads cryptography, which a service without OAuth 2.0 should not pay for.
        from authlib.oauth2.auth import ClientAuth  # noqa: PLC0415
        from authlib.oauth2.rfc6749 import OAuth2Token  # noqa: PLC0415
        from authlib.oauth2.rfc6749.parameters import prepare_token_request  # noqa: PLC0415

        extra: dict[str, Any] = {}
        if self.scope:
            extra["scope"] = self.scope
        if self.audience:
            extra["audience"] = self.audience
        body = prepare_token_request("client_credentials", body="", **extra)
        url, headers, body = ClientAuth(
            self.client_id, self._client_secret.get_secret_value(), self.auth_method
        ).prepare(
            "POST",
            self.token_url,
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            body,
        )
        call: dict[str, Any] = {
            "service": self.service,
            "method": "POST",
            "path": "(token endpoint)",
        }
        self.fetches += 1
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout, transport=self._transport, trust_env=False
            ) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServiceTimeout(phase="token", seconds=self.timeout, **call) from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"token endpoint unreachable ({type(exc).__name__})", **call
            ) from exc
        failure = classify(
            response.status_code,
            response.headers,
            response.content,
            now=self._clock.wall(),
            call=call,
        )
        if failure is not None:
            raise failure
        try:
            data = response.json()
        except ValueError:
            raise InvalidResponse("the token endpoint answered malformed JSON", **call) from None
        if not isinstance(data, dict):
            raise InvalidResponse("the token endpoint answered no JSON object", **call)
        if "error" in data:
            # RFC 6749 §5.2 errors come with 400/401; a 200 carrying one is refused too.
            raise ServiceClientError(
                status=response.status_code,
                provider_message=str(data.get("error_description") or data["error"])[:500],
                code=str(data["error"])[:100],
                **call,
            )
        token = OAuth2Token.from_dict(data)
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise InvalidResponse("the token endpoint answered without an access_token", **call)
        expires_in = token.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else self.default_lifetime
        )
        return access, lifetime


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
