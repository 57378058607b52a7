"""A partial index of the records that cannot be trusted, for the quarantine.

After a restart or a rebalance the audit consumer finds the untrusted records
of its partitions that have no copy in the quarantine topic yet; this index
keeps that lookup proportional to the untrusted records, not to the store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_UNTRUSTED = "signature_status <> 'valid' OR decode_error IS NOT NULL"


def upgrade() -> None:
    """Create ``ix_audit_record_untrusted``."""
    op.create_index(
        "ix_audit_record_untrusted",
        "audit_record",
        ["topic", "kafka_partition", "epoch", "kafka_offset"],
        sqlite_where=sa.text(_UNTRUSTED),
        postgresql_where=sa.text(_UNTRUSTED),
    )


def downgrade() -> None:
    """The audit store is append-only: no downgrade."""
    raise NotImplementedError("the audit store is never downgraded")
