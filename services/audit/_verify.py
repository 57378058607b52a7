"""``oix audit verify``: prove the store complete and unaltered, or say exactly where it is not.

For every partition the store holds, in (epoch, offset) order:

- the hash chain is recomputed from the stored columns; a row whose hash does
  not follow from its content and the previous row was altered (or a row
  before it was altered, inserted or removed); chain version 2 covers the
  content through its digests, and content still held must match them, so a
  record purged by retention verifies like any other and is counted as
  purged, while an altered one does not;
- every purged row names a purge in the chained retention log, and that log's
  own chain holds;
- offsets are contiguous within each epoch, from the first one stored;
- signatures are verified again against the agreement's keys, and must give
  the status stored.

Then the store is compared with the broker (when one is given): every record
the broker still holds must be in the store, except those it has not reached
yet (lag, reported apart from loss); the store must not reach past the
broker's log (a log that went backwards unnoticed); nothing acknowledged to
Kafka may be missing. Log resets and vanished offsets the consumer recorded
are findings too: across them completeness cannot be proven. These are
**integrity** findings: the store is not proven complete and unaltered.

**Trust** findings are apart: the store may be intact and still hold records
that prove nothing (stored as ``invalid``, ``unsigned``, ``unknown_key``, or
undecodable, e.g. an unknown schema), counted per partition and reason with
how many the quarantine topic holds a copy of, and message ids stored under
two proven originators (a message is (originator, message id): one id naming
two messages). Repeated broker anomalies are grouped per partition and epoch,
each one kept for ``--details``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from services.audit._broker_view import BrokerPartition
from services.audit._chain import GENESIS, content_matches, link, link_v1
from services.audit._events import EventKind, LogEvent
from services.audit._opening import RecordOpener
from services.audit._record import AuditRecord, Opening, coordinates_key, reason_of
from services.audit._retention import retention_events
from services.audit._retention_log import RetentionEvent, RetentionKind, chain_events
from services.audit._store import AuditStore, Partition
from services.bus import SignatureStatus

SCAN_CHUNK = 5000


class FindingKind(StrEnum):
    """What is wrong."""

    ALTERED = "altered"
    """A row's hash does not follow from its content and the previous row."""
    GAP = "gap"
    """Offsets missing inside a stored epoch."""
    MISSING = "missing"
    """The broker holds (or Kafka acknowledged) records the store lacks."""
    AHEAD_OF_BROKER = "ahead_of_broker"
    """The store reaches past the broker's log: it went backwards, not yet noticed."""
    PARTITION_GONE = "partition_gone"
    """The broker no longer has a partition the store holds."""
    LOG_RESET = "log_reset"
    """The consumer saw the broker's log go backwards and began a new epoch."""
    BROKER_LOSS = "broker_loss"
    """The consumer saw offsets vanish from the broker before it could read them."""
    REPEATED_OFFSET = "repeated_offset"
    """The broker served an offset twice: the first record is stored, the other described."""
    EPOCH = "epoch"
    """An epoch begins without a recorded reset."""
    UNRECORDED_PURGE = "unrecorded_purge"
    """A row marked purged that no purge or erasure in the retention log names."""
    RETENTION_LOG = "retention_log"
    """The retention log's chain is broken: an event was altered, inserted or removed."""
    SIGNATURE = "signature"
    """Verifying the signature again gives another status than the stored one."""
    UNTRUSTED = "untrusted"
    """Records stored that prove no originator (trust): forged, unsigned, unknown key or schema."""
    MESSAGE_ID_REUSED = "message_id_reused"
    """One message id stored under two proven originators (trust): two messages, one id."""

    @property
    def category(self) -> FindingCategory:
        """Whether the finding is about the store's integrity or about what it holds."""
        return FindingCategory.TRUST if self in _TRUST else FindingCategory.INTEGRITY


