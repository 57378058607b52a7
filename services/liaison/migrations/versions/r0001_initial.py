"""The liaison store's tables.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables of the liaison store with their indexes."""
    op.create_table(
        "liaison_alert",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("originator", sa.Text(), nullable=True),
        sa.Column("report_type", sa.Text(), nullable=True),
        sa.Column("signature_status", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agency", "alert_id", name="pk_liaison_alert"),
    )
    op.create_index("ix_liaison_alert_seq", "liaison_alert", ["agency", "seq"], unique=False)
    op.create_table(
        "liaison_change",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("originator", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("report_type", sa.Text(), nullable=True),
        sa.Column("alert_id", sa.Text(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agency", "seq", name="pk_liaison_change"),
    )
    op.create_table(
        "liaison_cursor",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agency", name="pk_liaison_cursor"),
    )
    op.create_table(
        "liaison_event",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("originator", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("report_type", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("withdrawn_reason", sa.Text(), nullable=True),
        sa.Column("first_message_id", sa.Text(), nullable=False),
        sa.Column("current_message_id", sa.Text(), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("versions", sa.Integer(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("impact", sa.Text(), nullable=True),
        sa.Column("tlp", sa.Text(), nullable=False),
        sa.Column("priority", sa.Text(), nullable=False),
        sa.Column("border_section", sa.Text(), nullable=True),
        sa.Column("releasable_to", sa.Text(), nullable=False),
        sa.Column("first_reported_at", sa.BigInteger(), nullable=False),
        sa.Column("last_reported_at", sa.BigInteger(), nullable=False),
        sa.Column("detected_at", sa.BigInteger(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("request_kind", sa.Text(), nullable=True),
        sa.Column("due_at", sa.BigInteger(), nullable=True),
        sa.Column("answered_at", sa.BigInteger(), nullable=True),
        sa.Column("search", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("agency", "originator", "event_id", name="pk_liaison_event"),
    )
    op.create_index(
        "ix_liaison_event_partner", "liaison_event", ["agency", "originator", "seq"], unique=False
    )
    op.create_index(
        "ix_liaison_event_requests",
        "liaison_event",
        ["agency", "request_kind", "due_at"],
        unique=False,
    )
    op.create_index("ix_liaison_event_seq", "liaison_event", ["agency", "seq"], unique=False)
    op.create_index(
        "ix_liaison_event_type", "liaison_event", ["agency", "report_type", "seq"], unique=False
    )
    op.create_table(
        "liaison_link",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("originator", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("relation", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agency", "originator", "message_id", "relation", "target_id", name="pk_liaison_link"
        ),
    )
    op.create_index("ix_liaison_link_target", "liaison_link", ["agency", "target_id"], unique=False)
    op.create_table(
        "liaison_message",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("originator", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_version", sa.Integer(), nullable=False),
        sa.Column("report_type", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("tlp", sa.Text(), nullable=False),
        sa.Column("impact", sa.Text(), nullable=True),
        sa.Column("priority", sa.Text(), nullable=False),
        sa.Column("classification", sa.Text(), nullable=False),
        sa.Column("handling", sa.Text(), nullable=False),
        sa.Column("releasable_to", sa.Text(), nullable=False),
        sa.Column("border_section", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=True),
        sa.Column("signature_status", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value_sha256", sa.Text(), nullable=False),
        sa.Column("superseded_by", sa.Text(), nullable=True),
        sa.Column("cancelled_by", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agency", "originator", "message_id", name="pk_liaison_message"),
    )
    op.create_index(
        "ix_liaison_message_event",
        "liaison_message",
        ["agency", "originator", "event_id"],
        unique=False,
    )
    op.create_index(
        "ix_liaison_message_expires", "liaison_message", ["agency", "expires_at"], unique=False
    )
    op.create_index(
        "ix_liaison_message_id", "liaison_message", ["agency", "message_id"], unique=False
    )
    op.create_index("ix_liaison_message_seq", "liaison_message", ["agency", "seq"], unique=False)
    op.create_index(
        "ix_liaison_message_type_time",
        "liaison_message",
        ["agency", "report_type", "created_at"],
        unique=False,
    )
    op.create_table(
        "liaison_outbox",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("originator", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("claimed_until", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("agency", "delivery_id", name="pk_liaison_outbox"),
        sa.UniqueConstraint(
            "agency", "endpoint", "originator", "message_id", name="uq_liaison_outbox_message"
        ),
    )
    op.create_index(
        "ix_liaison_outbox_due",
        "liaison_outbox",
        ["agency", "status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "liaison_outgoing",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("report_type", sa.Text(), nullable=False),
        sa.Column("target_originator", sa.Text(), nullable=False),
        sa.Column("target_message_id", sa.Text(), nullable=False),
        sa.Column("target_event_id", sa.Text(), nullable=True),
        sa.Column("officer", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("agency", "message_id", name="pk_liaison_outgoing"),
    )
    op.create_index(
        "ix_liaison_outgoing_target",
        "liaison_outgoing",
        ["agency", "target_message_id"],
        unique=False,
    )
    op.create_table(
        "liaison_position",
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=True),
        sa.Column("anchor", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("agency", "topic", "kafka_partition", name="pk_liaison_position"),
    )
    op.create_table(
        "liaison_session",
        sa.Column("token_sha256", sa.Text(), nullable=False),
        sa.Column("agency", sa.Text(), nullable=False),
        sa.Column("officer", sa.Text(), nullable=False),
        sa.Column("via", sa.Text(), nullable=False),
        sa.Column("csrf", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256", name="pk_liaison_session"),
    )
    op.create_index("ix_liaison_session_expires", "liaison_session", ["expires_at"], unique=False)


def downgrade() -> None:
    """Drop every table of the liaison store."""
    for table in (
        "liaison_session",
        "liaison_position",
        "liaison_outgoing",
        "liaison_outbox",
        "liaison_message",
        "liaison_link",
        "liaison_event",
        "liaison_cursor",
        "liaison_change",
        "liaison_alert",
    ):
        op.drop_table(table)
