"""Apply the Alembic migrations shipped in ``seawall/db/migrations``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from seawall.db._database import Database
from seawall.errors import DatabaseError, MigrationError

_MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """Return an Alembic configuration pointing at seawall's migrations."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    """Return the newest migration revision shipped with this seawall."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "seawall ships at least one migration"
    return head


async def current_revision(database: Database) -> str | None:
    """Return the revision the database is at, or None when it was never migrated."""

    def _read(conn: sa.Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with database.engine.connect() as conn:
        return await conn.run_sync(_read)


async def migrate(database: Database, revision: str = "head") -> None:
    """Upgrade the database schema to *revision* (the newest by default).

    Safe to run on every start and from several processes: on PostgreSQL an
    advisory lock lets one process migrate while the others wait.

    Raises:
        MigrationError: a migration failed; the transaction was rolled back.
    """
    config = alembic_config()

    def _upgrade(conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            # Transaction-scoped, so it is released with the migration's transaction.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7305771201)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise MigrationError(
            f"migration to {revision!r} failed ({type(exc).__name__}); "
            "check SEAWALL_DATABASE_URL and that the database is up"
        ) from exc


async def require_schema(database: Database) -> None:
    """Check that the database is at the newest revision this seawall ships.

    Raises:
        DatabaseError: the database cannot be read, or its schema is older or newer;
            the message says to run ``seawall migrate``.
    """
    try:
        revision = await current_revision(database)
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(
            f"cannot read the schema revision ({type(exc).__name__}); "
            "check SEAWALL_DATABASE_URL and that the database is up"
        ) from exc
    if revision != head_revision():
        raise DatabaseError(
            f"the database schema is at revision {revision or 'none'} but this seawall needs "
            f"{head_revision()}; run `seawall migrate` (or set SEAWALL_AUTO_MIGRATE=true)"
        )
