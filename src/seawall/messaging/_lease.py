"""`Lease`: a named lock in the database that one process holds for a while."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from seawall.db import Database, affected_rows, leases


def process_holder() -> str:
    """An identifier for this process: host, pid and a random suffix."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A named lease: held by at most one holder until it expires or is released.

    `hold` takes the lease when it is free or expired, and renews it when this
    holder already has it and half its time has passed. A holder that stalls
    past ``ttl`` loses the lease to the next one to ask, so work guarded by a
    lease must stay safe to do twice (the relay's publishes are deduplicated).

    Args:
        database: where the ``leases`` table lives.
        name: what the lease guards, e.g. ``outbox-relay``.
        ttl: seconds the lease lasts without renewal.
        holder: this holder's identity; a fresh per-process one by default.
    """

    def __init__(
        self,
        database: Database,
        name: str,
        *,
        ttl: float = 15.0,
        holder: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = database
        self.name = name
        self.ttl = timedelta(seconds=ttl)
        self.holder = holder or process_holder()
        self._clock = clock
        self._held_until: datetime | None = None

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, holder={self.holder!r})"

    async def hold(self) -> bool:
        """Return whether this holder has the lease now, taking or renewing it as needed."""
        now = self._clock()
        if self._held_until is not None and now < self._held_until - self.ttl / 2:
            return True
        expires = now + self.ttl
        try:
            return await self._take(now, expires)
        except IntegrityError:
            # Another holder inserted the row first.
            self._held_until = None
            return False

    async def _take(self, now: datetime, expires: datetime) -> bool:
        async with self._db.transaction() as session:
            renewed = await session.execute(
                leases.update()
                .where(
                    leases.c.name == self.name,
                    sa.or_(leases.c.holder == self.holder, leases.c.expires_at <= now),
                )
                .values(holder=self.holder, expires_at=expires)
            )
            if affected_rows(renewed) == 0:
                exists = await session.scalar(
                    sa.select(sa.func.count()).where(leases.c.name == self.name)
                )
                if exists:
                    self._held_until = None
                    return False
                await session.execute(
                    leases.insert().values(name=self.name, holder=self.holder, expires_at=expires)
                )
        self._held_until = expires
        return True

    async def release(self) -> None:
        """Give the lease up now (if this holder has it)."""
        self._held_until = None
        async with self._db.transaction() as session:
            await session.execute(
                leases.delete().where(leases.c.name == self.name, leases.c.holder == self.holder)
            )
