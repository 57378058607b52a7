"""``oix replay …``: export history, check evidence, compare the broker with the store.

Only wiring: each command hands over to the module that does the work. The
audit store's toolkit loads inside the commands, so ``oix --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import inspect
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from services.bus import (
    ConfigError,
    Exchange,
    OixError,
    Settings,
    frozen_heap,
    stop_on_signals,
)
from services.host import (
    EXIT_CONFIG,
    broker_settings_or_exit,
    err,
    fail,
    out,
    run,
    settings_or_exit,
)
from services.replay._errors import ReplayError
from services.replay._kafka import ReadStats
from services.replay._record import Replayed
from services.replay._select import PartyRole, Selection, party_topics
from services.replay._writers import AvroCodec, Format

commands = typer.Typer(
    name="replay",
    help="Auditors' replay: history from Kafka or the audit store, exports, evidence, compare. "
    "`oix replay --to-topic T FILTERS…` re-drives a range "
    "(the same as `oix replay export --to-topic T`).",
    no_args_is_help=True,
    invoke_without_command=True,
)

EXIT_FINDINGS = 1
"""``check-evidence`` found a problem; ``compare`` found a difference."""
EXIT_ERROR = 2
"""Could not run (settings, selection, store or broker)."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (or SIGTERM) after the current record, as shells count SIGINT."""
SHOWN_UNDECODABLE = 20


class Source(StrEnum):
    """Where history is read from."""

    KAFKA = "kafka"
    STORE = "store"


Topics = Annotated[
    list[str] | None, typer.Option("--topic", help="A topic to read (repeat for more).")
]
Party = Annotated[
    str | None, typer.Option(help="Topics of this party, as the agreement routes them.")
]
Role = Annotated[PartyRole, typer.Option(help="With --party: topics it writes, reads, or both.")]
Partition = Annotated[int | None, typer.Option(min=0, help="Only this partition.")]
FromOffset = Annotated[int | None, typer.Option(min=0, help="First offset (included).")]
ToOffset = Annotated[int | None, typer.Option(min=0, help="Last offset (included).")]
Since = Annotated[
    datetime | None, typer.Option(help="Records stamped at or after this time (UTC if naive).")
]
Until = Annotated[datetime | None, typer.Option(help="Records stamped before this time.")]
MessageId = Annotated[str | None, typer.Option(help="Only this message id.")]
EventId = Annotated[str | None, typer.Option(help="Only messages about this event id.")]
ReportType = Annotated[str | None, typer.Option(help="Only this report type.")]
Originator = Annotated[str | None, typer.Option(help="Only this originator.")]
SignatureStatus = Annotated[
    str | None, typer.Option(help="Only this signature status (valid, invalid, unsigned, …).")
]
Mode = Annotated[str | None, typer.Option(help="Only this mode (ACTUAL, EXERCISE, TEST).")]
Bootstrap = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers [env: OIX_BOOTSTRAP].")
]
NoChecks = Annotated[
    bool, typer.Option("--no-checks", help="Decode only; do not verify signatures.")
]
Raw = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="Neither decode nor verify: wire bytes, headers and coordinates (a bulk copy).",
    ),
]
Processes = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Worker processes decoding and verifying records read from Kafka "
        "(default: one per CPU, at most 4; 0: in this process).",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="Audit store URL [env: OIX_AUDIT_DATABASE_URL; default SQLite]."),
]


def _selection(
    exchange: Exchange,
    *,
    topics: list[str] | None,
    party: str | None,
    role: PartyRole,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    since: datetime | None,
    until: datetime | None,
    message_id: str | None = None,
    event_id: str | None = None,
    report_type: str | None = None,
    originator: str | None = None,
    signature_status: str | None = None,
    mode: str | None = None,
) -> Selection:
    chosen = list(topics or [])
    try:
        if party is not None:
            chosen.extend(t for t in party_topics(exchange, party, role) if t not in chosen)
        return Selection(
            topics=tuple(chosen),
            partition=partition,
            from_offset=from_offset,
            to_offset=to_offset,
            since=since,
            until=until,
            message_id=message_id,
            event_id=event_id,
            report_type=report_type,
            originator=originator,
            signature_status=signature_status,
            mode=mode,
        )
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _exchange(settings: Settings) -> Exchange:
    try:
        return Exchange.from_settings(settings)
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _store_url(settings: Settings, database_url: str | None) -> str:
    from services.audit import load_audit_settings  # noqa: PLC0415  # fast --help: pydantic models

    try:
        audit = load_audit_settings(**({"database_url": database_url} if database_url else {}))
        return audit.resolved_url(settings)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _processes() -> int:
    from services.replay._opening import default_processes  # noqa: PLC0415  # fast --help

    return default_processes()