class FindingCategory(StrEnum):
    """The two questions ``verify`` answers; the exit status tells them apart."""

    INTEGRITY = "integrity"
    """Is the store complete and unaltered (chains, gaps, the broker's log)?"""
    TRUST = "trust"
    """Does every record prove its originator, and name one message per id?"""


_TRUST = {FindingKind.UNTRUSTED, FindingKind.MESSAGE_ID_REUSED}

_GROUPED = {EventKind.OFFSET_REPEATED, EventKind.OFFSET_GAP}
"""Anomalies a broker can repeat many times: one finding per partition and epoch."""

_UNTRUSTED_MEANING = {
    "invalid": "the signature does not hold (forged, altered, or signed by another party)",
    "unsigned": "no signature",
    "unknown_key": "signed with a key the agreement does not list",
    "unknown_schema": "written with a schema version not released, so its originator is unproven",
    "undecodable": "the value does not decode, so its originator is unproven",
}


_EVENT_FINDINGS = {
    EventKind.LOG_RESET: FindingKind.LOG_RESET,
    EventKind.OFFSET_GAP: FindingKind.BROKER_LOSS,
    EventKind.OFFSET_REPEATED: FindingKind.REPEATED_OFFSET,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the auditor must look at."""

    kind: FindingKind
    topic: str
    partition: int
    epoch: int | None
    first_offset: int | None
    last_offset: int | None
    detail: str
    count: int = 1
    """How many occurrences this finding stands for (grouped anomalies, untrusted records)."""
    details: tuple[str, ...] = ()
    """One line per occurrence, when grouped (``oix audit verify --details``)."""

    @property
    def category(self) -> FindingCategory:
        """Integrity or trust."""
        return self.kind.category

    @property
    def where(self) -> str:
        """``topic[partition]`` with the epoch and offsets it concerns."""
        text = f"{self.topic}[{self.partition}]"
        if self.epoch is not None:
            text += f" epoch {self.epoch}"
        if self.first_offset is not None:
            text += f" offset {self.first_offset}"
            if self.last_offset is not None and self.last_offset != self.first_offset:
                text += f"..{self.last_offset}"
        return text


@dataclass(slots=True)
class PartitionSummary:
    """What verification found for one partition."""

    topic: str
    partition: int
    epoch: int | None = None
    rows: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    chain_head: bytes = GENESIS
    broker: BrokerPartition | None = None
    findings: int = 0
    purged: int = 0
    """Rows whose content was purged (retention or erasure): digests and chain kept."""

    @property
    def lag(self) -> int | None:
        """Records on the broker not stored yet (not a loss: the consumer has yet to read them)."""
        if self.broker is None:
            return None
        return max(0, self.broker.high_watermark - self.stored_next(self.broker))

    def stored_next(self, broker: BrokerPartition) -> int:
        """The first offset the store lacks; the broker's log start when it holds none."""
        return broker.log_start if self.last_offset is None else self.last_offset + 1


@dataclass(slots=True)
class VerifyReport:
    """Everything ``oix audit verify`` found."""

    partitions: list[PartitionSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rows: int = 0
    signatures_checked: int = 0
    broker_compared: bool = False
    untrusted: dict[str, int] = field(default_factory=dict)
    """Records that prove no originator, by reason (quarantine copies not counted)."""
    quarantined: int | None = None
    """How many of those the store holds a quarantine copy of (None: not checked)."""
    reused_ids: int = 0
    """Message ids stored under more than one proven originator."""
    retention: list[RetentionEvent] = field(default_factory=list)
    """Every purge, erasure, hold and release, in order (the retention log)."""
    warnings: list[str] = field(default_factory=list)
    """What is not a finding yet needs a look (the broker keeping records too long)."""

    @property
    def purged(self) -> int:
        """Rows whose content was purged, over every partition."""
        return sum(p.purged for p in self.partitions)

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not self.findings

    def of(self, category: FindingCategory) -> list[Finding]:
        """The findings of one category."""
        return [f for f in self.findings if f.category is category]

    @property
    def lag(self) -> int:
        """Records on the broker the consumer has not stored yet, over every partition."""
        return sum(p.lag or 0 for p in self.partitions)


class _PartitionCheck:
    """The running state of verifying one partition in order."""

    def __init__(
        self, summary: PartitionSummary, events: list[LogEvent], *, copies: bool = True
    ) -> None:
        self.summary = summary
        self.findings: list[Finding] = []
        self.untrusted: dict[tuple[str, int], list[AuditRecord]] = {}
        """Per (reason, epoch): the records that prove no originator (``copies``: counted)."""
        self._copies = copies
        self.resets = {e.epoch for e in events if e.kind is EventKind.LOG_RESET}
        self._gaps = [e for e in events if e.kind is EventKind.OFFSET_GAP]
        self._hash = GENESIS
        self._previous: AuditRecord | None = None
        self.purges: set[str] = set()
        """The event ids of every purge and erasure in the retention log."""

    def _find(
        self, kind: FindingKind, row: AuditRecord, first: int, last: int, detail: str
    ) -> None:
        self.findings.append(
            Finding(kind, row.topic, row.kafka_partition, row.epoch, first, last, detail),
        )

    def row(self, row: AuditRecord) -> None:
        # Chain version 1 rows (stored before retention) until `oix audit migrate` re-chains.
        linked = link_v1 if row.opened_digest is None else link
        if linked(self._hash, row) != row.row_hash:
            self._find(
                FindingKind.ALTERED,
                row,
                row.kafka_offset,
                row.kafka_offset,
                "the row's hash does not follow from its content and the previous row's hash: "
                "this row was altered, or a row before it was altered, inserted or removed",
            )
        elif row.opened_digest is not None and not content_matches(row):
            self._find(
                FindingKind.ALTERED,
                row,
                row.kafka_offset,
                row.kafka_offset,
                "the row's content does not match the digests its chain link covers: the "
                "value or what was decoded from it was altered (or removed without a purge)",
            )
        if row.purged_at is not None:
            self.summary.purged += 1
            if row.purge_id not in self.purges:
                self._find(
                    FindingKind.UNRECORDED_PURGE,
                    row,
                    row.kafka_offset,
                    row.kafka_offset,
                    f"marked purged by {row.purge_id!r}, which no purge or erasure in the "
                    "retention log names",
                )
        previous = self._previous
        if previous is None or row.epoch != previous.epoch:
            if row.epoch > 0 and row.epoch not in self.resets:
                self._find(
                    FindingKind.EPOCH,
                    row,
                    row.kafka_offset,
                    row.kafka_offset,
                    f"epoch {row.epoch} begins without a recorded log reset",
                )
        elif row.kafka_offset != previous.kafka_offset + 1:
            first, last = previous.kafka_offset + 1, row.kafka_offset - 1
            if not any(
                g.epoch == row.epoch and g.first_offset == first and g.last_offset == last
                for g in self._gaps
            ):
                self._find(
                    FindingKind.GAP,
                    row,
                    first,
                    last,
                    f"{last - first + 1} offset(s) missing from the store between stored rows",
                )
        # Chain from the stored hash, so that one altered row is reported once, where it is.
        self._hash = row.row_hash
        self._previous = row
        summary = self.summary
        summary.rows += 1
        summary.chain_head = row.row_hash
        if summary.epoch != row.epoch:
            summary.epoch = row.epoch
            summary.first_offset = row.kafka_offset
        summary.last_offset = row.kafka_offset

    def trust(self, row: AuditRecord, now: Opening | None) -> None:
        """Count ``row`` if it proves no originator (``now``: what verifying it again found)."""
        if not self._copies or row.trusted or (now is not None and _released_since(row, now)):
            return
        self.untrusted.setdefault((reason_of(row), row.epoch), []).append(row)

    def untrusted_findings(self) -> list[Finding]:
        """One trust finding per reason and epoch, with the offsets it spans."""
        found = []
        for (reason, epoch), rows in sorted(self.untrusted.items()):
            first = rows[0]
            status = "unverified_origin" if reason in {"unknown_schema", "undecodable"} else reason
            found.append(
                Finding(
                    FindingKind.UNTRUSTED,
                    first.topic,
                    first.kafka_partition,
                    epoch,
                    first.kafka_offset,
                    rows[-1].kafka_offset,
                    f"{len(rows)} record(s) that prove no originator, {reason}: "
                    f"{_UNTRUSTED_MEANING.get(reason, reason)}; stored and flagged, never shown "
                    f"as proven (`oix audit query --topic {first.topic} --partition "
                    f"{first.kafka_partition} --status {status}`)",
                    count=len(rows),
                    details=tuple(
                        f"{r.topic}[{r.kafka_partition}]@{r.kafka_offset}: {r.signature_status}"
                        f"{', ' + r.signature_detail if r.signature_detail else ''}"
                        f"{'; ' + r.decode_error if r.decode_error else ''}"
                        for r in rows
                    ),
                ),
            )
        return found

    def signature(self, row: AuditRecord, now: Opening) -> None:
        found = now.signature_status
        if found == row.signature_status or _released_since(row, now):
            return
        self._find(
            FindingKind.SIGNATURE,
            row,
            row.kafka_offset,
            row.kafka_offset,
            f"stored as {row.signature_status!r}, verifies now as {found!r}",
        )


def _released_since(row: AuditRecord, now: Opening) -> bool:
    """A record stored raw for want of its schema, which decodes and verifies valid now.

    Its schema was released after it was stored: that is the one way a stored
    status may rightly change (from ``unverified_origin`` to ``valid``).
    """
    return (
        row.unknown_schema
        and row.signature_status == SignatureStatus.UNVERIFIED_ORIGIN
        and now.decoded is not None
        and now.signature_status == SignatureStatus.VALID
    )


class Verifier:
    """Verifies an :class:`~services.audit.AuditStore` (and compares it with a broker)."""

    def __init__(
        self,
        store: AuditStore,
        signatures: RecordOpener | None,
        *,
        on_progress: Callable[[int], None] | None = None,
        quarantine_topic: str | None = None,
    ) -> None:
        """``signatures`` verifies signatures again; None skips that check.

        ``quarantine_topic`` (``<prefix>.quarantine``): its records are copies,
        not counted as untrusted again; the untrusted records of every other
        topic are matched with the copies the store holds of them.
        """
        self.store = store
        self.signatures = signatures
        self.on_progress = on_progress
        self.quarantine_topic = quarantine_topic
        self._purges: set[str] = set()

    async def total_rows(self) -> int:
        """How many rows verification reads (for a progress bar)."""
        return await self.store.count()

    async def run(self, broker: dict[Partition, BrokerPartition] | None) -> VerifyReport:
        """Verify every partition; compare with ``broker`` unless it is None."""
        report = VerifyReport(broker_compared=broker is not None)
        report.retention = await retention_events(self.store)
        self._purges = {
            e.event_id
            for e in report.retention
            if e.kind in {RetentionKind.PURGE, RetentionKind.ERASURE}
        }
        for seq in chain_events(report.retention):
            report.findings.append(
                Finding(
                    FindingKind.RETENTION_LOG,
                    "retention log",
                    0,
                    None,
                    None,
                    None,
                    f"retention event {seq}: its hash does not follow from its content and the "
                    "event before it (an event was altered, inserted or removed)",
                ),
            )
        extents = await self.store.extents()
        events = await self.store.log_events()
        by_partition: dict[Partition, list[LogEvent]] = {
            (e.topic, e.partition): [] for e in extents
        }
        for event in events:
            by_partition.setdefault((event.topic, event.partition), []).append(event)
        untrusted: list[AuditRecord] = []
        for (topic, number), mine in sorted(by_partition.items()):
            report.partitions.append(await self._partition(topic, number, mine, report, untrusted))
        report.findings += _event_findings(events)
        await self._trust(report, untrusted)
        if broker is not None:
            self._compare(report, broker)
        report.findings.sort(
            key=lambda f: (f.topic, f.partition, f.epoch or 0, f.first_offset or 0)
        )
        return report

    async def _partition(
        self,
        topic: str,
        number: int,
        events: list[LogEvent],
        report: VerifyReport,
        untrusted: list[AuditRecord],
    ) -> PartitionSummary:
        summary = PartitionSummary(topic, number)
        check = _PartitionCheck(summary, events, copies=topic != self.quarantine_topic)
        check.purges = self._purges
        after: tuple[int, int] | None = None
        while True:
            rows = await self.store.scan(topic, number, after, SCAN_CHUNK)
            if not rows:
                break
            openings: list[Opening | None] | None = None
            kept = [r for r in rows if r.purged_at is None]
            if self.signatures is not None:
                # A purged row has no value left to verify: its stored status stands.
                opened = iter(
                    await self.signatures.openings([(r.value, r.header_pairs()) for r in kept])
                )
                openings = [next(opened) if r.purged_at is None else None for r in rows]
            for index, row in enumerate(rows):
                check.row(row)
                now = None if openings is None else openings[index]
                if now is not None:
                    check.signature(row, now)
                check.trust(row, now)
            report.rows += len(rows)
            if openings is not None:
                report.signatures_checked += len(kept)
            if self.on_progress is not None:
                self.on_progress(len(rows))
            after = (rows[-1].epoch, rows[-1].kafka_offset)
        latest = max(check.resets, default=None)
        if latest is not None and (summary.epoch is None or latest > summary.epoch):
            # A reset was noticed and nothing stored since: the current epoch is empty.
            summary.epoch, summary.first_offset, summary.last_offset = latest, None, None
        trust = check.untrusted_findings()
        summary.findings = len(check.findings) + len(trust)
        report.findings += check.findings + trust
        for (reason, _), rows in check.untrusted.items():
            report.untrusted[reason] = report.untrusted.get(reason, 0) + len(rows)
            untrusted += rows
        return summary

    async def _trust(self, report: VerifyReport, untrusted: list[AuditRecord]) -> None:
        """Quarantine copies of the untrusted records, and message ids reused across parties."""
        if self.quarantine_topic is not None:
            copied = await self.store.keys(self.quarantine_topic)
            report.quarantined = sum(
                coordinates_key(r.topic, r.kafka_partition, r.epoch, r.kafka_offset) in copied
                for r in untrusted
            )
        by_id: dict[str, list[AuditRecord]] = {}
        for record in await self.store.reused_message_ids():
            by_id.setdefault(record.message_id or "", []).append(record)
        report.reused_ids = len(by_id)
        for message_id, records in by_id.items():
            report.findings.append(_reuse_finding(message_id, records))

    @staticmethod
    def _compare(report: VerifyReport, broker: dict[Partition, BrokerPartition]) -> None:
        by_partition = {(p.topic, p.partition): p for p in report.partitions}
        for where, found in broker.items():
            if where not in by_partition:
                summary = PartitionSummary(*where)
                report.partitions.append(summary)
                by_partition[where] = summary
            by_partition[where].broker = found
        for where, summary in sorted(by_partition.items()):
            seen = summary.broker
            topic, number = where
            if seen is None:
                if summary.rows:
                    report.findings.append(
                        Finding(
                            FindingKind.PARTITION_GONE,
                            topic,
                            number,
                            summary.epoch,
                            None,
                            None,
                            "the broker no longer has this partition (topic deleted, or a memory "
                            "broker restarted): what the store holds cannot be compared",
                        ),
                    )
                continue
            stored_next = summary.stored_next(seen)
            if summary.first_offset is not None and summary.first_offset > seen.log_start:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        topic,
                        number,
                        summary.epoch,
                        seen.log_start,
                        summary.first_offset - 1,
                        "the broker holds these records, the store begins after them",
                    ),
                )
            if summary.last_offset is not None and stored_next > seen.high_watermark:
                report.findings.append(
                    Finding(
                        FindingKind.AHEAD_OF_BROKER,
                        topic,
                        number,
                        summary.epoch,
                        seen.high_watermark,
                        summary.last_offset,
                        f"the store holds offsets up to {summary.last_offset}, read from this "
                        f"partition, but the broker's high watermark is {seen.high_watermark} "
                        "now: either its log went backwards (a restart, a recreated topic) and "
                        "no audit consumer has noticed yet, or it served records past its high "
                        "watermark (the local broker has, restarted under load); a running "
                        "consumer records a log_reset for the first within "
                        "OIX_AUDIT_RESET_CONFIRM_MS",
                    ),
                )
            elif seen.committed is not None and seen.committed > stored_next:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        topic,
                        number,
                        summary.epoch,
                        stored_next,
                        seen.committed - 1,
                        "acknowledged to Kafka by the audit group but missing from the store "
                        "(rows removed, or the store restored from an older copy)",
                    ),
                )


