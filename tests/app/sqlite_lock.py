"""A test app beside another connection that can hold SQLite's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from seawall.app import create_app
from seawall.config import Settings
from seawall.db import Database


@dataclass
class LockedApp:
    """A running app (its client and database) and a connection of its own on the same file."""

    client: httpx.AsyncClient
    database: Database
    locker: sqlite3.Connection

    async def lock(self) -> None:
        """Take SQLite's write lock on the other connection.

        Off the event loop: the app's own background writers may be inside a
        transaction that needs the loop to reach its commit.
        """
        await asyncio.to_thread(self.locker.execute, "BEGIN IMMEDIATE")

    def unlock(self) -> None:
        """Let the write lock go."""
        self.locker.execute("ROLLBACK")


@asynccontextmanager
async def app_beside_a_lock(settings: Settings, database_url: str) -> AsyncIterator[LockedApp]:
    """Run an app on *database_url* with a 0.2 s database timeout, and a second connection.

    With the short timeout, a request that waits for the write lock fails fast
    (503) instead of after the default five seconds.
    """
    database = Database(database_url, timeout=0.2)
    application = create_app(settings, database=database)
    locker = sqlite3.connect(
        database_url.removeprefix("sqlite:///"),
        isolation_level=None,
        timeout=30,
        check_same_thread=False,
    )
    try:
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://seawall.test"
            ) as client,
        ):
            yield LockedApp(client, database, locker)
    finally:
        locker.close()
        await database.dispose()
