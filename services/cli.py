"""The ``oix`` command line: it only wires commands to the code that does the work."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from services import audit, demo, gateway, liaison, replay
from services.bus import (
    BrokerError,
    EmbeddedBroker,
    Exchange,
    Fingerprint,
    OixError,
    ReportSchema,
    Settings,
    asyncapi_document,
    check_compatibility,
    generate_key_pair,
    key_block,
    load_agreement,
    load_current,
    load_released,
    plan_rotation,
    release_schemas,
    render_acls,
    rotated_agreement,
    stop_on_signals,
    unified_diff,
    write_private_key,
)

if TYPE_CHECKING:
    from services.bus.provisioning import Layout

from services.host import (
    EXIT_CONFIG,
    HostedService,
    broker_settings_or_exit,
    err,
    fail,
    out,
    run,
    run_up,
    service_name,
    settings_or_exit,
)

SERVICES: tuple[HostedService, ...] = (audit, gateway, liaison, demo)
"""Every service of ``oix …`` and ``oix up``, in start order: the one place a service is added.

The audit consumer starts first, so that it reads what the others publish from
the beginning.
"""

app = typer.Typer(
    help="OIX: the operational information exchange bus for border guard services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="The Avro schema contract in schemas/.", no_args_is_help=True)
keys_app = typer.Typer(help="Ed25519 signing keys of the parties.", no_args_is_help=True)
agreement_app = typer.Typer(
    help="The exchange agreement and what derives from it.", no_args_is_help=True
)
app.add_typer(schemas_app, name="schemas")
app.add_typer(keys_app, name="keys")
app.add_typer(agreement_app, name="agreement")
for _service in SERVICES:
    app.add_typer(_service.commands)
app.add_typer(replay.commands)  # a tool, not a service: no part in `oix up`


@app.command()
def up() -> None:
    """Start the embedded broker and every OIX service on the example agreement.

    Prints where each service can be reached; Ctrl-C stops everything cleanly.
    """
    settings = settings_or_exit()
    # Each service's part loads here, not before: `oix --help` stays fast.
    hooks = [(service_name(s), s.run_in_up) for s in SERVICES]
    run(lambda: run_up(settings, lambda line: out.print(line, highlight=False), hooks))


app.command("feed")(liaison.feed)


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, memory only) until Ctrl-C."""
    settings = settings_or_exit()

    async def serve() -> None:
        embedded = EmbeddedBroker(port=port or None, binary=settings.tansu_bin)
        stop = stop_on_signals()
        async with embedded:
            out.print(f"broker ready at kafka://{embedded.bootstrap} (memory only); Ctrl-C stops")
            waiter = asyncio.create_task(stop.wait())
            while not stop.is_set():
                await asyncio.wait({waiter}, timeout=1.0)
                if not embedded.running:
                    raise BrokerError("the broker process exited unexpectedly")
        out.print("broker stopped")

    run(serve)


def _exchange(settings: Settings) -> Exchange:
    try:
        return Exchange.from_settings(settings)
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _load_schemas(
    directory: Path,
) -> tuple[dict[str, ReportSchema], dict[Fingerprint, ReportSchema]]:
    """The current and the released schemas of ``directory``, or exit with the reason."""
    try:
        return load_current(directory), load_released(directory / "released")
    except OixError as exc:
        raise fail(str(exc)) from None