def _event_findings(events: list[LogEvent]) -> list[Finding]:
    """The consumers' log events as findings; repeated kinds grouped per partition and epoch."""
    groups: dict[tuple[EventKind, str, int, int], list[LogEvent]] = {}
    findings = []
    for event in events:
        if event.kind in _GROUPED:
            key = (event.kind, event.topic, event.partition, event.epoch)
            groups.setdefault(key, []).append(event)
            continue
        findings.append(
            Finding(
                _EVENT_FINDINGS[event.kind],
                event.topic,
                event.partition,
                event.epoch,
                event.first_offset,
                event.last_offset,
                event.describe(),
            ),
        )
    for (kind, topic, partition, epoch), group in groups.items():
        group.sort(key=lambda e: (e.first_offset or 0, e.recorded_at))
        first = group[0]
        if len(group) == 1:
            detail = first.describe()
        else:
            times = sorted(e.recorded_at for e in group)
            noticed = f"noticed {_moment(times[0])} to {_moment(times[-1])}"
            detail = (
                f"the broker served {len(group)} offsets more than once, {noticed}; the "
                "first record at each offset is stored, the other described (--details)"
                if kind is EventKind.OFFSET_REPEATED
                else f"{len(group)} runs of offsets vanished from the broker before they were "
                f"read, {noticed} (--details)"
            )
        findings.append(
            Finding(
                _EVENT_FINDINGS[kind],
                topic,
                partition,
                epoch,
                first.first_offset,
                max((e.last_offset or 0) for e in group),
                detail,
                count=len(group),
                details=tuple(e.describe() for e in group) if len(group) > 1 else (),
            ),
        )
    return findings


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _reuse_finding(message_id: str, records: list[AuditRecord]) -> Finding:
    """One message id under several proven originators: every record named by its coordinates."""
    by_originator: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_originator.setdefault(record.originator or "", []).append(record)
    named = "; ".join(
        f"{originator} at "
        + ", ".join(
            f"{r.topic}[{r.kafka_partition}]@{r.kafka_offset} (epoch {r.epoch})" for r in rs
        )
        for originator, rs in by_originator.items()
    )
    later = records[-1]
    return Finding(
        FindingKind.MESSAGE_ID_REUSED,
        later.topic,
        later.kafka_partition,
        later.epoch,
        later.kafka_offset,
        later.kafka_offset,
        f"message id {message_id} is stored under {len(by_originator)} proven originators, "
        f"two different messages under one id (a message is originator and message id): "
        f"{named} (`oix audit query --message-id {message_id}`)",
        count=len(records),
    )
