"""Re-chaining rows stored with chain version 1 as version 2 (``oix audit migrate``).

Version 1 covered each row's content itself, so a purge would look like
tampering; version 2 covers the content's digests. Every partition holding a
version 1 row is walked in (epoch, offset) order: each existing link is
verified first (an altered store is refused, never laundered into a fresh
chain), then every row of the partition gets its digests and a version 2
link. A ``rechain`` retention event records each partition's old and new
chain head, so the step stays on the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from services.audit._chain import GENESIS, link, link_v1, opened_digest, value_digest
from services.audit._errors import StoreError
from services.audit._record import COLUMNS, AuditRecord, retain_until
from services.audit._retention_log import RetentionKind, append_event
from services.audit._tables import records

_R = records.c
_CHUNK = 2000


def _retain_until(row: AuditRecord) -> int | None:
    if row.decoded is None:
        return None
    try:
        days = orjson.loads(row.decoded).get("header", {}).get("retention_days")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        return None
    return retain_until(row.kafka_timestamp, days)


def _rows(connection: sa.Connection, topic: str, partition: int) -> Any:
    after: tuple[int, int] | None = None
    select = sa.select(*[_R[name] for name in COLUMNS]).where(
        _R.topic == topic, _R.kafka_partition == partition
    )
    while True:
        statement = select
        if after is not None:
            epoch, offset = after
            statement = statement.where(
                sa.or_(_R.epoch > epoch, sa.and_(_R.epoch == epoch, _R.kafka_offset > offset)),
            )
        chunk = connection.execute(
            statement.order_by(_R.epoch, _R.kafka_offset).limit(_CHUNK)
        ).all()
        if not chunk:
            return
        for row in chunk:
            yield AuditRecord(*row)
        after = (chunk[-1].epoch, chunk[-1].kafka_offset)


def rechain(connection: sa.Connection, now: datetime) -> int:
    """Re-chain every partition that holds a version 1 row; returns how many rows changed.

    Raises:
        StoreError: a version 1 (or 2) link does not hold: the store was altered.
    """
    partitions = connection.execute(
        sa.select(_R.topic, _R.kafka_partition)
        .where(_R.opened_digest.is_(None))
        .distinct()
        .order_by(_R.topic, _R.kafka_partition),
    ).all()
    done: list[dict[str, Any]] = []
    changed = 0
    update = (
        records.update()
        .where(
            _R.topic == sa.bindparam("b_topic"),
            _R.kafka_partition == sa.bindparam("b_partition"),
            _R.epoch == sa.bindparam("b_epoch"),
            _R.kafka_offset == sa.bindparam("b_offset"),
        )
        .values(
            value_digest=sa.bindparam("b_value_digest"),
            opened_digest=sa.bindparam("b_opened_digest"),
            retain_until=sa.bindparam("b_retain_until"),
            row_hash=sa.bindparam("b_row_hash"),
        )
    )
    for topic, partition in partitions:
        old, new = GENESIS, GENESIS
        updates: list[dict[str, Any]] = []
        rows = 0
        for row in _rows(connection, topic, partition):
            version_1 = row.opened_digest is None
            expected = link_v1(old, row) if version_1 else link(old, row)
            if expected != bytes(row.row_hash):
                raise StoreError(
                    f"{topic}[{partition}] epoch {row.epoch} offset {row.kafka_offset}: the "
                    "stored hash does not follow from the row and the one before it; the store "
                    "was altered, so it is not re-chained (run `oix audit verify` with the "
                    "previous release and investigate)",
                )
            old = bytes(row.row_hash)
            fresh = row
            if version_1:
                fresh = row._replace(
                    value_digest=value_digest(row.value),
                    opened_digest=opened_digest(row.decoded, row.decode_error),
                    retain_until=_retain_until(row),
                )
            new = link(new, fresh)
            rows += 1
            updates.append(
                {
                    "b_topic": topic,
                    "b_partition": partition,
                    "b_epoch": row.epoch,
                    "b_offset": row.kafka_offset,
                    "b_value_digest": fresh.value_digest,
                    "b_opened_digest": fresh.opened_digest,
                    "b_retain_until": fresh.retain_until,
                    "b_row_hash": new,
                },
            )
            if len(updates) >= _CHUNK:
                connection.execute(update, updates)
                updates = []
        if updates:
            connection.execute(update, updates)
        changed += rows
        done.append(
            {
                "topic": topic,
                "partition": partition,
                "rows": rows,
                "old_head": old.hex(),
                "new_head": new.hex(),
            },
        )
    if done:
        append_event(
            connection,
            kind=RetentionKind.RECHAIN,
            recorded_at=now,
            actor="oix audit migrate",
            reason="chain version 1 verified and replaced by version 2 (digests of content)",
            detail={"partitions": done},
            record_count=changed,
        )
    return changed
