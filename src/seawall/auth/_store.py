"""`ApiKeys`: the ``api_keys`` table: create, list, revoke, verify."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from pydantic import SecretStr

from seawall.auth._keys import (
    SCOPES,
    AuthenticationFailed,
    Principal,
    Scope,
    generate_api_key,
    parse_api_key,
    secret_matches,
)
from seawall.db import Database, affected_rows, api_keys

__all__ = ["ApiKeyRecord", "ApiKeys"]

# ``last_used_at`` is written at most this often per key: an admin request is a read.
_TOUCH_EVERY: Final = timedelta(minutes=1)
_NAME_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key as operators see it: never the secret, never its hash."""

    id: str
    name: str
    scope: Scope
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Neither revoked nor expired (now)."""
        now = datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        scope=row["scope"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class ApiKeys:
    """API keys stored hashed in ``api_keys``.

    Args:
        database: where the table is.
        clock: the wall clock (UTC), for expiry and ``last_used_at``.
    """

    def __init__(
        self, database: Database, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = database
        self._clock = clock

    def __repr__(self) -> str:
        return f"ApiKeys({self._db!r})"

    async def create(
        self, name: str, scope: Scope, *, expires_at: datetime | None = None
    ) -> tuple[ApiKeyRecord, SecretStr]:
        """Store a new key and return it with its token (shown once; only its hash is kept).

        Raises:
            ValueError: *name* is empty or too long, *scope* unknown, or *expires_at*
                naive or in the past.
        """
        name = name.strip()
        if not name or len(name) > _NAME_LIMIT or "\x00" in name:
            raise ValueError(f"a key needs a name of 1 to {_NAME_LIMIT} characters")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        now = self._clock()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise ValueError("expires_at must be an aware moment in the future")
        generated = generate_api_key()
        values = {
            "id": generated.key_id,
            "name": name,
            "scope": scope,
            "secret_hash": generated.secret_hash,
            "created_at": now,
            "expires_at": expires_at,
            "last_used_at": None,
            "revoked_at": None,
        }
        async with self._db.transaction() as session:
            await session.execute(api_keys.insert().values(values))
        return _record(values), generated.token

    async def list(self, *, include_revoked: bool = True) -> builtins.list[ApiKeyRecord]:
        """Every key, newest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._db.reading() as session:
            rows = (await session.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """One key by its public id, or None."""
        async with self._db.reading() as session:
            row = (
                (await session.execute(sa.select(api_keys).where(api_keys.c.id == key_id)))
                .mappings()
                .first()
            )
        return None if row is None else _record(row)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key for good; False if there is no such active key."""
        async with self._db.transaction() as session:
            result = await session.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        return affected_rows(result) > 0

    async def verify(self, token: str) -> Principal:
        """Return the principal of *token*.

        Raises:
            AuthenticationFailed: malformed, unknown, revoked or expired key, or a
                secret that does not match (the reason never says which of the
                last two, nor echoes the key).
        """
        key_id = parse_api_key(token)
        async with self._db.reading() as session:
            row = (
                (await session.execute(sa.select(api_keys).where(api_keys.c.id == key_id)))
                .mappings()
                .first()
            )
        # Hash even for an unknown id, so that timing does not tell ids apart.
        matches = secret_matches(token, row["secret_hash"] if row is not None else "0" * 64)
        if row is None or not matches:
            raise AuthenticationFailed("unknown API key")
        now = self._clock()
        if row["revoked_at"] is not None:
            raise AuthenticationFailed("the API key was revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise AuthenticationFailed("the API key has expired")
        if row["last_used_at"] is None or now - row["last_used_at"] >= _TOUCH_EVERY:
            async with self._db.transaction() as session:
                await session.execute(
                    api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now)
                )
        return Principal(
            subject=f"key:{key_id}",
            scopes=frozenset({row["scope"]}),
            method="api_key",
            key_id=key_id,
            name=row["name"],
        )