def _summary(source: str, stats: ReadStats, undecodable: list[Replayed]) -> None:
    err.print(
        f"{stats.kept} record(s) from {source} ({stats.read} read); "
        f"{stats.undecodable} undecodable",
        highlight=False,
    )
    for record in undecodable:
        err.print(
            f"  undecodable {record.topic}[{record.partition}] offset {record.offset}: "
            f"{record.decode_error}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if stats.undecodable > len(undecodable):
        err.print(f"  … and {stats.undecodable - len(undecodable)} more (see the output)")
    for event in stats.events:
        err.print(
            f"  log event {event.topic}[{event.partition}] {event.kind}: {event.detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if stats.missing_topics:
        err.print(f"  not on the broker (never written): {', '.join(stats.missing_topics)}")
    if stats.time_lookup == "records":
        err.print(
            "  the broker's time index answered wrongly here: read from the log start, "
            "filtered on record timestamps",
        )


@commands.command("export")
def export(
    *,
    topic: Topics = None,
    party: Party = None,
    party_role: Role = PartyRole.ANY,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    since: Since = None,
    until: Until = None,
    message_id: MessageId = None,
    event_id: EventId = None,
    report_type: ReportType = None,
    originator: Originator = None,
    signature_status: SignatureStatus = None,
    mode: Mode = None,
    source: Annotated[Source, typer.Option(help="Read from the broker or the audit store.")] = (
        Source.KAFKA
    ),
    output_format: Annotated[
        Format | None,
        typer.Option("--format", help="Default: table on a terminal, else jsonl."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", help="File; default stdout.")] = None,
    compression: Annotated[
        AvroCodec, typer.Option(help="Avro block compression.")
    ] = AvroCodec.DEFLATE,
    no_checks: NoChecks = False,
    raw: Raw = False,
    processes: Processes = None,
    evidence: Annotated[
        Path | None,
        typer.Option(help="Write an evidence bundle into this new directory (from the store)."),
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option(help="With --evidence: sign the manifest with this Ed25519 key.")
    ] = None,
    signer: Annotated[str, typer.Option(help="With --sign-key: who signs (shown).")] = "",
    to_topic: Annotated[
        str | None, typer.Option(help="Re-drive the records to this topic (values untouched).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --to-topic: allow a live OIX topic.")
    ] = False,
    operator: Annotated[
        str | None, typer.Option(help="With --to-topic: who re-drives (default: login name).")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option(help="Progress line on stderr (default: on a terminal).")
    ] = None,
    bootstrap: Bootstrap = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Replay the selected history into a file, an evidence bundle, or another topic.

    Ctrl-C stops after the current record (--raw from Kafka: the current
    fetch) and leaves everything written complete and valid.
    """
    if evidence is not None and (to_topic is not None or output is not None or raw):
        given = "--to-topic" if to_topic is not None else "--out" if output is not None else "--raw"
        raise fail(f"--evidence: writes a bundle of its own; drop {given}", EXIT_CONFIG)
    # An evidence bundle is read from the store alone.
    needs_broker = (source is Source.KAFKA and evidence is None) or to_topic is not None
    settings = (
        broker_settings_or_exit(bootstrap, required=True) if needs_broker else settings_or_exit()
    )
    exchange = _exchange(settings)
    selection = _selection(
        exchange,
        topics=topic,
        party=party,
        role=party_role,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        since=since,
        until=until,
        message_id=message_id,
        event_id=event_id,
        report_type=report_type,
        originator=originator,
        signature_status=signature_status,
        mode=mode,
    )
    if raw and selection.needs_content:
        raise fail("--raw: --event-id and --mode need decoded reports; drop --raw", EXIT_CONFIG)
    show_progress = sys.stderr.isatty() if progress is None else progress
    url = _store_url(settings, database_url) if source is Source.STORE or evidence else None
    if to_topic is not None:
        from services.replay._redrive import refuse_live_topic  # noqa: PLC0415  # fast --help

        try:
            refuse_live_topic(exchange, to_topic, force=force)
        except ReplayError as exc:
            raise fail(str(exc), EXIT_ERROR) from None
    kind = output_format or (Format.TABLE if sys.stdout.isatty() else Format.JSONL)

    async def work() -> bool:
        stop = stop_on_signals()
        if evidence is not None:
            assert url is not None
            await _export_evidence(
                settings,
                exchange,
                selection,
                url=url,
                directory=evidence,
                stop=stop,
                sign_key=sign_key,
                signer=signer,
                progress=show_progress,
            )
            return stop.is_set()
        stats = ReadStats()
        undecodable: list[Replayed] = []
        if raw and source is Source.KAFKA and to_topic is None:
            # A bulk copy: each fetch written whole, no record opened (nor undecodable).
            await _write_raw(
                settings,
                exchange,
                selection,
                stats=stats,
                stop=stop,
                kind=kind,
                output=output,
                compression=compression,
                show_progress=show_progress,
            )
            _summary(str(source), stats, undecodable)
            return stop.is_set()
        reading = _records(
            settings,
            exchange,
            selection,
            source=source,
            url=url,
            stats=stats,
            stop=stop,
            checks=not no_checks,
            raw=raw,
            processes=_processes() if processes is None else processes,
            # The Avro file takes reports already encoded; re-drive needs none.
            reports=to_topic is None and kind is not Format.AVRO,
        )
        async with reading as records:
            if to_topic is not None:
                await _redrive(
                    settings,
                    records,
                    to_topic=to_topic,
                    operator=operator,
                    show_progress=show_progress,
                )
            else:
                await _write(
                    records,
                    stats=stats,
                    kind=kind,
                    output=output,
                    exchange=exchange,
                    compression=compression,
                    show_progress=show_progress,
                    undecodable=undecodable,
                )
        _summary(str(source), stats, undecodable)
        return stop.is_set()

    # Setup is done: the garbage collector's full passes during the export need not walk it
    # (a raw record ~5 µs of CPU less beside a large heap, measured in bench/replay.py).
    with frozen_heap():
        interrupted = run(work, EXIT_ERROR)
    if interrupted:
        err.print("interrupted: what was written is complete and valid up to the last record")
        raise typer.Exit(EXIT_INTERRUPTED)


@contextlib.asynccontextmanager
async def _records(
    settings: Settings,
    exchange: Exchange,
    selection: Selection,
    *,
    source: Source,
    url: str | None,
    stats: ReadStats,
    stop: asyncio.Event,
    checks: bool,
    raw: bool,
    processes: int,
    reports: bool,
) -> AsyncIterator[AsyncGenerator[Replayed]]:
    if source is Source.KAFKA:
        from services.replay._kafka import read_kafka  # noqa: PLC0415  # fast --help

        assert settings.bootstrap is not None
        reader = read_kafka(
            settings,
            settings.bootstrap,
            exchange,
            selection,
            checks=checks,
            raw=raw,
            processes=processes,
            reports=reports,
            stats=stats,
            stop=stop,
        )
        async with contextlib.aclosing(reader) as records:
            yield records
        return
    from services.audit import RecordScan  # noqa: PLC0415  # fast --help: SQLAlchemy
    from services.replay._stored import read_store  # noqa: PLC0415  # same

    assert url is not None
    scan = await RecordScan.open(url)
    try:
        reader = read_store(
            scan, exchange, selection, checks=checks, raw=raw, stats=stats, stop=stop
        )
        async with contextlib.aclosing(reader) as records:
            yield records
    finally:
        await scan.close()


async def _write(
    records: AsyncIterator[Replayed],
    *,
    stats: ReadStats,
    kind: Format,
    output: Path | None,
    exchange: Exchange,
    compression: AvroCodec,
    show_progress: bool,
    undecodable: list[Replayed],
) -> None:
    from services.replay._progress import progress_bar  # noqa: PLC0415  # fast --help
    from services.replay._writers import open_writer  # noqa: PLC0415  # same

    try:
        writer = open_writer(kind, output, exchange.codec, compression)
    except ReplayError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    try:
        with progress_bar("replayed", enabled=show_progress, reading=stats) as advance:
            async for record in records:
                writer.write(record)
                advance(1)
                if record.undecodable and len(undecodable) < SHOWN_UNDECODABLE:
                    undecodable.append(record)
    finally:
        writer.close()


async def _write_raw(
    settings: Settings,
    exchange: Exchange,
    selection: Selection,
    *,
    stats: ReadStats,
    stop: asyncio.Event,
    kind: Format,
    output: Path | None,
    compression: AvroCodec,
    show_progress: bool,
) -> None:
    from services.replay._kafka import read_kafka_raw  # noqa: PLC0415  # fast --help
    from services.replay._progress import progress_bar  # noqa: PLC0415  # same
    from services.replay._writers import open_writer  # noqa: PLC0415  # same

    assert settings.bootstrap is not None
    try:
        writer = open_writer(kind, output, exchange.codec, compression)
    except ReplayError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    reader = read_kafka_raw(
        settings, settings.bootstrap, exchange, selection, stats=stats, stop=stop
    )
    try:
        with progress_bar("replayed", enabled=show_progress, reading=stats) as advance:
            async with contextlib.aclosing(reader) as batches:
                async for batch in batches:
                    writer.write_raw(batch)
                    advance(len(batch))
    finally:
        writer.close()


async def _redrive(
    settings: Settings,
    records: AsyncIterator[Replayed],
    *,
    to_topic: str,
    operator: str | None,
    show_progress: bool,
) -> None:
    from services.replay._progress import progress_bar  # noqa: PLC0415  # fast --help
    from services.replay._redrive import redrive  # noqa: PLC0415  # same

    assert settings.bootstrap is not None
    with progress_bar(f"re-driven to {to_topic}", enabled=show_progress) as advance:
        sent = await redrive(
            settings,
            settings.bootstrap,
            records,
            to_topic,
            operator or getpass.getuser(),
            progress=advance,
        )
    out.print(f"re-drove {sent} record(s) to {to_topic}", highlight=False)


async def _export_evidence(
    settings: Settings,
    exchange: Exchange,
    selection: Selection,
    *,
    url: str,
    directory: Path,
    stop: asyncio.Event,
    sign_key: Path | None,
    signer: str,
    progress: bool,
) -> None:
    from services.audit import RecordScan  # noqa: PLC0415  # fast --help: SQLAlchemy
    from services.replay._evidence import (  # noqa: PLC0415  # same
        export_evidence,
        load_signing_key,
    )
    from services.replay._progress import progress_bar  # noqa: PLC0415  # same

    try:
        key = None if sign_key is None else load_signing_key(sign_key)
    except ReplayError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    scan = await RecordScan.open(url)
    try:
        with progress_bar("evidence", enabled=progress) as advance:
            result = await export_evidence(
                scan,
                exchange,
                settings,
                selection,
                directory,
                sign_key=key,
                signer_name=signer,
                stop=stop,
                progress=advance,
            )
    except OixError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    finally:
        await scan.close()
    signed = "signed" if result.signed else "unsigned"
    cut = " (interrupted: the bundle covers what was written)" if result.interrupted else ""
    out.print(
        f"evidence: {result.records} record(s) in {len(result.chains)} partition chain(s), "
        f"{signed}, in {directory}{cut}",
        highlight=False,
        soft_wrap=True,
    )


@commands.callback()
def replay_to_topic(
    ctx: typer.Context,
    *,
    to_topic: Annotated[
        str | None,
        typer.Option(help="Re-drive the selected records to this topic (values untouched)."),
    ] = None,
    topic: Topics = None,
    party: Party = None,
    party_role: Role = PartyRole.ANY,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    since: Since = None,
    until: Until = None,
    message_id: MessageId = None,
    event_id: EventId = None,
    report_type: ReportType = None,
    originator: Originator = None,
    signature_status: SignatureStatus = None,
    mode: Mode = None,
    source: Annotated[Source, typer.Option(help="Read from the broker or the audit store.")] = (
        Source.KAFKA
    ),
    force: Annotated[bool, typer.Option("--force", help="Allow a live OIX topic.")] = False,
    operator: Annotated[
        str | None, typer.Option(help="Who re-drives (default: login name).")
    ] = None,
    no_checks: NoChecks = False,
    raw: Raw = False,
    processes: Processes = None,
    progress: Annotated[
        bool | None, typer.Option(help="Progress line on stderr (default: on a terminal).")
    ] = None,
    bootstrap: Bootstrap = None,
    database_url: DatabaseUrl = None,
) -> None:
    """`oix replay --to-topic T [filters]`: re-drive a range to a recovering partner's topic.

    The same as `oix replay export --to-topic T [filters]`. Without --to-topic,
    name a command (export, check-evidence, compare).
    """
    given = [
        name
        for name, value in ctx.params.items()
        if value not in (_DEFAULTS[name], [], ())  # a repeatable option left out is empty
    ]
    if ctx.invoked_subcommand is not None:
        if given:
            options = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(given))
            raise fail(
                f"{options}: put the options after the command "
                f"(oix replay {ctx.invoked_subcommand} …)",
                EXIT_CONFIG,
            )
        return
    if to_topic is None:
        raise fail(
            "--to-topic: say where to re-drive, or name a command (export, check-evidence, "
            "compare; oix replay --help)",
            EXIT_CONFIG,
        )
    export(
        topic=topic,
        party=party,
        party_role=party_role,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        since=since,
        until=until,
        message_id=message_id,
        event_id=event_id,
        report_type=report_type,
        originator=originator,
        signature_status=signature_status,
        mode=mode,
        source=source,
        output_format=None,
        output=None,
        compression=AvroCodec.DEFLATE,
        no_checks=no_checks,
        raw=raw,
        processes=processes,
        evidence=None,
        sign_key=None,
        signer="",
        to_topic=to_topic,
        force=force,
        operator=operator,
        progress=progress,
        bootstrap=bootstrap,
        database_url=database_url,
    )


_DEFAULTS = {
    name: (None if parameter.default is inspect.Parameter.empty else parameter.default)
    for name, parameter in inspect.signature(replay_to_topic).parameters.items()
    if name != "ctx"
}
"""The re-drive options' defaults: any other value before a command is misplaced."""


@commands.command("check-evidence")
def check_evidence_command(
    bundle: Annotated[Path, typer.Argument(help="The evidence bundle's directory.")],
    signer_key: Annotated[
        str | None,
        typer.Option(help="Require the manifest signed by this Ed25519 public key (base64)."),
    ] = None,
) -> None:
    """Check an evidence bundle without any OIX store: files, chain, every signature.

    Exit 0: clean; 1: findings (each printed with its coordinates); 2: not a bundle.
    """
    from services.replay._check import check_evidence  # noqa: PLC0415  # fast --help

    try:
        found = check_evidence(bundle, expected_signer=signer_key)
    except OixError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    out.print(f"manifest: {found.signed_by or 'unsigned'}", highlight=False, soft_wrap=True)
    out.print(
        f"records: {found.records} in {found.partitions} partition chain(s); "
        f"{found.valid_signatures} signed by their originator's key, "
        f"{found.purged} purged by retention (chained by digest), "
        f"{found.records - found.valid_signatures - found.purged} not",
        highlight=False,
    )
    for finding in found.findings:
        out.print(f"FINDING {finding}", highlight=False, markup=False, soft_wrap=True)
    if not found.clean:
        raise fail(f"{len(found.findings)} finding(s)", EXIT_FINDINGS)
    out.print("clean")


@commands.command("compare")
def compare_command(
    *,
    topic: Topics = None,
    party: Party = None,
    party_role: Role = PartyRole.ANY,
    partition: Partition = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    since: Since = None,
    until: Until = None,
    bootstrap: Bootstrap = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Compare the range on the broker with the audit store, record by record.

    Every difference is printed with its coordinates; exit 1 when there is one.
    """
    settings = broker_settings_or_exit(bootstrap, required=True)
    exchange = _exchange(settings)
    selection = _selection(
        exchange,
        topics=topic,
        party=party,
        role=party_role,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        since=since,
        until=until,
    )
    url = _store_url(settings, database_url)

    async def work() -> int:
        from services.audit import RecordScan  # noqa: PLC0415  # fast --help: SQLAlchemy
        from services.replay._compare import compare  # noqa: PLC0415  # same

        assert settings.bootstrap is not None
        scan = await RecordScan.open(url)
        try:
            summary = await compare(
                settings,
                settings.bootstrap,
                scan,
                exchange,
                selection,
                report=lambda d: out.print(
                    f"DIFFERENCE {d}", highlight=False, markup=False, soft_wrap=True
                ),
            )
        finally:
            await scan.close()
        out.print(
            f"compared {summary.partitions} partition(s): {summary.kafka} record(s) in Kafka, "
            f"{summary.store} in the store, {summary.differences} difference(s)",
            highlight=False,
        )
        return summary.differences

    if run(work, EXIT_ERROR):
        raise fail("the broker and the store differ", EXIT_FINDINGS)
