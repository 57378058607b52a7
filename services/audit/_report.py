"""Showing audit results to a person (rich tables) or a program (JSON lines)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from services.audit._record import AuditRecord, Opening
from services.audit._verify import Finding, FindingCategory, VerifyReport

_UNBOUNDED = 1_000_000
"""A width no table of records reaches."""


def _kafka_time(millis: int) -> str:
    if millis < 0:
        return "-"
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")


def record_json(record: AuditRecord, now: Opening | None = None) -> dict[str, Any]:
    """A stored record as JSON-ready data: decoded report and headers parsed, bytes in base64.

    ``now`` is what opening an undecoded record again found (``oix audit query``
    does it with today's released schemas); it goes under ``"now"``.
    """
    shown = {
        "topic": record.topic,
        "partition": record.kafka_partition,
        "epoch": record.epoch,
        "offset": record.kafka_offset,
        "timestamp": _kafka_time(record.kafka_timestamp),
        "timestamp_type": record.timestamp_type,
        "key": base64.b64encode(record.record_key).decode() if record.record_key else None,
        "headers": orjson.loads(record.headers),
        "value": base64.b64encode(record.value).decode() if record.value is not None else None,
        "schema_fingerprint": record.schema_fingerprint,
        "message_id": record.message_id,
        "originator": record.originator,
        "originator_proven": record.trusted,
        "report_type": record.report_type,
        "signature_status": record.signature_status,
        "signature_detail": record.signature_detail or None,
        "decoded": orjson.loads(record.decoded) if record.decoded is not None else None,
        "decode_error": record.decode_error,
        "unknown_schema": record.unknown_schema,
        "stored_at": record.stored_at.isoformat(),
        "row_hash": record.row_hash.hex(),
        "value_digest": record.value_digest.hex() if record.value_digest is not None else None,
        "retain_until": _kafka_time(record.retain_until)
        if record.retain_until is not None
        else None,
        "purged_at": record.purged_at.isoformat() if record.purged_at is not None else None,
        "purge_id": record.purge_id,
    }
    if now is not None:
        shown["now"] = {
            "signature_status": now.signature_status,
            "signature_detail": now.signature_detail or None,
            "originator": now.originator,
            "report_type": now.report_type,
            "decoded": orjson.loads(now.decoded) if now.decoded is not None else None,
            "decode_error": now.decode_error,
        }
    return shown


def _aligned(records: Sequence[AuditRecord], now: Sequence[Opening | None] | None) -> list[Any]:
    return list(now) if now is not None else [None] * len(records)


def print_records_json(
    records: Sequence[AuditRecord],
    console: Console,
    now: Sequence[Opening | None] | None = None,
) -> None:
    """One JSON object per line; ``now`` as :func:`record_json` takes it, per record."""
    for record, opening in zip(records, _aligned(records, now), strict=True):
        console.out(orjson.dumps(record_json(record, opening)).decode(), highlight=False)


def _status(record: AuditRecord, now: Opening | None) -> str:
    status = record.signature_status
    if record.purged_at is not None:
        return f"{status}, purged {record.purged_at.isoformat(timespec='seconds')}"
    if record.unknown_schema:
        status += f", unknown schema {record.schema_fingerprint}"
    elif record.decode_error is not None:
        status += ", undecodable"
    if now is not None and now.decoded is not None:
        status += f"; decodes now: {now.signature_status}"
    return status


def print_records(
    records: Sequence[AuditRecord],
    console: Console,
    now: Sequence[Opening | None] | None = None,
) -> None:
    """A table of records, one line each; an originator nothing proves is marked so."""
    table = Table(
        "topic[partition]@offset", "timestamp", "type", "originator", "message id", "status"
    )
    for r, opening in zip(records, _aligned(records, now), strict=True):
        where = f"{r.topic}[{r.kafka_partition}]@{r.kafka_offset}"
        if r.epoch:
            where += f" (epoch {r.epoch})"
        originator = r.originator or "-"
        if r.originator and not r.trusted:
            originator += " (unproven)"
        table.add_row(
            where,
            _kafka_time(r.kafka_timestamp),
            r.report_type or "-",
            originator,
            r.message_id or "-",
            _status(r, opening),
            style="" if r.trusted else "red",
        )
    if not console.is_terminal:
        # Piped to a file or a program: every column whole, not cut to 80 columns.
        needed = Measurement.get(console, console.options.update_width(_UNBOUNDED), table)
        console = Console(file=console.file, width=max(needed.maximum, console.width))
    console.print(table)
    console.print(f"{len(records)} record(s)", highlight=False)


def print_report(report: VerifyReport, console: Console, *, details: bool = False) -> None:
    """The verification report: partitions, findings, and what it proves, integrity and trust apart.

    ``details`` lists every occurrence a grouped finding stands for.
    """
    table = Table(
        "partition",
        "epoch",
        "rows",
        "purged",
        "stored offsets",
        "broker offsets",
        "lag",
        "chain head",
        "",
    )
    for p in sorted(report.partitions, key=lambda s: (s.topic, s.partition)):
        stored = "-" if p.first_offset is None else f"{p.first_offset}..{p.last_offset}"
        broker = "-" if p.broker is None else f"{p.broker.log_start}..{p.broker.high_watermark - 1}"
        lag = "-" if p.lag is None else str(p.lag)
        mark = "[green]ok[/]" if p.findings == 0 else f"[red]{p.findings} finding(s)[/]"
        table.add_row(
            f"{p.topic}[{p.partition}]",
            "-" if p.epoch is None else str(p.epoch),
            str(p.rows),
            str(p.purged),
            stored,
            broker,
            lag,
            p.chain_head.hex()[:16],
            mark,
        )
    console.print(table)
    for finding in report.findings:
        colour = "red" if finding.category is FindingCategory.INTEGRITY else "yellow"
        console.print(
            f"[bold {colour}]{finding.kind}[/] {finding.where}: {finding.detail}",
            highlight=False,
            soft_wrap=True,
        )
        if details:
            for line in finding.details:
                console.print(f"    {line}", highlight=False, soft_wrap=True, markup=False)
    checked = f"{report.rows} records in {len(report.partitions)} partitions"
    extra = []
    if report.signatures_checked:
        extra.append(f"{report.signatures_checked} signatures re-verified")
    extra.append(
        "compared with the broker" if report.broker_compared else "NOT compared with a broker"
    )
    integrity = report.of(FindingCategory.INTEGRITY)
    trust = report.of(FindingCategory.TRUST)
    if integrity:
        console.print(
            f"[bold red]integrity: {len(integrity)} finding(s)[/]: the store is not proven "
            "complete and unchanged",
            highlight=False,
        )
    else:
        console.print(
            "[bold green]integrity: ok[/]: hash chains intact, no gaps, nothing missing",
            highlight=False,
        )
    console.print(_trust_line(report, trust), highlight=False, soft_wrap=True)
    _print_retention(report, console, details=details)
    if report.ok:
        console.print(f"[bold green]OK[/]: {checked}; {'; '.join(extra)}", highlight=False)
    else:
        console.print(
            f"[bold red]{len(report.findings)} finding(s)[/] in {checked} "
            f"({len(integrity)} integrity, {len(trust)} trust); {'; '.join(extra)}",
            highlight=False,
        )
    if report.broker_compared:
        console.print(
            f"lag: {report.lag} record(s) on the broker not stored yet (not a loss)",
            highlight=False,
        )


def _trust_line(report: VerifyReport, trust: Sequence[Finding]) -> str:
    """Untrusted records by reason, their quarantine copies, reused message ids."""
    untrusted = sum(report.untrusted.values())
    if not trust:
        line = "[bold green]trust: ok[/]: every record proves its originator, no message id reused"
    else:
        line = f"[bold yellow]trust: {len(trust)} finding(s)[/]: "
        parts = []
        if untrusted:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.untrusted.items()))
            parts.append(f"{untrusted} record(s) prove no originator ({reasons})")
        if report.reused_ids:
            parts.append(f"{report.reused_ids} message id(s) stored under two proven originators")
        line += "; ".join(parts)
    if report.quarantined is not None and untrusted:
        line += f"; {report.quarantined} of {untrusted} copied to the quarantine topic" + (
            "" if report.quarantined == untrusted else " (the rest pending, or not yet stored)"
        )
    return line


def _print_retention(report: VerifyReport, console: Console, *, details: bool) -> None:
    console.print(_retention_line(report), highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[bold yellow]warning[/] {warning}", highlight=False, soft_wrap=True)
    if details:
        for event in report.retention:
            console.print(f"    {event.describe()}", highlight=False, soft_wrap=True, markup=False)


def _retention_line(report: VerifyReport) -> str:
    """How many records are purged, and what the retention log holds."""
    kinds: dict[str, int] = {}
    for event in report.retention:
        kinds[str(event.kind)] = kinds.get(str(event.kind), 0) + 1
    logged = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no event"
    line = (
        f"retention: {report.purged} of {report.rows} record(s) purged (content removed; "
        f"coordinates, digests and chain verified); retention log: {logged}"
    )
    if report.retention:
        last = report.retention[-1]
        line += f"; last {last.kind} {last.recorded_at.isoformat(timespec='seconds')}"
        line += " (--details, `oix audit retention-log`)"
    return line
