"""The audit record and event tables.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``audit_record`` and ``audit_event`` with their indexes."""
    op.create_table(
        "audit_record",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("kafka_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_type", sa.SmallInteger(), nullable=False),
        sa.Column("record_key", sa.LargeBinary(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("schema_fingerprint", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("originator", sa.Text(), nullable=True),
        sa.Column("report_type", sa.Text(), nullable=True),
        sa.Column("signature_status", sa.Text(), nullable=False),
        sa.Column("signature_detail", sa.Text(), nullable=False),
        sa.Column("decoded", sa.Text(), nullable=True),
        sa.Column("decode_error", sa.Text(), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "topic", "kafka_partition", "epoch", "kafka_offset", name="pk_audit_record"
        ),
    )
    op.create_index("ix_audit_record_message_id", "audit_record", ["message_id"])
    op.create_index(
        "ix_audit_record_originator_time", "audit_record", ["originator", "kafka_timestamp"]
    )
    op.create_index("ix_audit_record_type_time", "audit_record", ["report_type", "kafka_timestamp"])
    op.create_index("ix_audit_record_time", "audit_record", ["kafka_timestamp"])
    op.create_table(
        "audit_event",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("first_offset", sa.BigInteger(), nullable=True),
        sa.Column("last_offset", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_audit_event"),
    )
    op.create_index(
        "ix_audit_event_partition", "audit_event", ["topic", "kafka_partition", "epoch"]
    )


def downgrade() -> None:
    """The audit store is append-only: no downgrade."""
    raise NotImplementedError("the audit store is never downgraded")
