"""`JwtValidator`: bearer JWTs from a federated identity provider, checked against its JWKS.

The JSON Web Key Set is fetched through an `ExternalService` (timeouts,
retries, a breaker) and cached; a token signed with a key id the cache does
not know triggers one refetch (at most every *min_refresh* seconds, so forged
key ids cannot turn the validator into a request amplifier). When the
provider is down, the last good key set keeps being used.

Checks, in order: size, the header's algorithm against the allow-list (never
``none``, never a symmetric ``HS*``: a public key set cannot hold their
secret), the signature with the key its ``kid`` names, then ``iss``, ``aud``,
``exp`` (required), ``nbf`` and ``iat`` with a small leeway. JOSE is done by
``joserfc``, the library Authlib now delegates to (``authlib.jose`` is
deprecated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Final

import structlog
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from seawall.auth._keys import SCOPES, AuthenticationFailed, Principal
from seawall.http import ExternalService
from seawall.resilience import SYSTEM_CLOCK, Clock, Retry

__all__ = ["DEFAULT_ALGORITHMS", "JwtValidator"]

log = structlog.get_logger("seawall.auth")

DEFAULT_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")
"""Asymmetric algorithms accepted unless told otherwise."""
_FORBIDDEN: Final = frozenset({"none", "HS256", "HS384", "HS512"})
# Larger tokens are refused before parsing: headers are rarely allowed past 8 KiB anyway.
MAX_TOKEN_BYTES: Final = 8192


class JwtValidator:
    """Validate bearer JWTs signed by keys of a JWKS URL.

    Args:
        jwks: the JWKS URL, or an `ExternalService` whose base URL serves it.
        issuer: the required ``iss``.
        audience: the required ``aud`` (one of the token's audiences).
        algorithms: the allowed ``alg`` values (asymmetric only).
        scopes_claim: the claim holding the scopes: a space-separated string or a
            list. Only ``read`` and ``operate`` are taken; others are ignored.
        leeway: seconds of clock skew allowed for ``exp``, ``nbf`` and ``iat``.
        cache_ttl: seconds a fetched key set is trusted before it is fetched again.
        min_refresh: the shortest time between two fetches caused by unknown key ids.
        clock: where time is read (``wall`` for the claims, ``monotonic`` for the cache).

    Raises:
        ValueError: an empty issuer or audience, or a forbidden algorithm.
    """

    def __init__(
        self,
        jwks: str | ExternalService,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        scopes_claim: str = "scope",
        leeway: float = 30.0,
        cache_ttl: float = 300.0,
        min_refresh: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("a JWT validator needs an issuer and an audience")
        bad = sorted(set(algorithms) & _FORBIDDEN)
        if bad or not algorithms:
            raise ValueError(f"algorithms must be asymmetric and not empty (refused: {bad})")
        self._owned = isinstance(jwks, str)
        self.service = (
            ExternalService(
                "admin-jwks",
                jwks,
                timeouts=5.0,
                critical=False,
                retry=Retry(max_attempts=2, name="admin-jwks", budget=False),
            )
            if isinstance(jwks, str)
            else jwks
        )
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.scopes_claim = scopes_claim
        self.leeway = leeway
        self.cache_ttl = cache_ttl
        self.min_refresh = min_refresh
        self._clock = clock or SYSTEM_CLOCK
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._tried_at = float("-inf")
        self._generation = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JwtValidator(issuer={self.issuer!r}, audience={self.audience!r})"

    async def aclose(self) -> None:
        """Close the JWKS client (when this validator made it)."""
        if self._owned:
            await self.service.aclose()

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid *token*.

        Raises:
            AuthenticationFailed: the token is malformed, signed by an unknown key or
                with a refused algorithm, forged, expired, or for another issuer or
                audience; or no key set could be fetched.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationFailed("the token is too large")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise AuthenticationFailed("malformed token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthenticationFailed(f"token algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        keys = await self._key_set(kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self.algorithms))
        except (JoseError, ValueError) as exc:
            raise AuthenticationFailed(f"invalid token ({type(exc).__name__})") from None
        claims = decoded.claims
        registry = JWTClaimsRegistry(
            now=int(self._clock.wall()),
            leeway=int(self.leeway),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise AuthenticationFailed(_claim_reason(exc)) from None
        subject = str(claims["sub"])[:200] if claims.get("sub") is not None else "jwt"
        return Principal(
            subject=subject,
            scopes=frozenset(scopes_of(claims.get(self.scopes_claim))),
            method="jwt",
            name=subject,
        )

    async def _key_set(self, kid: str | None) -> KeySet:
        now = self._clock.monotonic()
        keys = self._keys
        fresh = now - self._fetched_at < self.cache_ttl
        known = keys is not None and (kid is None or _has_kid(keys, kid))
        if keys is not None and fresh and known:
            return keys
        generation = self._generation
        async with self._lock:
            if self._generation != generation and self._keys is not None:
                return self._keys  # another request fetched while we waited
            # At most one fetch per min_refresh, failed ones included: unknown kids or a
            # provider answering garbage must not turn every request into a fetch.
            if self._clock.monotonic() - self._tried_at < self.min_refresh:
                return self._known_keys()
            self._tried_at = self._clock.monotonic()
            try:
                self._keys = await self._fetch()
                self._fetched_at = self._clock.monotonic()
                self._generation += 1
            except Exception as exc:
                log.warning("jwks_fetch_failed", error=type(exc).__name__)
            return self._known_keys()

    def _known_keys(self) -> KeySet:
        if self._keys is None:
            raise AuthenticationFailed("the identity provider's keys are unavailable")
        return self._keys

    async def _fetch(self) -> KeySet:
        response = await self.service.get("")
        document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS document has no 'keys' list")
        usable = []
        for key in document["keys"]:
            if not _usable(key, self.algorithms):
                continue
            try:
                KeySet.import_key_set({"keys": [key]})
            except Exception as exc:
                log.warning(
                    "jwks_key_skipped", kid=str(key.get("kid"))[:64], error=type(exc).__name__
                )
                continue
            usable.append(key)
        keys = KeySet.import_key_set({"keys": usable})
        log.info("jwks_fetched", keys=len(usable))
        return keys


def _usable(key: Any, algorithms: Iterable[str]) -> bool:
    # Symmetric keys never belong in a public key set; skip them rather than fail all.
    if not isinstance(key, dict) or key.get("kty") not in {"RSA", "EC", "OKP"}:
        return False
    alg = key.get("alg")
    return alg is None or alg in set(algorithms)


def _has_kid(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except (JoseError, ValueError, KeyError):
        return False
    return True


def _claim_reason(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    claim = getattr(exc, "claim", None)
    if isinstance(claim, str):
        return f"invalid {claim!r} claim"
    return f"invalid token claims ({name})"


def scopes_of(value: object) -> set[str]:
    """The `SCOPES` in a claim value: a space-separated string or a list of strings."""
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = value
    else:
        return set()
    return {item for item in items if isinstance(item, str) and item in SCOPES}
