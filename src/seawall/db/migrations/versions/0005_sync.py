"""CRM sync: cursors (watermarks) per feed, and the links of cases to external records.

- ``sync_cursors`` holds where each sync stands in its source's change feed; it is
  advanced only in the transaction that applied the page.
- ``sync_links`` maps ``(source, external id)`` to a case, with what the sync last
  wrote or pushed (the case's version, the record's modification time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_cursors",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cursor", sa.String(500), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sync_cursors"),
    )
    op.create_table(
        "sync_links",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("case_version", sa.Integer(), nullable=False),
        sa.Column("remote_updated_at", _TS, nullable=True),
        sa.Column("synced_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("source", "external_id", name="pk_sync_links"),
    )
    op.create_index("ix_sync_links_case_id", "sync_links", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_sync_links_case_id", table_name="sync_links")
    op.drop_table("sync_links")
    op.drop_table("sync_cursors")
