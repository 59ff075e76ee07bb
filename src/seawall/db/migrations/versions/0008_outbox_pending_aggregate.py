"""Outbox: index only the pending rows of each aggregate.

A relay round asks, for each row it claims, whether an earlier row of the same
aggregate is still pending (waiting for a retry, or held by another relay).
On the full ``(aggregate_type, aggregate_id, seq)`` index that question walks
every published row of the aggregate still kept (24 hours by default); on a
partial index of the pending rows it reads only those. Nothing else reads the
full index, and every insert and every "published" update paid for it: it goes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


_COLUMNS = ["aggregate_type", "aggregate_id", "seq"]


def upgrade() -> None:
    pending = sa.text("published_at IS NULL AND parked_at IS NULL")
    op.create_index(
        "ix_outbox_pending_aggregate_seq",
        "outbox",
        _COLUMNS,
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.drop_index("ix_outbox_aggregate_type_aggregate_id_seq", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_aggregate_type_aggregate_id_seq", "outbox", _COLUMNS)
    op.drop_index("ix_outbox_pending_aggregate_seq", table_name="outbox")
