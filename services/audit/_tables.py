"""The store's tables as SQLAlchemy Core metadata; the migrations create the same.

``audit_record`` is append-only: one row per Kafka record, keyed by its
coordinates. ``audit_event`` records what the consumer noticed about a
broker log: a log that went backwards (a new epoch begins) or offsets that
vanished before they could be read.

Retention (revision 0003) is the one exception to append-only: a purge
clears a record's content columns (``value``, ``decoded``, ``decode_error``)
and sets ``purged_at``/``purge_id``; the digests, facts and chain link stay.
``audit_retention_event`` is the chained log of every purge, erasure, hold
and release; ``audit_hold`` holds the legal holds.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

VERSION_TABLE = "audit_alembic_version"

_Bytes = sa.LargeBinary()
_Time = sa.DateTime(timezone=True)

UNTRUSTED = "signature_status <> 'valid' OR decode_error IS NOT NULL"
"""Rows that cannot be trusted (the quarantine's candidates); a partial index keeps them."""

UNPURGED = "purged_at IS NULL"
"""Rows that still hold their content: the purge's candidates."""

records = sa.Table(
    "audit_record",
    metadata,
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("kafka_partition", sa.Integer(), nullable=False),
    sa.Column("epoch", sa.Integer(), nullable=False),
    sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
    sa.Column("kafka_timestamp", sa.BigInteger(), nullable=False),
    sa.Column("timestamp_type", sa.SmallInteger(), nullable=False),
    sa.Column("record_key", _Bytes, nullable=True),
    sa.Column("headers", sa.Text(), nullable=False),
    sa.Column("value", _Bytes, nullable=True),
    sa.Column("schema_fingerprint", sa.Text(), nullable=True),
    sa.Column("message_id", sa.Text(), nullable=True),
    sa.Column("originator", sa.Text(), nullable=True),
    sa.Column("report_type", sa.Text(), nullable=True),
    sa.Column("signature_status", sa.Text(), nullable=False),
    sa.Column("signature_detail", sa.Text(), nullable=False),
    sa.Column("decoded", sa.Text(), nullable=True),
    sa.Column("decode_error", sa.Text(), nullable=True),
    sa.Column("stored_at", _Time, nullable=False),
    sa.Column("row_hash", _Bytes, nullable=False),
    sa.Column("value_digest", _Bytes, nullable=True),
    sa.Column("opened_digest", _Bytes, nullable=True),
    sa.Column("retain_until", sa.BigInteger(), nullable=True),
    sa.Column("purged_at", _Time, nullable=True),
    sa.Column("purge_id", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint(
        "topic", "kafka_partition", "epoch", "kafka_offset", name="pk_audit_record"
    ),
    sa.Index("ix_audit_record_message_id", "message_id"),
    sa.Index("ix_audit_record_originator_time", "originator", "kafka_timestamp"),
    sa.Index("ix_audit_record_type_time", "report_type", "kafka_timestamp"),
    sa.Index("ix_audit_record_time", "kafka_timestamp"),
    sa.Index(
        "ix_audit_record_untrusted",
        "topic",
        "kafka_partition",
        "epoch",
        "kafka_offset",
        sqlite_where=sa.text(UNTRUSTED),
        postgresql_where=sa.text(UNTRUSTED),
    ),
    sa.Index(
        "ix_audit_record_unpurged",
        "retain_until",
        sqlite_where=sa.text(UNPURGED),
        postgresql_where=sa.text(UNPURGED),
    ),
)

events = sa.Table(
    "audit_event",
    metadata,
    sa.Column("event_id", sa.Text(), nullable=False),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("kafka_partition", sa.Integer(), nullable=False),
    sa.Column("epoch", sa.Integer(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("first_offset", sa.BigInteger(), nullable=True),
    sa.Column("last_offset", sa.BigInteger(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("recorded_at", _Time, nullable=False),
    sa.PrimaryKeyConstraint("event_id", name="pk_audit_event"),
    sa.Index("ix_audit_event_partition", "topic", "kafka_partition", "epoch"),
)

retention_events = sa.Table(
    "audit_retention_event",
    metadata,
    sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
    sa.Column("event_id", sa.Text(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("recorded_at", _Time, nullable=False),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("record_count", sa.Integer(), nullable=False),
    sa.Column("row_hash", _Bytes, nullable=False),
    sa.PrimaryKeyConstraint("seq", name="pk_audit_retention_event"),
    sa.UniqueConstraint("event_id", name="uq_audit_retention_event_id"),
)

holds = sa.Table(
    "audit_hold",
    metadata,
    sa.Column("hold_id", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=True),
    sa.Column("event_key", _Bytes, nullable=True),
    sa.Column("since_ms", sa.BigInteger(), nullable=True),
    sa.Column("until_ms", sa.BigInteger(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("placed_by", sa.Text(), nullable=False),
    sa.Column("placed_at", _Time, nullable=False),
    sa.Column("released_at", _Time, nullable=True),
    sa.Column("released_by", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("hold_id", name="pk_audit_hold"),
)
