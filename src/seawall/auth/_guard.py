"""`Authenticator`: one ``Authorization`` header to a `Principal`, with failures rate-limited."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

from seawall.auth._keys import KEY_PREFIX, AuthenticationFailed, Principal
from seawall.errors import RateLimitExceeded
from seawall.resilience import SYSTEM_CLOCK, Clock, RateLimit, RateLimitStorage

if TYPE_CHECKING:
    from seawall.auth._jwt import JwtValidator
    from seawall.auth._store import ApiKeys

__all__ = ["AuthGuard", "Authenticator", "FailedAuthLimiter"]

# Addresses remembered as blocked; the oldest are forgotten first past this many.
_MAX_BLOCKED: Final = 10_000


class FailedAuthLimiter:
    """At most *rate* failed authentications per client address; then refuse for a while.

    Each failure takes a slot of a `RateLimit` keyed by address. The failure that
    finds no slot blocks the address until a slot frees up: while blocked, every
    request from it is refused before its credentials are even looked at, so a
    guesser learns nothing from the answers.

    Args:
        rate: such as ``"10/minute"``.
        storage: a shared `RateLimitStorage` (Redis) to count across instances.
        clock: where time is read.
    """

    def __init__(
        self,
        rate: str = "10/minute",
        *,
        storage: RateLimitStorage | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SYSTEM_CLOCK
        self.limit = RateLimit(
            rate, name="admin-auth-failures", mode="raise", storage=storage, clock=clock
        )
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    def __repr__(self) -> str:
        return f"FailedAuthLimiter({self.limit!r})"

    @asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        """Hold *address*'s turn: its attempts are checked one at a time (in this process).

        Otherwise a burst of guesses would all pass `check` before the first failure
        is counted, and every one of them would be verified.
        """
        lock, users = self._turns.get(address, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._turns[address] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._turns[address]
            if users <= 1:
                del self._turns[address]
            else:
                self._turns[address] = (lock, users - 1)

    def check(self, address: str) -> None:
        """Raise `RateLimitExceeded` while *address* is blocked."""
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - self._clock.monotonic()
        if left <= 0:
            del self._blocked[address]
            return
        raise RateLimitExceeded(limiter="admin-auth-failures", retry_after=left)

    async def failed(self, address: str) -> None:
        """Count one failure of *address*.

        Raises:
            RateLimitExceeded: that was one too many; the address is now blocked.
        """
        try:
            await self.limit.acquire(address)
        except RateLimitExceeded as exc:
            self._blocked[address] = self._clock.monotonic() + exc.retry_after
            self._blocked.move_to_end(address)
            while len(self._blocked) > _MAX_BLOCKED:
                self._blocked.popitem(last=False)
            raise


class Authenticator:
    """Turn an ``Authorization: Bearer <credential>`` header into a `Principal`.

    A credential starting ``sw_`` is an API key (checked by *api_keys*); any
    other is a JWT (checked by *jwt*, when configured).

    Args:
        api_keys: the key store, or None to accept no API keys.
        jwt: the JWT validator, or None to accept no JWTs.
    """

    def __init__(self, *, api_keys: ApiKeys | None = None, jwt: JwtValidator | None = None) -> None:
        self.api_keys = api_keys
        self.jwt = jwt

    def __repr__(self) -> str:
        return f"Authenticator(api_keys={self.api_keys is not None}, jwt={self.jwt!r})"

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return who *authorization* (the header's value) proves the caller is.

        Raises:
            AuthenticationFailed: no credentials, the wrong scheme, or credentials
                that do not verify.
        """
        if not authorization:
            raise AuthenticationFailed("no credentials: send Authorization: Bearer <key or token>")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationFailed("use the Bearer scheme: Authorization: Bearer <credential>")
        if credential.startswith(KEY_PREFIX):
            if self.api_keys is None:
                raise AuthenticationFailed("API keys are not accepted here")
            return await self.api_keys.verify(credential)
        if self.jwt is None:
            raise AuthenticationFailed("not a seawall API key, and no JWKS URL is configured")
        return await self.jwt.verify(credential)


class AuthGuard:
    """An `Authenticator` whose failures count against a `FailedAuthLimiter`.

    What an HTTP layer (the admin API, the console) calls: while an address is
    blocked its credentials are not even checked.

    Args:
        authenticator: checks the credentials.
        failures: counts failures per client address.
    """

    def __init__(self, authenticator: Authenticator, failures: FailedAuthLimiter) -> None:
        self.authenticator = authenticator
        self.failures = failures

    def __repr__(self) -> str:
        return f"AuthGuard({self.authenticator!r})"

    async def authenticate(self, authorization: str | None, *, client: str) -> Principal:
        """The principal of an ``Authorization`` header value sent from *client*.

        Raises:
            RateLimitExceeded: *client* failed too often; try after ``retry_after``.
            AuthenticationFailed: the credentials do not verify (the failure is counted).
        """
        async with self.failures.turn(client):
            self.failures.check(client)
            try:
                return await self.authenticator.authenticate(authorization)
            except AuthenticationFailed:
                await self.failures.failed(client)
                raise

    async def authenticate_key(self, key: str, *, client: str) -> Principal | None:
        """The principal of a bare credential (a console cookie), or None (counted as failed)."""
        try:
            return await self.authenticate(f"Bearer {key}", client=client)
        except (AuthenticationFailed, RateLimitExceeded):
            return None

    async def forbidden(self, client: str) -> None:
        """Count a request refused for a missing scope as a failure of *client*.

        Raises:
            RateLimitExceeded: that was one failure too many.
        """
        await self.failures.failed(client)

    async def aclose(self) -> None:
        """Close the JWKS client, if any."""
        if self.authenticator.jwt is not None:
            await self.authenticator.jwt.aclose()
