"""A fake identity provider for tests: a real loopback server with a JWKS, and signed tokens."""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from seawall.testing import FakeRequest, FakeResponse, FakeServer

ISSUER = "https://idp.example.test/"
AUDIENCE = "seawall-admin"


class FakeIdentityProvider(FakeServer):
    """Serves ``GET /jwks`` with the public halves of its keys; `token` signs with them."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[Any] = [
            RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "alg": "RS256"})
        ]
        self.route("GET", "/jwks", self._jwks)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def rotate(self) -> None:
        """Add a new (EC) signing key, as providers do before they switch."""
        self.keys.append(ECKey.generate_key("P-256", parameters={"kid": "ec-2", "alg": "ES256"}))

    def _jwks(self, _request: FakeRequest) -> FakeResponse:
        public = KeySet(self.keys).as_dict(private=False)
        return FakeResponse.json(public)

    def jwks_fetches(self) -> int:
        return sum(1 for request in self.requests if request.path == "/jwks")

    def token(
        self,
        *,
        kid: str = "rsa-1",
        scope: Any = "read",
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        expires_in: int = 300,
        now: float | None = None,
        key: Any = None,
        **claims: Any,
    ) -> str:
        moment = int(now if now is not None else time.time())
        signer = key or next(k for k in self.keys if k.kid == kid)
        alg = "ES256" if isinstance(signer, ECKey) else "RS256"
        payload = {
            "iss": issuer,
            "aud": audience,
            "sub": "alice@example.test",
            "iat": moment,
            "exp": moment + expires_in,
            "scope": scope,
            **claims,
        }
        return jwt.encode({"alg": alg, "kid": signer.kid or kid}, payload, signer)
