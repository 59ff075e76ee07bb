"""The async database layer: engine, sessions, schema and migrations.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is for scale-out.
Plain ``sqlite://`` and ``postgresql://`` URLs get their async driver added.
Migrations are Alembic revisions shipped inside the package; `migrate` applies them.
"""

from seawall.db._database import (
    Database,
    WriteTurnStats,
    affected_rows,
    dialect_of,
    held_commit,
    insert_ignoring_conflicts,
    insert_ignoring_conflicts_for,
    normalize_url,
)
from seawall.db._migrate import current_revision, head_revision, migrate, require_schema
from seawall.db._raw import (
    RawStatement,
    UnnestInsert,
    raw_transaction,
    sqlite_statement,
    translate_error,
)
from seawall.db._rows import insert_new_rows, insert_rows
from seawall.db._tables import (
    UTCDateTime,
    api_keys,
    case_activity,
    cases,
    dead_letters,
    documents,
    idempotency_keys,
    inbox,
    leases,
    metadata,
    outbox,
    sync_cursors,
    sync_links,
    webhook_dedup,
    webhook_events,
)

__all__ = [
    "Database",
    "RawStatement",
    "UTCDateTime",
    "UnnestInsert",
    "WriteTurnStats",
    "affected_rows",
    "api_keys",
    "case_activity",
    "cases",
    "current_revision",
    "dead_letters",
    "dialect_of",
    "documents",
    "head_revision",
    "held_commit",
    "idempotency_keys",
    "inbox",
    "insert_ignoring_conflicts",
    "insert_ignoring_conflicts_for",
    "insert_new_rows",
    "insert_rows",
    "leases",
    "metadata",
    "migrate",
    "normalize_url",
    "outbox",
    "raw_transaction",
    "require_schema",
    "sqlite_statement",
    "sync_cursors",
    "sync_links",
    "translate_error",
    "webhook_dedup",
    "webhook_events",
]
