"""The broker killed and restarted while agency systems publish through the gateway (issue 8).

Gateway and audit consumer on one embedded broker; eight clients post
reports concurrently (a 503 is retried with the same message id, as the
answer says); the broker is killed with SIGKILL once 200 reports are
accepted, started again on its port, and the clients go on for 8 s. Every
report answered 201 after the restart must then be in the audit store, in
the partition's latest epoch, once (another copy only from an attempt
answered 503, which may still have been written) - or be named by a gateway
finding; never a silent gap. (The restarted local broker has acknowledged a
write at one offset and stored it at the next: such a report is in the log
once, counted; and has put another write where it had acknowledged one, which
the gateway's read-back names in a record_replaced finding; and has served
first another record at a report's offset, then the report: the audit keeps the
first and records an offset_repeated event naming the other's digest, which is
counted here - the audit does not store that second record, see docs/audit.md;
and has served the audit, at a report's offset, another report it acknowledged
elsewhere while serving the gateway's read-back the report there: counted too.)
The audit follows each partition in at most two epochs; both services are healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import AGENCY, bearer, incident, make_gateway_settings, running_gateway
from polling import eventually

from services.audit import AuditConsumer, AuditSettings, AuditStore, migrate
from services.bus import EmbeddedBroker, Exchange, LogEventKind, Settings, ensure_topics, free_port
from services.gateway._store import COORDINATES_REUSED, LOG_LOST, RECORD_REPLACED, Finding, Store

# Above the sum of the test's own bounded waits (60 s before the kill, 8 s after it, a
# client's last request 30 s, 60 s for the audit, 60 s for the audit to stop): a failure
# then says what it waited for. Two CI runs ended in bare timeouts: the gateway's shutdown
# hung on its broker gate, whose cancellation Python 3.11's asyncio.wait_for had lost
# (services.bus.wait_set).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CLIENTS = 8
BEFORE_KILL = 200
AUDITED = 150
AFTER_RESTART_SECONDS = 8.0


@dataclass
class Answered:
    """What the clients were told."""

    accepted: dict[str, tuple[str, int, int, float]] = field(default_factory=dict)
    """message id -> topic, partition, offset, monotonic time of the 201."""
    unavailable: Counter[str] = field(default_factory=Counter)
    """message id -> attempts answered 503."""
    other: list[str] = field(default_factory=list)


async def _client(http: httpx.AsyncClient, answered: Answered, stop: asyncio.Event) -> None:
    """Post reports one after another; retry a 503 with the same report until 201."""
    report: dict[str, Any] = incident()
    while not stop.is_set():
        answer = await http.post("/v1/reports", json=report)
        message_id = report["header"]["message_id"]
        if answer.status_code == 201:
            body = answer.json()
            answered.accepted[message_id] = (
                body["topic"],
                body["partition"],
                body["offset"],
                time.monotonic(),
            )
            report = incident()
        elif answer.status_code == 503:
            answered.unavailable[message_id] += 1
            # Retry-After says 1 s; a busy client retries sooner, as many do.
            await asyncio.sleep(0.2)
        else:
            answered.other.append(f"{answer.status_code} {answer.text}")
            return


def _audit_settings() -> AuditSettings:
    """Quick group joins and batches (the audit tests' settings); stuck after 5 s."""
    return AuditSettings(
        metrics_port=0,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=2000,
        metadata_max_age_ms=500,
        fetch_max_wait_ms=20,
        batch_max_ms=20,
        commit_interval_ms=100,
        reset_confirm_ms=1000,
        retry_max_backoff_ms=500,
        open_processes=0,
        stuck_after_ms=5000,
    )


async def test_reports_accepted_after_a_broker_restart_under_load_are_all_audited(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    # Inside pytest-timeout's bound: a hang ends in a traceback through the awaits
    # that hung (the gateway's, the audit's or the broker's), not a bare thread dump.
    async with asyncio.timeout(270):
        await _restart_and_check(settings, exchange, tokens_file, tokens)


async def _restart_and_check(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    port = free_port()
    own = settings.model_copy(update={"bootstrap": f"127.0.0.1:{port}"})
    assert own.bootstrap is not None
    audit = _audit_settings()
    gateway = make_gateway_settings(tokens_file, retry_after=1, track_acknowledgements=False)
    url = f"sqlite+aiosqlite:///{Path(str(own.data_dir)) / 'audit.db'}"
    broker = EmbeddedBroker(port=port)
    await broker.start()
    answered = Answered()
    try:
        await ensure_topics(own, own.bootstrap, exchange.router.all_topics())
        await migrate(url)
        store = await AuditStore.open(url)
        consumer = AuditConsumer(own, audit, exchange, own.bootstrap, store=store)
        stop_audit = asyncio.Event()
        auditing = asyncio.create_task(consumer.run(stop_audit))
        try:
            async with (
                running_gateway(own, gateway, exchange, own.bootstrap) as running,
                httpx.AsyncClient(
                    base_url=running.url,
                    headers=bearer(tokens[AGENCY]),
                    timeout=30.0,
                    limits=httpx.Limits(max_connections=CLIENTS),
                ) as http,
            ):
                broker, killed_at = await _restart_under_load(http, consumer, broker, answered)
                assert answered.other == []
                after = {m: a[:3] for m, a in answered.accepted.items() if a[3] > killed_at}
                assert len(after) >= 50, "too few reports accepted after the restart"
                gateway_store = running.service.pipeline.store
                acknowledged = {m: a[:3] for m, a in answered.accepted.items()}
                checked = _Check(after, acknowledged, gateway_store, store, answered.unavailable)
                await eventually(
                    checked.done,
                    checked.explain,
                )
                ready = await http.get("/readyz")
                epochs = {str(s.partition): s.epochs_started for s in consumer.follower.status()}
                healthy, health = consumer.health.report()
        finally:
            stop_audit.set()
            await asyncio.wait_for(auditing, 60)
            await store.close()
    finally:
        await broker.stop()
    assert ready.status_code == 200, ready.text
    # One restart: one new broker epoch, and one more at most for coordinates
    # the restarted local broker handed out twice (a coordinates_reused finding).
    assert checked.current <= 2, checked.explain()
    # Acknowledged by the broker the gateway verified after the restart: audited, or
    # named as lost (the broker handed their coordinates to another report, or put
    # another record where it had acknowledged them: found by the gateway's read-back).
    for message_id in checked.named_by_findings - checked.old_epoch:
        assert any(
            f.kind in {COORDINATES_REUSED, RECORD_REPLACED} and f.lost_message_id == message_id
            for f in checked.findings
        ), checked.explain()
    # The local broker's serving another acknowledged report at a report's offset stays
    # rare: one or two reports in a run where it happened (2 runs in about 65 here, loaded).
    assert len(checked.repeated | checked.displaced) <= 3, checked.figures(answered, epochs)
    # Once; a second copy only from an attempt answered 503 (it may have been kept).
    twice = [m for m in after if checked.copies[m] > 1 + answered.unavailable[m]]
    assert twice == []
    # Each partition: one epoch for the restart, at most one more.
    assert max(epochs.values()) <= 2, epochs
    assert healthy, health
    print(checked.figures(answered, epochs))  # noqa: T201  # for the README's reliability table


async def _restart_under_load(
    http: httpx.AsyncClient, consumer: AuditConsumer, broker: EmbeddedBroker, answered: Answered
) -> tuple[EmbeddedBroker, float]:
    """Clients post; the broker is killed and restarted; they post on. The new broker, and when."""
    stop = asyncio.Event()
    clients = [asyncio.create_task(_client(http, answered, stop)) for _ in range(CLIENTS)]
    await eventually(
        lambda: len(answered.accepted) >= BEFORE_KILL and consumer.stored >= AUDITED,
        lambda: (
            f"{BEFORE_KILL} reports accepted and {AUDITED} audited before the kill "
            f"({len(answered.accepted)}, {consumer.stored})"
        ),
    )
    broker.kill()
    killed_at = time.monotonic()
    broker = EmbeddedBroker(port=broker.port)
    await broker.start()
    await asyncio.sleep(AFTER_RESTART_SECONDS)
    stop.set()
    await asyncio.gather(*clients)
    return broker, killed_at


class _Check:
    """Where each report accepted after the kill is: audited in the latest epoch, or lost."""

    def __init__(
        self,
        after: dict[str, tuple[str, int, int]],
        acknowledged: dict[str, tuple[str, int, int]],
        gateway: Store,
        audit: AuditStore,
        unavailable: Counter[str],
    ) -> None:
        self.after = after
        self.acknowledged = acknowledged
        """Every report answered 201 (before the kill too): where the broker said it is."""
        self.unavailable = unavailable
        self.gateway = gateway
        self.audit = audit
        self.missing: list[str] = []
        self.copies: Counter[str] = Counter()
        self.findings: list[Finding] = []
        self.named_by_findings: set[str] = set()
        self.misplaced: set[str] = set()
        self.old_epoch: set[str] = set()
        self.repeated: set[str] = set()
        """Not audited: the audit had stored another record at its offset, and recorded
        (an offset_repeated event) that the broker then served a different one there."""
        self.displaced: set[str] = set()
        """Not audited: the audit holds at its offset another report, which the broker
        acknowledged at other coordinates (it served that report where it had
        acknowledged this one, to the audit but not to the gateway's read-back)."""
        self.current = 0
        self.epoch_of: dict[str, int] = {}
        self.latest: dict[tuple[str, int], dict[int, str | None]] = {}

    async def done(self) -> bool:
        self.current = current = self.gateway.broker_epoch().epoch
        epoch_of: dict[str, int] = {}
        for message_id in self.after:
            published = self.gateway.published(message_id)
            assert published is not None, message_id
            epoch_of[message_id] = published.broker_epoch
        self.old_epoch = {m for m, e in epoch_of.items() if e < current}
        self.findings = self.gateway.findings()
        self.epoch_of = epoch_of
        latest, epochs = await _latest_epochs(self.audit, {t for t, _, _ in self.after.values()})
        self.latest = latest
        self.copies = Counter(m for rows in latest.values() for m in rows.values() if m)
        self.missing = []
        self.named_by_findings = set()
        self.misplaced = set()
        self.repeated = set()
        self.displaced = set()
        served_again = await _served_again(self.audit, epochs)
        for message_id, (topic, partition, offset) in self.after.items():
            if self.copies[message_id]:
                if latest.get((topic, partition), {}).get(offset) != message_id:
                    # In the log, at another offset than the broker acknowledged.
                    self.misplaced.add(message_id)
                continue
            if any(self._names(f, message_id, epoch_of[message_id]) for f in self.findings):
                self.named_by_findings.add(message_id)
                continue
            if (topic, partition, offset) in served_again:
                self.repeated.add(message_id)
                continue
            held = latest.get((topic, partition), {}).get(offset)
            if held is not None and self.acknowledged.get(held, (topic, partition, offset)) != (
                topic,
                partition,
                offset,
            ):
                self.displaced.add(message_id)
                continue
            # The local broker has put in its place a write it had acknowledged over a
            # connection the gateway had not verified (answered 503): the gateway's
            # read-back must name it (record_replaced), which the branch above counts.
            self.missing.append(message_id)
        return not self.missing

    def explain(self) -> str:
        """Why :meth:`done` is not true: each missing report, where it is, what is in its place."""
        lines = ["every report accepted after the kill audited or named by a finding; not:"]
        for message_id in self.missing[:5]:
            topic, partition, offset = self.after[message_id]
            rows = self.latest.get((topic, partition), {})
            elsewhere = [
                (t, p, o)
                for (t, p), held in self.latest.items()
                for o, m in held.items()
                if m == message_id
            ]
            lines.append(
                f"{message_id} answered at {partition}/{offset}: the audit's latest epoch holds "
                f"{rows.get(offset)} there, this report at {elsewhere}; "
                f"gateway epoch {self.epoch_of.get(message_id)} of {self.current}"
            )
        lines.append(
            f"named by findings, not of an earlier epoch: "
            f"{sorted(self.named_by_findings - self.old_epoch)}"
        )
        lines.append(
            "findings: "
            f"{[(f.kind, f.delivery, f.broker_epoch, f.lost_message_id) for f in self.findings]}"
        )
        return "\n".join(lines)

    def figures(self, answered: Answered, epochs: dict[str, int]) -> str:
        """What happened, in numbers."""
        return (
            f"\naccepted {len(answered.accepted)}, {len(self.after)} after the kill: "
            f"{len(self.after) - len(self.old_epoch)} by the restarted broker (audited but "
            f"{len(self.repeated) + len(self.displaced)}, {len(self.misplaced)} at another "
            "offset than acknowledged; not audited: "
            f"{len(self.repeated)} at an offset the audit had stored with another record "
            f"(an offset_repeated event), {len(self.displaced)} where the audit holds "
            "another report the broker acknowledged elsewhere), "
            f"{len(self.old_epoch)} by the killed one in its last moment "
            f"({len(self.named_by_findings)} of them named by log_lost findings, the rest "
            f"audited before it died); 503 answers {sum(answered.unavailable.values())}; "
            f"findings {Counter(f.kind for f in self.findings)}; audit epochs {epochs}"
        )

    def _names(self, finding: Finding, message_id: str, epoch: int) -> bool:
        topic, partition, offset = self.after[message_id]
        if finding.kind in {COORDINATES_REUSED, RECORD_REPLACED}:
            return finding.lost_message_id == message_id
        return (
            finding.kind == LOG_LOST
            and finding.broker_epoch == epoch
            and (finding.delivery.topic, finding.delivery.partition) == (topic, partition)
            and finding.delivery.offset >= offset
        )


async def _served_again(
    store: AuditStore, epochs: dict[tuple[str, int], int]
) -> set[tuple[str, int, int]]:
    """Offsets of the audit's latest epochs at which the broker served a second, other record."""
    return {
        (e.topic, e.partition, e.first_offset)
        for e in await store.log_events()
        if e.kind is LogEventKind.OFFSET_REPEATED
        and e.first_offset is not None
        and epochs.get((e.topic, e.partition)) == e.epoch
        and "not admitted" in e.detail
    }


async def _latest_epochs(
    store: AuditStore, topics: set[str]
) -> tuple[dict[tuple[str, int], dict[int, str | None]], dict[tuple[str, int], int]]:
    """Per partition, the latest epoch's rows (offset -> message id), and that epoch."""
    latest: dict[tuple[str, int], dict[int, str | None]] = {}
    epochs: dict[tuple[str, int], int] = {}
    for topic in topics:
        for partition in range(8):
            rows = await store.scan(topic, partition, None, 1_000_000)
            if rows:
                epoch = epochs[(topic, partition)] = rows[-1].epoch
                latest[(topic, partition)] = {
                    r.kafka_offset: r.message_id for r in rows if r.epoch == epoch
                }
    return latest, epochs
