"""The async database layer: engine, sessions, schema and migrations.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is for scale-out.
Plain ``sqlite://`` and ``postgresql://`` URLs get their async driver added.
Migrations are Alembic revisions shipped inside the package; `migrate` applies them.
"""

from seawall.db._database import Database, dialect_of, normalize_url
from seawall.db._migrate import current_revision, head_revision, migrate
from seawall.db._tables import (
    UTCDateTime,
    cases,
    idempotency_keys,
    metadata,
    outbox,
)

__all__ = [
    "Database",
    "UTCDateTime",
    "cases",
    "current_revision",
    "dialect_of",
    "head_revision",
    "idempotency_keys",
    "metadata",
    "migrate",
    "normalize_url",
    "outbox",
]
