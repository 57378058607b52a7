"""The gateway's memory, in SQLite: what its agency published, idempotency keys, partners' acks.

One file per agency under ``<data_dir>/gateway``, shared by the HTTP gateway
and the SDK, so either front door knows what the other published (for
idempotent retries, corrections and cancellations) and survives a restart.

Every statement is a primary-key lookup or a small insert, well under a
millisecond, so they run on the event loop thread: a hop to a worker thread
would cost more than the query. WAL mode with ``synchronous=NORMAL`` keeps
every commit across a crash of the process; a power cut may lose the last
commits, and then a retry writes a report a second time under the same
message id, which consumers drop as a duplicate.

Schema 2 adds the broker's side: every coordinate (topic, partition, offset)
an acknowledgement named, per *broker epoch* (a new epoch begins when the
gateway finds the broker's log replaced: topics lost, partitions changed,
offsets gone backwards, another cluster, or coordinates acknowledged twice);
the topics written to and their partitions; and findings. A file of schema 1
is upgraded in place when opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from services.bus import ConfigError, private_sqlite
from services.gateway._results import Accepted, Delivery

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS published (
    message_id    TEXT PRIMARY KEY,
    report_type   TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    kafka_key     TEXT NOT NULL,
    deliveries    TEXT NOT NULL,
    releasable_to TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    trace_id      TEXT,
    accepted_at   REAL NOT NULL,
    broker_epoch  INTEGER NOT NULL DEFAULT 0,
    lost_at       REAL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS acknowledgements (
    ack_message_id          TEXT PRIMARY KEY,
    acknowledged_message_id TEXT NOT NULL,
    party                   TEXT NOT NULL,
    status                  TEXT NOT NULL,
    note                    TEXT,
    created_at              TEXT NOT NULL,
    topic                   TEXT NOT NULL,
    partition               INTEGER NOT NULL,
    "offset"                INTEGER NOT NULL,
    observed_at             TEXT
);
CREATE INDEX IF NOT EXISTS acknowledgements_by_message
    ON acknowledgements (acknowledged_message_id);
CREATE TABLE IF NOT EXISTS foreign_ids (
    message_id TEXT PRIMARY KEY,
    originator TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS read_positions (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS coordinates (
    broker_epoch INTEGER NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    PRIMARY KEY (broker_epoch, topic, partition, "offset")
);
CREATE TABLE IF NOT EXISTS broker_epochs (
    epoch      INTEGER PRIMARY KEY,
    began_at   REAL NOT NULL,
    reason     TEXT NOT NULL,
    cluster_id TEXT
);
CREATE TABLE IF NOT EXISTS broker_topics (
    topic      TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS findings (
    finding_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    found_at        REAL NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    "offset"        INTEGER NOT NULL,
    broker_epoch    INTEGER NOT NULL,
    lost_message_id TEXT NOT NULL,
    by_message_id   TEXT NOT NULL,
    detail          TEXT NOT NULL
);
"""
_PUBLISHED_COLUMNS = (
    ("broker_epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("lost_at", "REAL"),
)
COORDINATES_REUSED = "coordinates_reused"
"""A finding: the broker acknowledged another report at coordinates it had acknowledged before."""
LOG_LOST = "log_lost"
"""A finding: a partition the gateway wrote to is gone, or ends before offsets it acknowledged."""
RECORD_REPLACED = "record_replaced"
"""A finding: reading its writes back, the gateway found another record (or none) where the
broker had acknowledged one of its reports, and the report nowhere near: it is lost."""
RECORD_MOVED = "record_moved"
"""A finding: a report the broker acknowledged at one offset is in the log at another."""


@dataclass(frozen=True, slots=True)
class Published:
    """A stored report: the first answer, and the fingerprint of the request that made it."""

    accepted: Accepted
    fingerprint: str
    broker_epoch: int = 0
    """The broker epoch its coordinates belong to."""
    lost: bool = False
    """Its coordinates were acknowledged again for another report: the broker lost it."""


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the broker did that lost a report the gateway had answered 201 for."""

    kind: str
    found_at: datetime
    delivery: Delivery
    broker_epoch: int
    lost_message_id: str
    by_message_id: str
    detail: str

    def as_json(self) -> dict[str, object]:
        """The finding as ``GET /v1/findings`` shows it."""
        return {
            "kind": self.kind,
            "found_at": self.found_at.isoformat(),
            "topic": self.delivery.topic,
            "partition": self.delivery.partition,
            "offset": self.delivery.offset,
            "broker_epoch": self.broker_epoch,
            "lost_message_id": self.lost_message_id,
            "by_message_id": self.by_message_id,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class BrokerEpoch:
    """A stretch of time in which the gateway's coordinates name records of one log."""

    epoch: int
    began_at: datetime
    reason: str
    cluster_id: str | None


@dataclass(frozen=True, slots=True)
class KeyUse:
    """What an Idempotency-Key was first used for."""

    message_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class PartnerAck:
    """A partner's Acknowledgement of one of this agency's messages."""

    ack_message_id: str
    acknowledged_message_id: str
    party: str
    status: str
    note: str | None
    created_at: str
    """When the partner says it acknowledged (its header's created_at): a claim."""
    delivery: Delivery
    observed_at: str | None = None
    """When this gateway read it from the bus (None: recorded before this was kept)."""


@dataclass(frozen=True, slots=True)
class Record:
    """What to remember about one accepted report."""

    accepted: Accepted
    fingerprint: str
    idempotency_key: str | None


class Store:
    """The SQLite file of one agency's gateway."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) the store at ``path``.

        Raises:
            ConfigError: the file cannot be opened or was written by a newer gateway.
        """
        try:
            private_sqlite(path)
            # isolation_level=None: transactions are explicit (BEGIN ... COMMIT below).
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Another process (the SDK, `oix demo`) may write the same file.
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise ConfigError(
                    f"{path}: written by a newer gateway (schema {version}, this one "
                    f"knows {SCHEMA_VERSION})",
                )
            db.executescript(_SCHEMA)
            if version < SCHEMA_VERSION:
                _upgrade(db, version)
            _add_observed_at(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot open the gateway store: {exc}") from exc
        return cls(db, path)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def published(self, message_id: str) -> Published | None:
        """The stored report with this message id, if this agency published it here."""
        row = self._db.execute(
            "SELECT message_id, report_type, event_id, kafka_key, deliveries, releasable_to, "
            "fingerprint, trace_id, accepted_at, broker_epoch, lost_at FROM published "
            "WHERE message_id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        deliveries = tuple(Delivery(t, p, o) for t, p, o in orjson.loads(row[4]))
        accepted = Accepted(
            message_id=row[0],
            report_type=row[1],
            event_id=row[2],
            key=row[3],
            deliveries=deliveries,
            releasable_to=tuple(orjson.loads(row[5])),
            accepted_at=datetime.fromtimestamp(row[8], UTC),
            trace_id=row[7],
        )
        return Published(accepted, row[6], row[9], row[10] is not None)

    def key_use(self, key: str, since: datetime) -> KeyUse | None:
        """What ``key`` was used for, if it was used after ``since``."""
        row = self._db.execute(
            "SELECT message_id, fingerprint FROM idempotency_keys "
            "WHERE idempotency_key = ? AND created_at >= ?",
            (key, since.timestamp()),
        ).fetchone()
        return KeyUse(row[0], row[1]) if row is not None else None

    def record(self, records: Iterable[Record]) -> list[Finding]:
        """Remember accepted reports (their keys, their coordinates) in one transaction.

        Returns the findings this made: coordinates of the current broker epoch
        that the store already held for another message id. That report is
        marked lost (a retry of it is published again), and a new broker epoch
        begins, since the log it was in was replaced; these reports are its first.
        """
        records = list(records)
        keys = [
            (
                item.idempotency_key,
                item.accepted.message_id,
                item.fingerprint,
                item.accepted.accepted_at.timestamp(),
            )
            for item in records
            if item.idempotency_key is not None
        ]
        with self._transaction():
            epoch = self.broker_epoch().epoch
            coordinates = _coordinates(records, epoch)
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO coordinates VALUES (?, ?, ?, ?, ?)", coordinates
            )
            found: list[Finding] = []
            if self._db.total_changes - before != len(coordinates):
                # Some coordinates were held already (rare): by whom, one by one.
                self._db.executemany(
                    "DELETE FROM coordinates WHERE broker_epoch = ? AND topic = ? "
                    'AND partition = ? AND "offset" = ? AND message_id = ?',
                    coordinates,
                )
                found, epoch = self._reused(records)
                self._db.executemany(
                    "INSERT OR REPLACE INTO coordinates VALUES (?, ?, ?, ?, ?)",
                    _coordinates(records, epoch),
                )
            # A report the broker acknowledged twice (a retry after a lost answer)
            # keeps its first coordinates, unless they are lost or of an earlier
            # broker epoch: then the new ones are where it is now.
            self._db.executemany(
                "INSERT INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (message_id) DO UPDATE SET deliveries = excluded.deliveries, "
                "accepted_at = excluded.accepted_at, trace_id = excluded.trace_id, "
                "broker_epoch = excluded.broker_epoch, lost_at = NULL "
                "WHERE published.lost_at IS NOT NULL "
                "OR published.broker_epoch < excluded.broker_epoch",
                [_published_row(item, epoch) for item in records],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", keys
            )
        return found

    def _reused(self, records: list[Record]) -> tuple[list[Finding], int]:
        """Findings for coordinates already held by another message id; the epoch to record in."""
        epoch = self.broker_epoch()
        found: list[Finding] = []
        now = datetime.now(UTC)
        for item in records:
            message_id = item.accepted.message_id
            for delivery in item.accepted.deliveries:
                row = self._db.execute(
                    "SELECT message_id FROM coordinates WHERE broker_epoch = ? AND topic = ? "
                    'AND partition = ? AND "offset" = ?',
                    (epoch.epoch, delivery.topic, delivery.partition, delivery.offset),
                ).fetchone()
                if row is None or row[0] == message_id:
                    continue
                held = row[0]
                found.append(
                    Finding(
                        kind=COORDINATES_REUSED,
                        found_at=now,
                        delivery=delivery,
                        broker_epoch=epoch.epoch,
                        lost_message_id=held,
                        by_message_id=message_id,
                        detail=(
                            f"the broker acknowledged {message_id} at {delivery.topic}/"
                            f"{delivery.partition}/{delivery.offset}, where it had acknowledged "
                            f"{held} before: {held} is lost (it was answered 201 and is no "
                            "longer in the log); a retry of it is published again"
                        ),
                    )
                )
        if not found:
            return found, epoch.epoch
        self._db.executemany(
            "UPDATE published SET lost_at = ? WHERE message_id = ?",
            [(now.timestamp(), f.lost_message_id) for f in found],
        )
        self._insert_findings(found)
        begun = self._begin_epoch(
            f"the broker acknowledged {len(found)} write(s) at coordinates it had acknowledged "
            "before for other reports: its log was replaced",
            epoch.cluster_id,
        )
        return found, begun

    def _insert_findings(self, found: list[Finding]) -> None:
        self._db.executemany(
            'INSERT INTO findings (kind, found_at, topic, partition, "offset", broker_epoch, '
            "lost_message_id, by_message_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f.kind,
                    f.found_at.timestamp(),
                    f.delivery.topic,
                    f.delivery.partition,
                    f.delivery.offset,
                    f.broker_epoch,
                    f.lost_message_id,
                    f.by_message_id,
                    f.detail,
                )
                for f in found
            ],
        )

    def release_key(self, key: str, message_id: str) -> None:
        """Forget ``key`` if it names ``message_id`` (its report is published again)."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM idempotency_keys WHERE idempotency_key = ? AND message_id = ?",
                (key, message_id),
            )

    def findings(self) -> list[Finding]:
        """Every finding, oldest first."""
        rows = self._db.execute(
            'SELECT kind, found_at, topic, partition, "offset", broker_epoch, lost_message_id, '
            "by_message_id, detail FROM findings ORDER BY finding_id"
        ).fetchall()
        return [
            Finding(
                kind=r[0],
                found_at=datetime.fromtimestamp(r[1], UTC),
                delivery=Delivery(r[2], r[3], r[4]),
                broker_epoch=r[5],
                lost_message_id=r[6],
                by_message_id=r[7],
                detail=r[8],
            )
            for r in rows
        ]

    def broker_epoch(self) -> BrokerEpoch:
        """The current broker epoch (0 until the gateway first found the log replaced)."""
        row = self._db.execute(
            "SELECT epoch, began_at, reason, cluster_id FROM broker_epochs "
            "ORDER BY epoch DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return BrokerEpoch(0, datetime.fromtimestamp(0, UTC), "the first broker seen", None)
        return BrokerEpoch(row[0], datetime.fromtimestamp(row[1], UTC), row[2], row[3])

    def cluster_id(self) -> str | None:
        """The cluster id the current epoch's broker gave (None: not known yet)."""
        return self.broker_epoch().cluster_id

    def begin_epoch(
        self,
        reason: str,
        cluster_id: str | None,
        lost: dict[tuple[str, int], int] | None = None,
    ) -> tuple[int, list[Finding]]:
        """Begin a new broker epoch; its number, and a finding per partition in ``lost``.

        ``lost`` holds the partitions of the ending epoch the broker no longer
        has (or has less of), each with the last offset acknowledged there.
        """
        now = datetime.now(UTC)
        with self._transaction():
            ending = self.broker_epoch().epoch
            found: list[Finding] = []
            for (topic, partition), last in sorted((lost or {}).items()):
                row = self._db.execute(
                    "SELECT message_id FROM coordinates WHERE broker_epoch = ? AND topic = ? "
                    'AND partition = ? AND "offset" = ?',
                    (ending, topic, partition, last),
                ).fetchone()
                last_id = row[0] if row is not None else ""
                found.append(
                    Finding(
                        kind=LOG_LOST,
                        found_at=now,
                        delivery=Delivery(topic, partition, last),
                        broker_epoch=ending,
                        lost_message_id=last_id,
                        by_message_id="",
                        detail=(
                            f"the broker lost {topic}/{partition} of broker epoch {ending} "
                            f"({reason}): offsets up to {last} were acknowledged (the last for "
                            f"{last_id}); reports there that no consumer had read are gone "
                            "(compare the audit store's extent of that partition); a retry of "
                            "any of them is published again"
                        ),
                    )
                )
            self._insert_findings(found)
            return self._begin_epoch(reason, cluster_id), found

    def _begin_epoch(self, reason: str, cluster_id: str | None) -> int:
        epoch = self.broker_epoch().epoch + 1
        self._db.execute(
            "INSERT INTO broker_epochs VALUES (?, ?, ?, ?)",
            (epoch, datetime.now(UTC).timestamp(), reason, cluster_id),
        )
        # Coordinates of an ended epoch name a log the broker no longer has: each
        # report keeps its own in ``published``, and reuse is looked for per epoch.
        self._db.execute("DELETE FROM coordinates WHERE broker_epoch < ?", (epoch,))
        return epoch

    def set_cluster_id(self, cluster_id: str | None) -> None:
        """Remember the broker's cluster id for the current epoch (first sight)."""
        current = self.broker_epoch()
        with self._transaction():
            if current.epoch == 0 and current.cluster_id is None:
                self._db.execute(
                    "INSERT OR REPLACE INTO broker_epochs VALUES (0, ?, ?, ?)",
                    (current.began_at.timestamp(), current.reason, cluster_id),
                )
            else:
                self._db.execute(
                    "UPDATE broker_epochs SET cluster_id = ? WHERE epoch = ?",
                    (cluster_id, current.epoch),
                )

    def topics(self) -> dict[str, int]:
        """The topics written to, with the partitions they had."""
        return dict(self._db.execute("SELECT topic, partitions FROM broker_topics").fetchall())

    def remember_topics(self, topics: dict[str, int]) -> None:
        """Remember topics written to and their partitions."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO broker_topics VALUES (?, ?)", list(topics.items())
            )

    def last_offsets(self, broker_epoch: int) -> dict[tuple[str, int], int]:
        """Per partition written to, the highest offset acknowledged in ``broker_epoch``."""
        # One index seek per partition: a GROUP BY would read every row of the epoch.
        found: dict[tuple[str, int], int] = {}
        for topic, partitions in self.topics().items():
            for partition in range(partitions):
                row = self._db.execute(
                    'SELECT MAX("offset") FROM coordinates WHERE broker_epoch = ? AND topic = ? '
                    "AND partition = ?",
                    (broker_epoch, topic, partition),
                ).fetchone()
                if row[0] is not None:
                    found[(topic, partition)] = row[0]
        return found

    def acknowledged_below(
        self, broker_epoch: int, topic: str, partition: int, end: int
    ) -> tuple[int, str] | None:
        """The highest (offset, message id) acknowledged in ``broker_epoch`` below ``end``."""
        row = self._db.execute(
            'SELECT "offset", message_id FROM coordinates WHERE broker_epoch = ? AND topic = ? '
            'AND partition = ? AND "offset" < ? ORDER BY "offset" DESC LIMIT 1',
            (broker_epoch, topic, partition, end),
        ).fetchone()
        return (row[0], row[1]) if row is not None else None

    def acknowledged_from(
        self, broker_epoch: int, topic: str, partition: int, start: int
    ) -> list[tuple[int, str]]:
        """Every (offset, message id) acknowledged in ``broker_epoch`` from ``start``, in order."""
        rows = self._db.execute(
            'SELECT "offset", message_id FROM coordinates WHERE broker_epoch = ? AND topic = ? '
            'AND partition = ? AND "offset" >= ? ORDER BY "offset"',
            (broker_epoch, topic, partition, start),
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def record_read_back(self, finding: Finding) -> None:
        """Keep a finding of the read-back; a lost report's retry is then published again."""
        with self._transaction():
            if finding.kind == RECORD_REPLACED:
                self._db.execute(
                    "UPDATE published SET lost_at = ? WHERE message_id = ?",
                    (finding.found_at.timestamp(), finding.lost_message_id),
                )
            self._insert_findings([finding])

    def forget_keys_before(self, before: datetime) -> int:
        """Drop idempotency keys used before ``before``; returns how many."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (before.timestamp(),)
            )
        return cursor.rowcount

    def acknowledgements(self, message_id: str) -> list[PartnerAck]:
        """Partners' acknowledgements of ``message_id``, oldest first."""
        rows = self._db.execute(
            "SELECT ack_message_id, acknowledged_message_id, party, status, note, created_at, "
            'topic, partition, "offset", observed_at FROM acknowledgements '
            "WHERE acknowledged_message_id = ? ORDER BY created_at, ack_message_id",
            (message_id,),
        ).fetchall()
        return [
            PartnerAck(
                ack_message_id=row[0],
                acknowledged_message_id=row[1],
                party=row[2],
                status=row[3],
                note=row[4],
                created_at=row[5],
                delivery=Delivery(row[6], row[7], row[8]),
                observed_at=row[9],
            )
            for row in rows
        ]

    def known(self, message_ids: Iterable[str]) -> set[str]:
        """Which of ``message_ids`` this agency published."""
        ids = list(message_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self._db.execute(
                    f"SELECT message_id FROM published WHERE message_id IN ({marks})",  # noqa: S608  # only placeholders
                    chunk,
                )
            )
        return found

    def record_acknowledgements(
        self,
        acks: Iterable[PartnerAck],
        positions: dict[tuple[str, int], int | None],
    ) -> None:
        """Store acks and the read positions after them in one transaction (exactly once).

        A position of None forgets the partition's: it is read from its start again
        (its log went backwards).
        """
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO acknowledgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.ack_message_id,
                        a.acknowledged_message_id,
                        a.party,
                        a.status,
                        a.note,
                        a.created_at,
                        a.delivery.topic,
                        a.delivery.partition,
                        a.delivery.offset,
                        a.observed_at,
                    )
                    for a in acks
                ],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO read_positions VALUES (?, ?, ?)",
                [(t, p, o) for (t, p), o in positions.items() if o is not None],
            )
            self._db.executemany(
                "DELETE FROM read_positions WHERE topic = ? AND partition = ?",
                [(t, p) for (t, p), o in positions.items() if o is None],
            )

    def record_foreign_ids(self, seen: Iterable[tuple[str, str]]) -> None:
        """Remember (message id, originator) pairs other parties used (the first one kept)."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO foreign_ids VALUES (?, ?)", seen)

    def foreign_originators(self, message_ids: Iterable[str]) -> dict[str, str]:
        """The other party seen using each of ``message_ids`` that one used."""
        ids = list(message_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._db.execute(
                    f"SELECT message_id, originator FROM foreign_ids WHERE message_id IN ({marks})",  # noqa: S608  # only placeholders
                    chunk,
                ).fetchall()
            )
        return found

    def read_positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read on every partition read so far."""
        rows = self._db.execute("SELECT topic, partition, next_offset FROM read_positions")
        return {(t, p): o for t, p, o in rows}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _coordinates(records: list[Record], epoch: int) -> list[tuple[int, str, int, int, str]]:
    return [
        (epoch, d.topic, d.partition, d.offset, item.accepted.message_id)
        for item in records
        for d in item.accepted.deliveries
    ]


