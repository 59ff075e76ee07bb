"""Messaging: the inbox, dead letters, leases, parked outbox rows, relay wake-ups, activity.

- ``inbox`` remembers which (consumer group, message) a handler committed.
- ``dead_letters`` keeps messages a consumer gave up on, with their history.
- ``leases`` holds named, expiring locks (the single relay on SQLite, purges).
- ``outbox.parked_at`` marks an event the broker refused for good; a partial index
  holds only the pending rows, and PostgreSQL vacuums the table after 1% churn.
- ``case_activity`` is the timeline the service's own consumer writes.
- On PostgreSQL, a statement trigger on ``outbox`` sends ``NOTIFY seawall_outbox``
  so relays wake at commit instead of waiting for their next poll.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("parked_at", _TS, nullable=True))
    pending = sa.text("published_at IS NULL AND parked_at IS NULL")
    op.create_index(
        "ix_outbox_pending_seq",
        "outbox",
        ["seq"],
        postgresql_where=pending,
        sqlite_where=pending,
    )

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("processed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="pk_inbox"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("replayed_at", _TS, nullable=True),
        sa.CheckConstraint("state IN ('dead', 'replay', 'replayed')", name="ck_dead_letters_state"),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint("consumer", "message_id", name="uq_dead_letters_consumer_message_id"),
    )
    op.create_index("ix_dead_letters_state_consumer", "dead_letters", ["state", "consumer"])

    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )

    op.create_table(
        "case_activity",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_activity"),
    )
    op.create_index(
        "ix_case_activity_case_id_occurred_at", "case_activity", ["case_id", "occurred_at"]
    )

    if op.get_bind().dialect.name == "postgresql":
        # Every publish updates a row of the outbox and every purge deletes some:
        # vacuum it after 1% churn, not the default 20%, so the relay's index scans
        # do not wade through dead entries.
        op.execute(
            "ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02)"
        )
        op.execute(
            """
            CREATE FUNCTION seawall_outbox_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('seawall_outbox', '');
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            """
            CREATE TRIGGER seawall_outbox_notify AFTER INSERT ON outbox
            FOR EACH STATEMENT EXECUTE FUNCTION seawall_outbox_notify()
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS seawall_outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS seawall_outbox_notify()")
    op.drop_index("ix_case_activity_case_id_occurred_at", table_name="case_activity")
    op.drop_table("case_activity")
    op.drop_table("leases")
    op.drop_index("ix_dead_letters_state_consumer", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_table("inbox")
    op.drop_index("ix_outbox_pending_seq", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("parked_at")
