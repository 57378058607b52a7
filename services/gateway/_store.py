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

SCHEMA_VERSION = 1
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
    accepted_at   REAL NOT NULL
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
"""


@dataclass(frozen=True, slots=True)
class Published:
    """A stored report: the first answer, and the fingerprint of the request that made it."""

    accepted: Accepted
    fingerprint: str


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
            "fingerprint, trace_id, accepted_at FROM published WHERE message_id = ?",
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
        return Published(accepted, row[6])

    def key_use(self, key: str, since: datetime) -> KeyUse | None:
        """What ``key`` was used for, if it was used after ``since``."""
        row = self._db.execute(
            "SELECT message_id, fingerprint FROM idempotency_keys "
            "WHERE idempotency_key = ? AND created_at >= ?",
            (key, since.timestamp()),
        ).fetchone()
        return KeyUse(row[0], row[1]) if row is not None else None

    def record(self, records: Iterable[Record]) -> None:
        """Remember accepted reports (and their idempotency keys) in one transaction."""
        published = []
        keys = []
        for item in records:
            a = item.accepted
            published.append(
                (
                    a.message_id,
                    a.report_type,
                    a.event_id,
                    a.key,
                    orjson.dumps([[d.topic, d.partition, d.offset] for d in a.deliveries]),
                    orjson.dumps(list(a.releasable_to)),
                    item.fingerprint,
                    a.trace_id,
                    a.accepted_at.timestamp(),
                ),
            )
            if item.idempotency_key is not None:
                keys.append(
                    (
                        item.idempotency_key,
                        a.message_id,
                        item.fingerprint,
                        a.accepted_at.timestamp(),
                    )
                )
        with self._transaction():
            # OR IGNORE: a report the broker acknowledged twice (a retry after a
            # lost answer) keeps its first coordinates.
            self._db.executemany(
                "INSERT OR IGNORE INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", published
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?)", keys
            )

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
