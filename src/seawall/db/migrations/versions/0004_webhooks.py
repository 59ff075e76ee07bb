"""Webhooks: the event log of verified deliveries and the keys that dedupe them.

- ``webhook_events`` keeps each verified delivery (raw body, safe headers, type,
  processing status) for processing, inspection and replay.
- ``webhook_dedup`` holds the keys a delivery is recognised by: ``(provider,
  delivery id)`` and, where the provider signs no id or timestamp, ``(provider,
  body hash)``; they expire after ``SEAWALL_WEBHOOK_DEDUP_DAYS``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("processed_at", _TS, nullable=True),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("waiting_for", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'processed', 'failed', 'parked', 'ignored')",
            name="ck_webhook_events_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
    )
    op.create_index(
        "ix_webhook_events_provider_received_at", "webhook_events", ["provider", "received_at"]
    )
    op.create_index(
        "ix_webhook_events_status_next_attempt_at",
        "webhook_events",
        ["status", "next_attempt_at"],
    )
    op.create_index("ix_webhook_events_waiting_for", "webhook_events", ["waiting_for"])
    op.create_table(
        "webhook_dedup",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("webhook_id", sa.String(36), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("provider", "key", name="pk_webhook_dedup"),
    )
    op.create_index("ix_webhook_dedup_expires_at", "webhook_dedup", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_dedup_expires_at", table_name="webhook_dedup")
    op.drop_table("webhook_dedup")
    op.drop_index("ix_webhook_events_waiting_for", table_name="webhook_events")
    op.drop_index("ix_webhook_events_status_next_attempt_at", table_name="webhook_events")
    op.drop_index("ix_webhook_events_provider_received_at", table_name="webhook_events")
    op.drop_table("webhook_events")
