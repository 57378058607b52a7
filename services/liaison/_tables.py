"""The liaison store's tables (SQLAlchemy Core); the migrations create the same.

Every table has an ``agency`` column and every query names it: one database
may hold several agencies' stores (PostgreSQL), and a query can never reach
another agency's rows whatever a request asks for. Times are milliseconds
since the epoch (UTC), the same on both backends.

- ``liaison_message``: one row per trusted report received, keyed by
  (agency, proven originator, message id): a message received twice is one row.
- ``liaison_link``: the links of each message (UPDATES, SUPERSEDES,
  RESPONDS_TO, RELATES_TO, and ACKNOWLEDGES / CANCELS for acknowledgements
  and cancellations), to find what refers to a message.
- ``liaison_event``: the unit an officer sees, keyed by (agency, originator,
  event id): its current report, versions, status, request and late flags.
- ``liaison_change``: the change log; ``seq`` is the id of the live stream's
  events, allocated from ``liaison_cursor`` under its row lock, so seq order
  is commit order and ``Last-Event-ID`` resumes exactly.
- ``liaison_position``: where the consumer stands on each partition (written
  in the same transaction as the messages).
- ``liaison_alert``: what an officer must know but is not a report: untrusted
  records, releasability violations, broker logs that went backwards.
- ``liaison_outgoing``: acknowledgements and answers officers published
  through the agency's gateway.
- ``liaison_outbox``: webhook deliveries, written with the message.
- ``liaison_session``: officers' sessions (only the token's SHA-256).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

VERSION_TABLE = "liaison_alembic_version"

_Ms = sa.BigInteger()

messages = sa.Table(
    "liaison_message",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("originator", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("event_id", sa.Text(), nullable=False),
    sa.Column("event_version", sa.Integer(), nullable=False),
    sa.Column("report_type", sa.Text(), nullable=False),
    sa.Column("created_at", _Ms, nullable=False),
    sa.Column("received_at", _Ms, nullable=False),
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
    sa.Column("expires_at", _Ms, nullable=False),
    sa.PrimaryKeyConstraint("agency", "originator", "message_id", name="pk_liaison_message"),
    sa.Index("ix_liaison_message_seq", "agency", "seq"),
    sa.Index("ix_liaison_message_id", "agency", "message_id"),
    sa.Index("ix_liaison_message_event", "agency", "originator", "event_id"),
    sa.Index("ix_liaison_message_type_time", "agency", "report_type", "created_at"),
    sa.Index("ix_liaison_message_expires", "agency", "expires_at"),
)

links = sa.Table(
    "liaison_link",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("originator", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=False),
    sa.Column("relation", sa.Text(), nullable=False),
    sa.Column("target_id", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint(
        "agency", "originator", "message_id", "relation", "target_id", name="pk_liaison_link"
    ),
    sa.Index("ix_liaison_link_target", "agency", "target_id"),
)

events = sa.Table(
    "liaison_event",
    metadata,
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
    sa.Column("first_reported_at", _Ms, nullable=False),
    sa.Column("last_reported_at", _Ms, nullable=False),
    sa.Column("detected_at", _Ms, nullable=True),
    sa.Column("late", sa.Boolean(), nullable=False),
    sa.Column("request_kind", sa.Text(), nullable=True),
    sa.Column("due_at", _Ms, nullable=True),
    sa.Column("answered_at", _Ms, nullable=True),
    sa.Column("search", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("agency", "originator", "event_id", name="pk_liaison_event"),
    sa.Index("ix_liaison_event_seq", "agency", "seq"),
    sa.Index("ix_liaison_event_partner", "agency", "originator", "seq"),
    sa.Index("ix_liaison_event_type", "agency", "report_type", "seq"),
    sa.Index("ix_liaison_event_requests", "agency", "request_kind", "due_at"),
)

changes = sa.Table(
    "liaison_change",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("originator", sa.Text(), nullable=True),
    sa.Column("event_id", sa.Text(), nullable=True),
    sa.Column("message_id", sa.Text(), nullable=True),
    sa.Column("report_type", sa.Text(), nullable=True),
    sa.Column("alert_id", sa.Text(), nullable=True),
    sa.Column("at", _Ms, nullable=False),
    sa.PrimaryKeyConstraint("agency", "seq", name="pk_liaison_change"),
)

cursors = sa.Table(
    "liaison_cursor",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("agency", name="pk_liaison_cursor"),
)

positions = sa.Table(
    "liaison_position",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("kafka_partition", sa.Integer(), nullable=False),
    sa.Column("epoch", sa.Integer(), nullable=False),
    sa.Column("next_offset", sa.BigInteger(), nullable=True),
    sa.Column("anchor", sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint("agency", "topic", "kafka_partition", name="pk_liaison_position"),
)

alerts = sa.Table(
    "liaison_alert",
    metadata,
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
    sa.Column("at", _Ms, nullable=False),
    sa.PrimaryKeyConstraint("agency", "alert_id", name="pk_liaison_alert"),
    sa.Index("ix_liaison_alert_seq", "agency", "seq"),
)

outgoing = sa.Table(
    "liaison_outgoing",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=False),
    sa.Column("report_type", sa.Text(), nullable=False),
    sa.Column("target_originator", sa.Text(), nullable=False),
    sa.Column("target_message_id", sa.Text(), nullable=False),
    sa.Column("target_event_id", sa.Text(), nullable=True),
    sa.Column("officer", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("created_at", _Ms, nullable=False),
    sa.Column("accepted", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("agency", "message_id", name="pk_liaison_outgoing"),
    sa.Index("ix_liaison_outgoing_target", "agency", "target_message_id"),
)

outbox = sa.Table(
    "liaison_outbox",
    metadata,
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("delivery_id", sa.Text(), nullable=False),
    sa.Column("endpoint", sa.Text(), nullable=False),
    sa.Column("originator", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("created_at", _Ms, nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", _Ms, nullable=False),
    sa.Column("claimed_until", _Ms, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", _Ms, nullable=True),
    sa.PrimaryKeyConstraint("agency", "delivery_id", name="pk_liaison_outbox"),
    sa.UniqueConstraint(
        "agency", "endpoint", "originator", "message_id", name="uq_liaison_outbox_message"
    ),
    sa.Index("ix_liaison_outbox_due", "agency", "status", "next_attempt_at"),
)

sessions = sa.Table(
    "liaison_session",
    metadata,
    sa.Column("token_sha256", sa.Text(), nullable=False),
    sa.Column("agency", sa.Text(), nullable=False),
    sa.Column("officer", sa.Text(), nullable=False),
    sa.Column("via", sa.Text(), nullable=False),
    sa.Column("csrf", sa.Text(), nullable=False),
    sa.Column("created_at", _Ms, nullable=False),
    sa.Column("expires_at", _Ms, nullable=False),
    sa.PrimaryKeyConstraint("token_sha256", name="pk_liaison_session"),
    sa.Index("ix_liaison_session_expires", "expires_at"),
)