def _published_row(item: Record, epoch: int) -> tuple[object, ...]:
    a = item.accepted
    return (
        a.message_id,
        a.report_type,
        a.event_id,
        a.key,
        orjson.dumps([[d.topic, d.partition, d.offset] for d in a.deliveries]),
        orjson.dumps(list(a.releasable_to)),
        item.fingerprint,
        a.trace_id,
        a.accepted_at.timestamp(),
        epoch,
    )


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring a file of an older schema up to this one (tables are created before)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(published)")}
    for name, kind in _PUBLISHED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE published ADD COLUMN {name} {kind}")
    if version == 1:
        # Schema 1 kept coordinates only inside each report's row: index them,
        # in epoch 0, so reuse is found for reports accepted before the upgrade.
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute("SELECT message_id, deliveries FROM published").fetchall()
        coordinates = [
            (t, p, o, m) for m, deliveries in rows for t, p, o in orjson.loads(deliveries)
        ]
        db.executemany("INSERT OR IGNORE INTO coordinates VALUES (0, ?, ?, ?, ?)", coordinates)
        # The partitions written to, as far as they are known (the broker's count
        # is learnt when the gateway first verifies it).
        partitions: dict[str, int] = {}
        for topic, partition, _, _ in coordinates:
            partitions[topic] = max(partitions.get(topic, 0), partition + 1)
        db.executemany(
            "INSERT OR IGNORE INTO broker_topics VALUES (?, ?)", list(partitions.items())
        )
        db.execute("COMMIT")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _add_observed_at(db: sqlite3.Connection) -> None:
    """The column a file written before acknowledgements kept their observed time lacks."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(acknowledgements)")}
    if "observed_at" not in columns:
        db.execute("ALTER TABLE acknowledgements ADD COLUMN observed_at TEXT")
