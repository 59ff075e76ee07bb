"""Documents: files attached to cases, stored in a blob store.

- ``documents`` keeps one row per file attached to a case: where its bytes are in
  the blob store, their size and SHA-256 (unique per case: the same file twice is
  one document), and what the import consumer extracted (text, page count).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(300), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("imported_at", _TS, nullable=True),
        sa.CheckConstraint("status IN ('uploaded', 'imported')", name="ck_documents_status"),
        sa.CheckConstraint("source IN ('api', 'import')", name="ck_documents_source"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_documents_case_id_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.UniqueConstraint("case_id", "sha256", name="uq_documents_case_id_sha256"),
    )
    op.create_index("ix_documents_case_id_created_at", "documents", ["case_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_documents_case_id_created_at", table_name="documents")
    op.drop_table("documents")
