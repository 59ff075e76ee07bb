"""`AsyncpgBackend`: the group commit's transactions on the raw asyncpg connection.

Through a SQLAlchemy session, a batch's transaction cost about 2 ms of CPU
whatever its size: the session, the pool's ping at each checkout (three round
trips), ``insertmanyvalues`` and the greenlet bridge at every statement. Here
the writer checks a connection out of the engine's pool once (pinged then) and
keeps it while deliveries keep coming, and each batch is five round trips on
asyncpg: ``BEGIN``, one ``INSERT ... SELECT FROM unnest(...)`` per table (the
dedupe keys with ``ON CONFLICT DO NOTHING RETURNING``, the events, the outbox
rows), ``COMMIT``. The values go through the columns' own bind processors (the
UTC check of `seawall.db.UTCDateTime`, JSON), so the rows are those the
session would write; one statement per table also fires the outbox's
``NOTIFY`` trigger once per batch.

The driver's errors become SQLAlchemy's (`IntegrityError`, `DataError`,
`OperationalError`, ...), as the session would raise them, so the writer and
the app handle both paths alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from seawall.db import Database, UnnestInsert, webhook_dedup, webhook_events
from seawall.db._raw import pooled_connection, raw_failure, unusable
from seawall.messaging import Event, Outbox

__all__ = ["AsyncpgBackend"]

_log = structlog.get_logger("seawall.webhooks")


_CLAIM_COLUMNS: Final = ("provider", "key", "webhook_id", "expires_at")
_RELEASE: Final = (
    "DELETE FROM webhook_dedup AS d USING unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) "
    "AS r(provider, key, webhook_id) "
    "WHERE d.provider = r.provider AND d.key = r.key AND d.webhook_id = r.webhook_id"
)
_HOLDERS: Final = (
    "SELECT d.provider, d.key, d.webhook_id FROM webhook_dedup AS d "
    "JOIN unnest($1::TEXT[], $2::TEXT[]) AS w(provider, key) "
    "ON d.provider = w.provider AND d.key = w.key"
)


class AsyncpgStatements:
    """The batch's statements on one asyncpg connection, inside its transaction."""

    def __init__(self, backend: AsyncpgBackend, driver: Any) -> None:
        self._backend = backend
        self._driver = driver
        self.staged = False
        self.statement: str | None = None
        """The statement last sent (for errors: the text, never the values)."""

    async def claim(self, claims: list[dict[str, Any]]) -> set[tuple[str, str]]:
        insert = self._backend.claim_insert
        self.statement = insert.sql
        rows = await self._driver.fetch(insert.sql, *insert.arguments(claims))
        return {(row[0], row[1]) for row in rows}

    async def release(self, released: list[tuple[str, str, str]]) -> None:
        providers, keys, owners = (list(column) for column in zip(*released, strict=True))
        self.statement = _RELEASE
        await self._driver.execute(_RELEASE, providers, keys, owners)

    async def holders(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not wanted:
            return {}
        providers, keys = (list(column) for column in zip(*wanted, strict=True))
        self.statement = _HOLDERS
        rows = await self._driver.fetch(_HOLDERS, providers, keys)
        return {(row[0], row[1]): str(row[2]) for row in rows}

    async def store(self, rows: list[dict[str, Any]]) -> None:
        insert = self._backend.insert_for(webhook_events, rows[0])
        self.statement = insert.sql
        await self._driver.execute(insert.sql, *insert.arguments(rows))

    async def stage(self, events: list[Event]) -> None:
        if not events:
            return
        rows = self._backend.outbox.rows(events)
        insert = self._backend.insert_for(self._backend.outbox.table, rows[0])
        self.statement = insert.sql
        await self._driver.execute(insert.sql, *insert.arguments(rows))
        self.staged = True


class AsyncpgBackend:
    """Batches on one pooled connection, held while the writer has work.

    Args:
        database: a PostgreSQL `Database` (asyncpg); its pool lends the connection.
        outbox: where the events go; its relays in this process are woken after
            each commit that staged some.
    """

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self.database = database
        self.outbox = outbox
        self.dialect = database.engine.dialect
        self.claim_insert = UnnestInsert(
            webhook_dedup,
            _CLAIM_COLUMNS,
            self.dialect,
            suffix="ON CONFLICT DO NOTHING RETURNING provider, key",
        )
        self._inserts: dict[tuple[str, tuple[str, ...]], UnnestInsert] = {}
        self._connection: AsyncConnection | None = None
        self._driver: Any = None
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"AsyncpgBackend(holding={self._connection is not None})"

    def insert_for(self, table: sa.Table, row: Mapping[str, Any]) -> UnnestInsert:
        """The insert of rows shaped like *row* into *table* (built once per shape)."""
        shape = (table.name, tuple(row))
        insert = self._inserts.get(shape)
        if insert is None:
            insert = self._inserts[shape] = UnnestInsert(table, shape[1], self.dialect)
        return insert

    async def _checkout(self) -> Any:
        if self._driver is None or self._driver.is_closed():
            await self.release()
            connection = await self.database.engine.connect()
            try:
                raw = await pooled_connection(connection)
            except BaseException:
                await connection.close()
                raise
            self._connection, self._driver = connection, raw.driver_connection
            self._pool = self.database.engine.pool
        return self._driver

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncpgStatements]:
        """One batch's transaction on the held connection (checked out first if need be).

        Raises:
            sqlalchemy.exc.DBAPIError: the statement or the commit failed (the
                driver's error translated); nothing of the batch is stored.
        """
        driver = await self._checkout()
        statements = AsyncpgStatements(self, driver)
        try:
            async with driver.transaction():
                yield statements
        except BaseException as exc:
            if unusable(driver):
                await self.release(invalidate=True)
            failure = raw_failure(exc, statements.statement)
            if failure is exc:
                raise
            raise failure from exc
        if statements.staged:
            self.outbox.committed()

    async def release(self, *, invalidate: bool = False) -> None:
        """Give the held connection back to the pool (or discard it, *invalidate*)."""
        connection, self._connection, self._driver = self._connection, None, None
        if connection is None:
            return
        try:
            # Back to a pool the engine disposed meanwhile (shutdown), it would never be closed.
            if invalidate or self.database.engine.pool is not self._pool:
                await connection.invalidate()
            await connection.close()
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            # Dropped either way; the next batch checks out another connection.
            _log.warning("webhook_connection_release_failed", error=type(exc).__name__)
