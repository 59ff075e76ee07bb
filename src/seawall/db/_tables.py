"""The schema, as SQLAlchemy Core tables shared by every backend.

The Alembic revisions in ``seawall/db/migrations`` create exactly these tables;
a test compares the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed so that migrations and reflection agree on every backend.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite's autoincrement needs INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are
    stored as naive UTC and made aware again on the way out; naive values are
    refused on the way in rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware datetime in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("priority", sa.String(10), nullable=False),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("customer_id", sa.String(200), nullable=True),
    sa.Column("metadata", sa.JSON(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
    sa.CheckConstraint("status IN ('open', 'in_progress', 'resolved', 'closed')", name="status"),
    # Keyset pagination walks (created_at, id) newest first.
    sa.Index("ix_cases_created_at_id", "created_at", "id"),
    sa.Index("ix_cases_status_created_at", "status", "created_at"),
    sa.Index("ix_cases_priority_created_at", "priority", "created_at"),
    sa.Index("ix_cases_external_id", "external_id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("seq", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=True),
    sa.Column("aggregate_type", sa.String(100), nullable=False),
    sa.Column("aggregate_id", sa.String(200), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=True),
    sa.Column("correlation_id", sa.String(128), nullable=True),
    sa.Column("causation_id", sa.String(128), nullable=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("published_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # Set when the broker refused the event for good (too large, rejected): the relay
    # passes over it, an operator can requeue it.
    sa.Column("parked_at", UTCDateTime(), nullable=True),
    sa.Index("ix_outbox_published_at_seq", "published_at", "seq"),
    # Only the rows waiting to be published, in order: what every relay round reads.
    sa.Index(
        "ix_outbox_pending_seq",
        "seq",
        postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
    ),
    # The pending rows of each aggregate: "is an earlier row of it still pending?"
    sa.Index(
        "ix_outbox_pending_aggregate_seq",
        "aggregate_type",
        "aggregate_id",
        "seq",
        postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
    ),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # The scope is the operation ("POST /cases"): one key may serve different endpoints.
    sa.Column("scope", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_headers", sa.JSON(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("locked_until", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # A fresh token per claim (and takeover): only its holder may complete or release.
    sa.Column("claim_token", sa.String(32), nullable=True),
    sa.CheckConstraint("state IN ('in_flight', 'completed')", name="state"),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

inbox = sa.Table(
    "inbox",
    metadata,
    # One row per (consumer group, message) that a handler committed: the idempotent
    # consumer's memory. A redelivery finds its row and is acknowledged unprocessed.
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("message_id", sa.String(200), primary_key=True),
    sa.Column("processed_at", UTCDateTime(), nullable=False),
    sa.Index("ix_inbox_processed_at", "processed_at"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("message_id", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=True),
    # The message exactly as it was delivered (the CloudEvents JSON), so a replay
    # hands the handler the same bytes.
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    # [{"attempt": n, "at": iso time, "error": text}, ...], oldest first.
    sa.Column("history", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("replayed_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("state IN ('dead', 'replay', 'replayed')", name="state"),
    sa.UniqueConstraint("consumer", "message_id"),
    sa.Index("ix_dead_letters_state_consumer", "state", "consumer"),
)

leases = sa.Table(
    "leases",
    metadata,
    # A named, expiring lock held by one process (the SQLite relay, the purges).
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(100), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

case_activity = sa.Table(
    "case_activity",
    metadata,
    # The cases service's own consumer (``activity__from_cases``) writes one row per
    # case event it handles: the timeline behind ``GET /cases/{id}/activity``.
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("summary", sa.String(500), nullable=False),
    sa.Column("correlation_id", sa.String(128), nullable=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Index("ix_case_activity_case_id_occurred_at", "case_id", "occurred_at"),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    # Every verified webhook delivery, stored in the transaction that also writes
    # its ``webhook.received`` outbox event: the event log behind replay.
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("delivery_id", sa.String(200), nullable=True),
    sa.Column("event_type", sa.String(200), nullable=True),
    # The body exactly as it arrived (the signature covered these bytes).
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    # The delivery's headers minus signatures and credentials.
    sa.Column("headers", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("correlation_id", sa.String(128), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("processed_at", UTCDateTime(), nullable=True),
    # Retry-and-park: when a parked event is tried again, and the record it waits
    # for (``case:<id>``), whose appearance releases it at once.
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("waiting_for", sa.String(200), nullable=True),
    sa.CheckConstraint(
        "status IN ('received', 'processed', 'failed', 'parked', 'ignored')", name="status"
    ),
    sa.Index("ix_webhook_events_provider_received_at", "provider", "received_at"),
    sa.Index("ix_webhook_events_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_webhook_events_waiting_for", "waiting_for"),
)

webhook_dedup = sa.Table(
    "webhook_dedup",
    metadata,
    # The keys a delivery is recognised by (its delivery id and, for providers that
    # do not sign one, the hash of its body), kept for SEAWALL_WEBHOOK_DEDUP_DAYS.
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("webhook_id", sa.String(36), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_webhook_dedup_expires_at", "expires_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # Keys of the admin API: the public id and the SHA-256 of the whole key, never the key.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("scope IN ('read', 'operate')", name="scope"),
)

documents = sa.Table(
    "documents",
    metadata,
    # A file attached to a case: its bytes live in the blob store under ``blob_key``;
    # the import consumer fills in what it extracted (text, page count).
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("case_id", sa.String(36), sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("blob_key", sa.String(300), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("page_count", sa.Integer(), nullable=True),
    sa.Column("text", sa.Text(), nullable=True),
    # The document.uploaded event: its dead letter, if any, says why the import failed.
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("imported_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('uploaded', 'imported')", name="status"),
    sa.CheckConstraint("source IN ('api', 'import')", name="source"),
    # The same bytes attached to the same case twice are one document.
    sa.UniqueConstraint("case_id", "sha256"),
    sa.Index("ix_documents_case_id_created_at", "case_id", "created_at"),
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    # Where each sync stands in its source's change feed: advanced only in the
    # transaction that applied the page, so a restart resumes exactly there.
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("cursor", sa.String(500), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

sync_links = sa.Table(
    "sync_links",
    metadata,
    # A case synced with an external record, by (source, external id): what the sync
    # last wrote or pushed (the case's version, the record's modification time), so
    # stale and echoed changes write nothing.
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.String(200), primary_key=True),
    sa.Column("case_id", sa.String(36), nullable=False),
    sa.Column("case_version", sa.Integer(), nullable=False),
    sa.Column("remote_updated_at", UTCDateTime(), nullable=True),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
    sa.Index("ix_sync_links_case_id", "case_id"),
)