@schemas_app.command("check")
def schemas_check(
    schemas_dir: Annotated[Path | None, typer.Option(help="Defaults to OIX_SCHEMAS_DIR.")] = None,
) -> None:
    """Refuse a schema change that is not backward and forward compatible with every release."""
    current, released = _load_schemas(schemas_dir or settings_or_exit().schemas_dir)
    problems = check_compatibility(current, released)
    for problem in problems:
        err.print(f"[red]incompatible:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise fail(f"{len(problems)} incompatible change(s); see above")
    unreleased = [s for s in current.values() if s.fingerprint not in released]
    for schema in unreleased:
        out.print(
            f"unreleased: {schema.name} {schema.fingerprint_hex} "
            "(compatible; run `oix schemas release`)",
        )
    out.print(f"ok: {len(current)} report types compatible with {len(released)} released versions")


@schemas_app.command("release")
def schemas_release(
    schemas_dir: Annotated[Path | None, typer.Option(help="Defaults to OIX_SCHEMAS_DIR.")] = None,
) -> None:
    """Record the current schemas as released versions (after the compatibility check)."""
    directory = schemas_dir or settings_or_exit().schemas_dir
    try:
        written = release_schemas(directory)
    except OixError as exc:
        raise fail(str(exc)) from None
    for schema in written:
        out.print(f"released {schema.name} {schema.fingerprint_hex}")
    if not written:
        out.print("nothing to release: every current schema is already released")


@schemas_app.command("list")
def schemas_list() -> None:
    """Every released schema version, by report type and fingerprint."""
    current, released = _load_schemas(settings_or_exit().schemas_dir)
    table = Table("report type", "fingerprint", "current")
    for schema in sorted(released.values(), key=lambda s: (s.name, s.fingerprint_hex)):
        is_current = current.get(schema.name) == schema
        table.add_row(schema.name, schema.fingerprint_hex, "yes" if is_current else "")
    out.print(table)


@keys_app.command("generate")
def keys_generate(
    party: Annotated[str, typer.Argument(help="Agency code, e.g. LT-VSAT.")],
    key_id: Annotated[str | None, typer.Option(help="Defaults to <PARTY>-<year>-1.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Where the private key file goes; defaults to OIX_KEYS_DIR.")
    ] = None,
) -> None:
    """Make an Ed25519 key pair: the private key file (mode 600), and the agreement's public key.

    The file is never overwritten; its directory is made 700 if it does not exist.
    """
    kid = key_id or f"{party}-{dt.datetime.now(dt.UTC).year}-1"
    directory = out_dir or settings_or_exit().keys_dir
    pair = generate_key_pair()
    try:
        path = write_private_key(directory, kid, pair.private_pem)
    except OixError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"private key written to {path} (keep it secret; mode 600)",
        highlight=False,
        soft_wrap=True,
    )
    out.print("add this to the party's keys in the agreement:")
    out.print(f"      - id: {kid}\n        public_key: {pair.public_b64}", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    party: Annotated[str, typer.Argument(help="Agency code, e.g. LT-VSAT.")],
    overlap_days: Annotated[
        int, typer.Option(min=1, help="Days receivers still accept the old key.")
    ] = 14,
    key_id: Annotated[str | None, typer.Option(help="Defaults to <PARTY>-<year>-<n+1>.")] = None,
) -> None:
    """Make a party's next signing key (into OIX_KEYS_DIR) and print the agreement change.

    The old key gets not_after = now + overlap: records created before then stay
    valid with it. Once every party runs the changed agreement, restart the
    party's gateways: they sign with the new key.
    """
    settings = settings_or_exit()
    try:
        agreement = load_agreement(settings.agreement)
        rotation = plan_rotation(
            agreement,
            party,
            dt.datetime.now(dt.UTC),
            dt.timedelta(days=overlap_days),
            key_id,
        )
        path = write_private_key(settings.keys_dir, rotation.key_id, rotation.pair.private_pem)
    except OixError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"private key written to {path} (keep it secret; mode 600)",
        highlight=False,
        soft_wrap=True,
    )
    retired = ", ".join(rotation.retired) or "none"
    out.print(
        f"the agreement change: add {rotation.key_id}; {retired} accepted for records created "
        f"before {rotation.not_after_text}",
        highlight=False,
        soft_wrap=True,
    )
    text = settings.agreement.read_text(encoding="utf-8")
    changed = rotated_agreement(text, rotation)
    if changed is None:
        out.print(f"replace parties.{party}.keys with:", highlight=False)
        sys.stdout.write(key_block(agreement, rotation))
    else:
        sys.stdout.write(unified_diff(str(settings.agreement), text, changed))


@agreement_app.command("check")
def agreement_check(
    path: Annotated[Path | None, typer.Argument(help="Defaults to OIX_AGREEMENT.")] = None,
) -> None:
    """Validate an agreement file and show what it says."""
    target = path or settings_or_exit().agreement
    try:
        agreement = load_agreement(target)
    except OixError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"ok: {agreement.exchange.title} ({agreement.exchange.version}): "
        f"{len(agreement.parties)} parties, {len(agreement.feeds)} feeds, "
        f"{len(agreement.releases)} releases",
    )


