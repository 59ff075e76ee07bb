"""Idempotency keys carry the token of the claim that owns them.

A request whose key was taken over (after the lock timeout) must not complete
or release the new owner's claim: every claim gets a fresh token, and
``complete``/``release`` only act on the row that still holds theirs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("claim_token")
