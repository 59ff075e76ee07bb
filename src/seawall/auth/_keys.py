"""API keys and scopes: the pure part (no I/O).

A key reads ``sw_<id>_<secret>``. The id (12 hex digits) is public: it names
the key in lists, logs and ``seawall admin keys revoke``. The secret is 32
random bytes (256 bits), URL-safe base64. Only ``sha256("seawall-api-key:" +
key)`` is stored.

Why a fast hash and not bcrypt/argon2: a slow hash protects *low-entropy*
secrets (passwords) from guessing after a database leak. A 256-bit random
secret cannot be guessed however fast the hash is (2^256 tries), so a slow
hash would only add tens of milliseconds to every admin request. The stored
hash is compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from pydantic import SecretStr

from seawall.errors import SeawallError

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "AuthenticationFailed",
    "GeneratedKey",
    "MissingScope",
    "Principal",
    "Scope",
    "generate_api_key",
    "hash_api_key",
    "parse_api_key",
    "scope_allows",
    "secret_matches",
]

Scope = Literal["read", "operate"]
"""``read`` sees everything; ``operate`` may also change state (and implies ``read``)."""
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

KEY_PREFIX: Final = "sw_"
_KEY: Final = re.compile(r"sw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_HASH_DOMAIN: Final = b"seawall-api-key:"


class AuthenticationFailed(SeawallError):  # noqa: N818 - leaves name the condition
    """The credentials are missing, malformed, unknown, revoked, expired or forged.

    Attributes:
        reason: a short, safe explanation (never the credential itself).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class MissingScope(SeawallError):  # noqa: N818 - leaves name the condition
    """The caller is authenticated but lacks the scope an operation needs.

    Attributes:
        needed: the scope the operation needs.
        granted: the scopes the caller has.
    """

    def __init__(self, needed: str, granted: Iterable[str]) -> None:
        self.needed = needed
        self.granted = tuple(sorted(granted))
        have = ", ".join(self.granted) or "none"
        super().__init__(f"this operation needs the {needed!r} scope; the caller has: {have}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, as authentication established it.

    Attributes:
        subject: the key's name (``key:<id>``) or the token's ``sub``.
        scopes: the scopes granted (`SCOPES` members only).
        method: ``api_key`` or ``jwt``.
        key_id: the API key's public id, for an API key.
        name: a display name: the key's name, or the token's subject.
    """

    subject: str
    scopes: frozenset[str]
    method: Literal["api_key", "jwt"]
    key_id: str | None = None
    name: str = ""

    def allows(self, needed: Scope) -> bool:
        """Whether the principal holds *needed* (``operate`` implies ``read``)."""
        return scope_allows(self.scopes, needed)

    def require(self, needed: Scope) -> None:
        """Raise `MissingScope` unless the principal holds *needed*."""
        if not self.allows(needed):
            raise MissingScope(needed, self.scopes)


def scope_allows(granted: Iterable[str], needed: Scope) -> bool:
    """Whether *granted* covers *needed*: ``operate`` implies ``read``."""
    held = set(granted)
    return needed in held or (needed == "read" and "operate" in held)


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key: show `token` once, store `key_id` and `secret_hash` only."""

    key_id: str
    token: SecretStr = field(repr=False)
    secret_hash: str = field(repr=False)


def generate_api_key() -> GeneratedKey:
    """Make a new random key (``sw_<12 hex>_<43 base64url>``) and its stored hash."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    token = f"{KEY_PREFIX}{key_id}_{secret}"
    return GeneratedKey(key_id=key_id, token=SecretStr(token), secret_hash=hash_api_key(token))


def parse_api_key(token: str) -> str:
    """Return the public id of *token*.

    Raises:
        AuthenticationFailed: *token* does not have the shape of a seawall key.
    """
    match = _KEY.fullmatch(token)
    if match is None:
        raise AuthenticationFailed("malformed API key")
    return match.group(1)


def hash_api_key(token: str) -> str:
    """The hex SHA-256 stored for *token* (see the module docstring for why SHA-256)."""
    return hashlib.sha256(_HASH_DOMAIN + token.encode()).hexdigest()


def secret_matches(token: str, stored_hash: str) -> bool:
    """Whether *token* hashes to *stored_hash*, compared in constant time."""
    return hmac.compare_digest(hash_api_key(token), stored_hash)