@agreement_app.command("topics")
def agreement_topics() -> None:
    """Every topic the agreement implies, and who reads it."""
    settings = settings_or_exit()
    exchange = _exchange(settings)
    readable = {p: set(exchange.router.readable_by(p)) for p in exchange.agreement.parties}
    table = Table("topic", "readers")
    for topic in exchange.router.all_topics():
        readers = [p for p, topics in readable.items() if topic in topics]
        table.add_row(topic, ", ".join(readers) or "auditors")
    out.print(table)


@agreement_app.command("acls")
def agreement_acls(
    bootstrap: Annotated[str, typer.Option(help="Written into the commands.")] = "$BOOTSTRAP",
) -> None:
    """The kafka-acls.sh commands that enforce the agreement on Apache Kafka."""
    settings = settings_or_exit()
    for acl in render_acls(_exchange(settings).router):
        out.print(acl.command(bootstrap), highlight=False, soft_wrap=True)


@app.command()
def provision(
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan as a diff; change nothing.")
    ] = False,
    replication_factor: Annotated[int, typer.Option(help="Copies of every record.")] = 3,
    min_insync_replicas: Annotated[
        int, typer.Option(help="Copies that must have a record before acks=all succeeds.")
    ] = 2,
    render: Annotated[
        str | None,
        typer.Option(help="Write resources instead of changing a cluster: strimzi."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--out", help="File for --render; default stdout.")
    ] = None,
    cluster: Annotated[str, typer.Option(help="Strimzi Kafka cluster name, for --render.")] = "oix",
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers; default OIX_BOOTSTRAP.")
    ] = None,
) -> None:
    """Create or update the agreement's topics and ACLs on a Kafka cluster; idempotent.

    Topics get the agreed partitions per feed, retention = the agreed replay
    window, cleanup.policy=delete, min.insync.replicas and no unclean leader
    election. ACLs: each party writes only its own topics, reads only what was
    released to it, uses only its own groups; the audit consumer reads
    everything and writes the quarantine; ACLs the agreement no longer implies
    are revoked. Exit 1 when a planned change could not be made (or, with
    OIX_ENV=production, when the broker enforces no ACLs).
    """
    from services.bus import provisioning  # noqa: PLC0415  # fast --help: librdkafka

    settings = broker_settings_or_exit(bootstrap)
    exchange = _exchange(settings)
    try:
        layout = provisioning.Layout(replication_factor, min_insync_replicas)
    except OixError as exc:
        raise fail(str(exc), 2) from None
    if render is not None:
        _render_resources(render, exchange, layout, cluster, output)
        return
    servers = settings.bootstrap
    if servers is None:
        raise fail("no broker: set OIX_BOOTSTRAP or --bootstrap", 2)
    done = run(
        lambda: provisioning.provision(settings, servers, exchange.router, layout, dry_run=dry_run)
    )
    for line in done.plan.lines():
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    for failure in done.failures:
        err.print(f"[red]not done:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if done.failures:
        raise fail(f"{len(done.failures)} planned change(s) not made; see above")
    if done.plan.acls_unavailable and settings.env == "production":
        raise fail(f"OIX_ENV=production and ACLs are {done.plan.acls_unavailable}")
    if done.applied:
        out.print("applied")


def _render_resources(
    kind: str, exchange: Exchange, layout: Layout, cluster: str, output: Path | None
) -> None:
    from services.bus.provisioning import render_strimzi  # noqa: PLC0415  # fast --help: librdkafka

    if kind != "strimzi":
        raise fail(f"--render {kind}: unknown; the choice is: strimzi", 2)
    text = render_strimzi(exchange.router, layout, cluster)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}", highlight=False)


@agreement_app.command("asyncapi")
def agreement_asyncapi(
    output: Annotated[
        Path | None, typer.Option(help="Write the document to this file instead of stdout.")
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of the exchange: channels, messages, schemas, headers, keys."""
    settings = settings_or_exit()
    document = asyncapi_document(_exchange(settings), settings)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)


def main() -> None:
    """Entry point of the ``oix`` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
