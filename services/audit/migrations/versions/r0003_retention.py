"""Retention: content digests on every record, the retention log and legal holds.

Adds to ``audit_record`` the digests chain version 2 covers instead of the
content (``value_digest``, ``opened_digest``), ``retain_until`` and the purge
marks (``purged_at``, ``purge_id``); creates ``audit_retention_event`` and
``audit_hold``. Rows stored before this revision keep their version 1 links
until ``oix audit migrate`` re-chains them (``_rechain.py``, online only: it
verifies every version 1 link before it replaces it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNPURGED = "purged_at IS NULL"
_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the retention columns and tables."""
    with op.batch_alter_table("audit_record") as table:
        table.add_column(sa.Column("value_digest", sa.LargeBinary(), nullable=True))
        table.add_column(sa.Column("opened_digest", sa.LargeBinary(), nullable=True))
        table.add_column(sa.Column("retain_until", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("purged_at", _Time, nullable=True))
        table.add_column(sa.Column("purge_id", sa.Text(), nullable=True))
    op.create_index(
        "ix_audit_record_unpurged",
        "audit_record",
        ["retain_until"],
        sqlite_where=sa.text(_UNPURGED),
        postgresql_where=sa.text(_UNPURGED),
    )
    op.create_table(
        "audit_retention_event",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recorded_at", _Time, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_retention_event"),
        sa.UniqueConstraint("event_id", name="uq_audit_retention_event_id"),
    )
    op.create_table(
        "audit_hold",
        sa.Column("hold_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("event_key", sa.LargeBinary(), nullable=True),
        sa.Column("since_ms", sa.BigInteger(), nullable=True),
        sa.Column("until_ms", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.Text(), nullable=False),
        sa.Column("placed_at", _Time, nullable=False),
        sa.Column("released_at", _Time, nullable=True),
        sa.Column("released_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("hold_id", name="pk_audit_hold"),
    )


def downgrade() -> None:
    """The audit store is never downgraded."""
    raise NotImplementedError("the audit store is never downgraded")
