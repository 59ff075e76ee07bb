"""Type-checked (mypy --strict) to prove the public signatures; never run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import create_app
from seawall.config import Settings, load_settings
from seawall.db import Database, migrate
from seawall.idempotency import IdempotencyStore, StoredResponse
from seawall.messaging import Event, Outbox
from seawall.observability import bind_correlation, current_correlation_id


async def uses_public_api(session: AsyncSession) -> None:
    settings: Settings = load_settings(port=8080)
    app: FastAPI = create_app(settings)
    assert app.title
    database = Database(settings.database_url.get_secret_value(), pool_size=5, timeout=2.0)
    await migrate(database)
    store = IdempotencyStore(database, ttl=timedelta(hours=1), lock_timeout=30.0)
    claimed: StoredResponse | None = await store.claim("POST /x", "key", "fingerprint")
    assert claimed is None or claimed.status >= 200
    with bind_correlation("abc"):
        event = Event.create("case.created", source="/test", subject="1", data={"a": 1})
        await Outbox().add(session, event)
        correlation: str | None = current_correlation_id()
        assert correlation == "abc"
