"""`seawall.app.create_app`: start-up and shutdown through the lifespan."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from seawall.app import create_app
from seawall.config import Settings
from seawall.db import Database, current_revision, head_revision
from seawall.errors import DatabaseError


def embedded(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        _env_file=None, _secrets_dir=None, database_url=f"sqlite:///{tmp_path}/s.db", **overrides
    )


async def test_embedded_database_is_migrated_at_start_up(tmp_path: Path) -> None:
    app = create_app(embedded(tmp_path))

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/health/ready")

    database = Database(f"sqlite:///{tmp_path}/s.db")
    revision = await current_revision(database)
    await database.dispose()
    assert ready.status_code == 200
    assert revision == head_revision()


async def test_an_unmigrated_database_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    app = create_app(embedded(tmp_path, auto_migrate=False))

    with pytest.raises(DatabaseError, match="run `seawall migrate`"):
        async with app.router.lifespan_context(app):
            pass


async def test_an_unreachable_database_is_refused_with_a_clear_error() -> None:
    settings = Settings(
        _env_file=None,
        _secrets_dir=None,
        database_url="postgresql://nobody:pw@127.0.0.1:1/none",
        database_timeout_seconds=1,
    )
    app = create_app(settings)

    with pytest.raises(DatabaseError, match="SEAWALL_DATABASE_URL") as caught:
        async with app.router.lifespan_context(app):
            pass

    assert "pw" not in str(caught.value)
