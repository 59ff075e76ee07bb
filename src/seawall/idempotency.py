"""Idempotency keys for mutations, kept in the database.

A client sends ``Idempotency-Key: <key>`` with a mutation. The first request
claims the key (a short transaction that marks it in flight), does its work,
and stores its response in the *same* transaction as the work. A repeat with
the same request gets the stored response; a repeat with a different request
is refused (`IdempotencyKeyMismatch`); a repeat while the first is still
running is refused (`IdempotencyKeyInFlight`). A key whose work failed is
released so the client can retry; a key whose process died is taken over once
its lock expires. Keys expire after a TTL and are purged in batches.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import (
    Database,
    affected_rows,
    dialect_of,
    idempotency_keys,
    insert_ignoring_conflicts,
)
from seawall.errors import IdempotencyClaimLost, IdempotencyKeyInFlight, IdempotencyKeyMismatch

__all__ = [
    "Claim",
    "IdempotencyStore",
    "StoredResponse",
    "request_fingerprint",
    "valid_idempotency_key",
]

_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def valid_idempotency_key(key: str) -> bool:
    """Tell whether *key* is 1-255 visible ASCII characters."""
    return _KEY.fullmatch(key) is not None


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Return a SHA-256 fingerprint of a request, insensitive to JSON formatting.

    A JSON body is canonicalised (sorted keys, no whitespace) so that the same
    document sent twice with other spacing or key order counts as the same request.
    """
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response recorded for a key: replayed as-is to repeats."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """Ownership of an idempotency key for one run of the work.

    Pass it to `IdempotencyStore.complete` or `IdempotencyStore.release`: only the
    claim that still holds the key may finish it.
    """

    scope: str
    key: str
    token: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class IdempotencyStore:
    """Idempotency keys in the ``idempotency_keys`` table.

    Args:
        database: where keys live.
        ttl: how long a key and its response are kept.
        lock_timeout: after this long an in-flight key is taken as abandoned
            (its process died) and the next request may take it over.
        clock: returns the current aware UTC time; tests pass a fake one.
    """

    def __init__(
        self,
        database: Database,
        *,
        ttl: float | timedelta = 86400.0,
        lock_timeout: float | timedelta = 60.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._clock = clock
        self.ttl = timedelta(seconds=_seconds(ttl))
        self.lock_timeout = timedelta(seconds=_seconds(lock_timeout))
        if self.ttl <= timedelta(0) or self.lock_timeout <= timedelta(0):
            raise ValueError("ttl and lock_timeout must be positive")

    async def claim(self, scope: str, key: str, fingerprint: str) -> Claim | StoredResponse:
        """Claim *key* for a new request, or find the response of an earlier one.

        Returns:
            A `Claim` when the caller now owns the key and must do the work, then
            call `complete` inside the work's transaction (or `release` if it
            failed); the `StoredResponse` when an identical request already completed.

        Raises:
            IdempotencyKeyMismatch: the key was used for a different request.
            IdempotencyKeyInFlight: an identical request still holds the key.
        """
        now = self._clock()
        table = idempotency_keys
        claim = Claim(scope, key, secrets.token_hex(16))
        async with self._db.transaction() as session:
            inserted = await session.execute(
                insert_ignoring_conflicts(session, table).values(
                    scope=scope,
                    key=key,
                    request_hash=fingerprint,
                    state="in_flight",
                    created_at=now,
                    locked_until=now + self.lock_timeout,
                    expires_at=now + self.ttl,
                    claim_token=claim.token,
                )
            )
            if affected_rows(inserted) == 1:
                return claim
            where = sa.and_(table.c.scope == scope, table.c.key == key)
            select = sa.select(table).where(where)
            if dialect_of(session) == "postgresql":
                select = select.with_for_update()
            row = (await session.execute(select)).mappings().one()
            expired = row["expires_at"] <= now
            abandoned = row["state"] == "in_flight" and row["locked_until"] <= now
            if expired or (abandoned and row["request_hash"] == fingerprint):
                await session.execute(
                    table.update()
                    .where(where)
                    .values(
                        request_hash=fingerprint,
                        state="in_flight",
                        response_status=None,
                        response_headers=None,
                        response_body=None,
                        created_at=now,
                        locked_until=now + self.lock_timeout,
                        expires_at=now + self.ttl,
                        claim_token=claim.token,
                    )
                )
                return claim
            if row["request_hash"] != fingerprint:
                raise IdempotencyKeyMismatch(key=key)
            if row["state"] == "in_flight":
                raise IdempotencyKeyInFlight(key=key)
            return StoredResponse(
                status=row["response_status"],
                body=row["response_body"],
                headers=dict(row["response_headers"] or {}),
            )

    async def complete(self, session: AsyncSession, claim: Claim, response: StoredResponse) -> None:
        """Record *response* for the claimed key inside the caller's (the work's) transaction.

        Raises:
            IdempotencyClaimLost: the key no longer belongs to *claim* (the work ran
                past the lock timeout and another request took the key over). The
                caller must roll its transaction back, so the work is not done twice.
        """
        result = await session.execute(
            idempotency_keys.update()
            .where(
                idempotency_keys.c.scope == claim.scope,
                idempotency_keys.c.key == claim.key,
                idempotency_keys.c.state == "in_flight",
                idempotency_keys.c.claim_token == claim.token,
            )
            .values(
                state="completed",
                response_status=response.status,
                response_headers=response.headers,
                response_body=response.body,
                locked_until=None,
            )
        )
        if affected_rows(result) != 1:
            raise IdempotencyClaimLost(key=claim.key)

    async def release(self, claim: Claim) -> None:
        """Forget a claimed key whose work failed, so that a retry can run.

        Does nothing when the key was meanwhile taken over by another claim.
        """
        async with self._db.transaction() as session:
            await session.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.scope == claim.scope,
                    idempotency_keys.c.key == claim.key,
                    idempotency_keys.c.state == "in_flight",
                    idempotency_keys.c.claim_token == claim.token,
                )
            )

    async def purge_expired(self, *, batch_size: int = 500, max_batches: int = 100) -> int:
        """Delete expired keys in small batches (short transactions); return how many."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        table = idempotency_keys
        removed = 0
        for _ in range(max_batches):
            now = self._clock()
            async with self._db.transaction() as session:
                doomed = (
                    await session.execute(
                        sa.select(table.c.scope, table.c.key)
                        .where(table.c.expires_at <= now)
                        .limit(batch_size)
                    )
                ).all()
                if not doomed:
                    break
                await session.execute(
                    table.delete().where(
                        sa.tuple_(table.c.scope, table.c.key).in_([tuple(r) for r in doomed])
                    )
                )
            removed += len(doomed)
            if len(doomed) < batch_size:
                break
        return removed
