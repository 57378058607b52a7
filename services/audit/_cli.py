"""``oix audit …``: run the consumer, migrate the store, query it, verify it.

Only wiring: every command hands over to the module that does the work.
Heavy imports happen inside the commands so that ``oix --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer

from services.audit._broker_view import read_broker_view
from services.audit._query import RecordQuery
from services.audit._retention_cli import register as register_retention
from services.audit._settings import AuditSettings, load_audit_settings
from services.bus import ConfigError, Exchange, OixError, Settings, stop_on_signals
from services.host import broker_settings_or_exit, err, fail, out, run, settings_or_exit

commands = typer.Typer(
    name="audit",
    help="The audit consumer and store: every message persisted exactly once, provably.",
    no_args_is_help=True,
)

EXIT_INTEGRITY = 1
"""``verify``: the store is not proven complete and unaltered."""
EXIT_ERROR = 2
"""Could not run (settings, store or broker unreachable)."""
EXIT_TRUST = 4
"""``verify``: records that prove no originator, or a message id under two originators.

The codes add up: 5 is both kinds of finding.
"""
T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="Store URL [env: OIX_AUDIT_DATABASE_URL; default SQLite in OIX_DATA_DIR]."),
]
Bootstrap = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers [env: OIX_BOOTSTRAP].")
]


def _fail(message: str) -> typer.Exit:
    return fail(message, EXIT_ERROR)


def _settings(bootstrap: str | None = None) -> Settings:
    return settings_or_exit(**({"bootstrap": bootstrap} if bootstrap else {}))


def _audit_settings(database_url: str | None) -> AuditSettings:
    try:
        return load_audit_settings(**({"database_url": database_url} if database_url else {}))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _url(settings: Settings, audit: AuditSettings) -> str:
    try:
        return audit.resolved_url(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # Exit 1 means findings (`verify`); an error is 2.
    return run(coro_fn, EXIT_ERROR)


@commands.command("run")
def run_command(
    database_url: DatabaseUrl = None,
    bootstrap: Bootstrap = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Migrate the store's schema first.")
    ] = False,
) -> None:
    """Consume every OIX topic into the audit store until SIGINT or SIGTERM (then drain)."""
    # SQLAlchemy and the Prometheus client: not for `oix --help`.
    from services.audit._service import Running, run_audit  # noqa: PLC0415  # fast --help

    settings = broker_settings_or_exit(bootstrap)
    audit = _audit_settings(database_url)
    if settings.bootstrap is None:
        raise _fail("no broker: set OIX_BOOTSTRAP or --bootstrap (or run `oix up`)")
    broker = settings.bootstrap

    def ready(running: Running) -> None:
        err.print(
            f"auditing {settings.topic_prefix}.* into {running.store} (group {running.group_id}); "
            f"metrics {running.metrics_url or 'off'}",
            highlight=False,
        )

    async def main() -> int:
        stop = stop_on_signals()
        return await run_audit(settings, audit, broker, stop, migrate_first=migrate, on_ready=ready)

    stored = _run(main)
    err.print(f"stopped after storing {stored} records", highlight=False)


@commands.command("migrate")
def migrate_command(
    database_url: DatabaseUrl = None,
    sql: Annotated[
        str | None,
        typer.Option(
            help="Print the SQL for this dialect (postgresql, sqlite) instead of applying it."
        ),
    ] = None,
    grant: Annotated[
        str | None,
        typer.Option(help="Then let this PostgreSQL role INSERT and SELECT, and nothing else."),
    ] = None,
    grant_purge: Annotated[
        str | None,
        typer.Option(
            help="Then let this PostgreSQL role purge content (column UPDATE grants), nothing else."
        ),
    ] = None,
) -> None:
    """Bring the store's schema to this release's revision (safe to run again)."""
    from services.audit import _migrate  # noqa: PLC0415  # fast --help: Alembic

    if sql is not None:
        out.out(_migrate.migration_sql(sql), highlight=False)
        return
    settings = _settings()
    url = _url(settings, _audit_settings(database_url))

    async def main() -> _migrate.Migration:
        done = await _migrate.migrate(url)
        if grant:
            await _migrate.grant(url, grant)
        if grant_purge:
            await _migrate.grant_purge(url, grant_purge)
        return done

    done = _run(main)
    if done.before == done.after:
        out.print(f"the audit store is at revision {done.after}; nothing to do", highlight=False)
    else:
        out.print(f"migrated the audit store from {done.before} to {done.after}", highlight=False)
    if grant:
        out.print(f"granted INSERT and SELECT to {grant}", highlight=False)
    if grant_purge:
        out.print(f"granted SELECT and the purge's UPDATEs to {grant_purge}", highlight=False)
    if done.rechained:
        out.print(
            f"re-chained {done.rechained} record(s) from chain version 1 to 2 (digests of content)",
            highlight=False,
        )


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option}: {text!r} is not an ISO 8601 time (2026-03-01T12:00:00Z)") from None


@commands.command("query")
def query_command(
    *,
    message_id: Annotated[str | None, typer.Option(help="Message id.")] = None,
    originator: Annotated[str | None, typer.Option(help="Originating party, e.g. LT-VSAT.")] = None,
    report_type: Annotated[
        str | None, typer.Option("--type", help="Report type, e.g. IncidentReport.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Kafka timestamp from (ISO 8601, included).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Kafka timestamp until (ISO 8601, excluded).")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Topic.")] = None,
    partition: Annotated[int | None, typer.Option(help="Partition (needs --topic).")] = None,
    from_offset: Annotated[int | None, typer.Option(help="First offset (needs --topic).")] = None,
    to_offset: Annotated[int | None, typer.Option(help="Last offset, included.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Signature status: valid, invalid, unsigned, unknown_key, unverified_origin."
        ),
    ] = None,
    include_unproven: Annotated[
        bool,
        typer.Option(
            "--include-unproven",
            help="With --originator: also records that only claim it (any status but valid).",
        ),
    ] = False,
    reused: Annotated[
        bool,
        typer.Option(
            "--reused",
            help="Only message ids stored under more than one proven originator (both shown).",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(help="At most this many records (a note on stderr when it cuts).")
    ] = 100,
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per record, every field.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Find stored records by message id, originator, type, time, topic, partition or offsets."""
    from services.audit._report import print_records, print_records_json  # noqa: PLC0415  # fast --help
    from services.audit._store import AuditStore  # noqa: PLC0415  # fast --help: SQLAlchemy

    settings = _settings()
    url = _url(settings, _audit_settings(database_url))
    try:
        query = RecordQuery(
            message_id=message_id,
            originator=originator,
            report_type=report_type,
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            topic=topic,
            partition=partition,
            from_offset=from_offset,
            to_offset=to_offset,
            signature_status=status,
            unproven=include_unproven,
            reused=reused,
            limit=limit,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None

    async def main() -> tuple[list[Any], bool]:
        store = await AuditStore.open(url)
        try:
            return await store.query_page(query)
        finally:
            await store.close()

    found, cut = _run(main)
    now = _reopened(settings, found)
    if json_lines:
        print_records_json(found, out, now)
    else:
        print_records(found, out, now)
    purged = sorted({r.purge_id for r in found if r.purged_at is not None})
    if purged:
        events = ", ".join(purged[:1]) + (f" and {len(purged) - 1} more" if purged[1:] else "")
        err.print(
            f"note: {sum(r.purged_at is not None for r in found)} of these records are purged "
            f"(content removed past retention or on request; facts, digests and chain kept) by "
            f"retention event {events} (`oix audit retention-log`)",
            highlight=False,
            soft_wrap=True,
        )
    if cut:
        err.print(
            f"note: only the first {limit} matching records are shown; more match "
            "(raise --limit, or narrow the query)",
            highlight=False,
            soft_wrap=True,
        )


def _reopened(settings: Settings, found: list[Any]) -> list[Any] | None:
    """Undecoded records opened again with today's released schemas (after a release)."""
    from services.audit._query import reopen  # noqa: PLC0415  # fast --help

    if all(record.decoded is not None or record.value is None for record in found):
        return None
    try:
        exchange = Exchange.from_settings(settings)
    except OixError as exc:
        err.print(f"not decoding stored raw values again: {exc}", highlight=False)
        return None
    return reopen(exchange.opener, found)


async def _check_broker_retention(
    settings: Settings, bootstrap: str, exchange: Exchange, report: Any, broker: dict[Any, Any]
) -> None:
    """Warn when the broker keeps the topics longer than the agreement allows."""
    from services.audit._broker_retention import (  # noqa: PLC0415  # fast --help
        read_topic_retention,
        retention_warnings,
    )

    allowed = exchange.agreement.defaults.retention_days
    try:
        found = await read_topic_retention(settings, bootstrap, sorted({t for t, _ in broker}))
    except OixError as exc:
        report.warnings.append(f"cannot read the topics' retention.ms: {exc}")
        return
    report.warnings += retention_warnings(found, allowed)


@commands.command("verify")
def verify_command(
    database_url: DatabaseUrl = None,
    bootstrap: Bootstrap = None,
    no_broker: Annotated[
        bool, typer.Option("--no-broker", help="Do not compare with the broker.")
    ] = False,
    no_signatures: Annotated[
        bool, typer.Option("--no-signatures", help="Do not verify signatures again.")
    ] = False,
    details: Annotated[
        bool,
        typer.Option(
            "--details", help="List every occurrence a grouped finding stands for, one a line."
        ),
    ] = False,
) -> None:
    """Prove the store complete and unaltered, and say what in it proves nothing.

    Integrity: recomputes every hash chain, checks that offsets are contiguous,
    verifies signatures again and compares the store with the broker's
    log-start and high-watermark offsets (lag is reported apart from loss).
    Trust: records that prove no originator (invalid, unsigned, unknown key or
    schema, undecodable) and their quarantine copies, and message ids stored
    under two proven originators.

    Exit status: 0 no finding; 1 integrity findings; 4 trust findings; 5 both;
    2 could not verify (settings, store, broker).
    """
    from rich.progress import Progress  # noqa: PLC0415  # fast --help

    from services.audit._opening import RecordOpener  # noqa: PLC0415  # fast --help: multiprocessing
    from services.audit._report import print_report  # noqa: PLC0415  # fast --help
    from services.audit._store import AuditStore  # noqa: PLC0415  # fast --help: SQLAlchemy
    from services.audit._verify import (  # noqa: PLC0415  # fast --help
        FindingCategory,
        Verifier,
        VerifyReport,
    )

    settings = _settings(bootstrap) if no_broker else broker_settings_or_exit(bootstrap)
    audit = _audit_settings(database_url)
    url = _url(settings, audit)
    if not no_broker and settings.bootstrap is None:
        raise _fail("no broker to compare with: set OIX_BOOTSTRAP or --bootstrap, or --no-broker")
    try:
        exchange = Exchange.from_settings(settings)
    except OixError as exc:
        raise _fail(str(exc)) from None

    async def main() -> VerifyReport:
        store = await AuditStore.open(url)
        signatures = None
        if not no_signatures:
            signatures = RecordOpener(settings, exchange.opener, audit.open_processes)
            await signatures.start()
        try:
            broker = None
            if not no_broker:
                assert settings.bootstrap is not None
                broker = await read_broker_view(
                    settings,
                    settings.bootstrap,
                    exchange.naming,
                    audit.resolved_group(settings),
                )
            with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
                task = progress.add_task("verifying", total=None)
                verifier = Verifier(
                    store,
                    signatures,
                    on_progress=lambda n: progress.advance(task, n),
                    quarantine_topic=exchange.naming.quarantine,
                )
                progress.update(task, total=await verifier.total_rows())
                report = await verifier.run(broker)
            if broker is not None:
                assert settings.bootstrap is not None
                bootstrap_servers = settings.bootstrap
                await _check_broker_retention(settings, bootstrap_servers, exchange, report, broker)
            return report
        finally:
            if signatures is not None:
                signatures.close()
            await store.close()

    report = _run(main)
    print_report(report, out, details=details)
    code = (EXIT_INTEGRITY if report.of(FindingCategory.INTEGRITY) else 0) | (
        EXIT_TRUST if report.of(FindingCategory.TRUST) else 0
    )
    if code:
        raise typer.Exit(code)


register_retention(commands)
