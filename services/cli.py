"""The ``oix`` command line: it only wires commands to the code that does the work."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.audit import audit_app
from services.bus import (
    BrokerError,
    EmbeddedBroker,
    Exchange,
    OixError,
    Settings,
    configure_logging,
    generate_key_pair,
    key_file,
    load_agreement,
    load_settings,
    render_acls,
    stop_on_signals,
)
from services.gateway._cli import gateway_app

if TYPE_CHECKING:
    from services.bus._schemas import Fingerprint, ReportSchema

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
app.add_typer(audit_app, name="audit")
app.add_typer(gateway_app, name="gateway")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line (no traceback) and give the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    """Load settings and logging, or exit with the reason."""
    try:
        settings = load_settings(**overrides)
    except OixError as exc:
        raise fail(str(exc), 2) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; an :class:`OixError` becomes one error line and exit code 1."""
    try:
        return asyncio.run(coro_fn())
    except OixError as exc:
        raise fail(str(exc)) from None
    except ExceptionGroup as group:
        # A service of `oix up` failed inside its task group.
        matched, rest = group.split(OixError)
        if matched is None or rest is not None:
            raise
        raise fail("; ".join(str(e) for e in matched.exceptions)) from None


@app.command()
def up() -> None:
    """Start the embedded broker and every OIX service on the example agreement.

    Prints where each service can be reached; Ctrl-C stops everything cleanly.
    """
    from services.up import run_up  # keeps `oix --help` fast

    settings = settings_or_exit()
    run(lambda: run_up(settings, lambda line: out.print(line, highlight=False)))


@app.command()
def demo(
    rounds: Annotated[int, typer.Option(help="Rounds of all examples; 0 runs until Ctrl-C.")] = 1,
    interval: Annotated[float, typer.Option(help="Seconds between two reports.")] = 0.2,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [env: OIX_BOOTSTRAP].")
    ] = None,
) -> None:
    """Publish the example reports of deploy/examples, signed by their agencies, to the bus."""
    from services.demo import Published, run_demo

    settings = settings_or_exit(**({"bootstrap": bootstrap} if bootstrap else {}))
    servers = settings.bootstrap
    if servers is None:
        raise fail("no broker: set OIX_BOOTSTRAP or --bootstrap (or run `oix up`)", 2)
    exchange = _exchange(settings)

    def show(p: Published) -> None:
        header = p.report.header
        out.print(
            f"{p.report.report_type:<22} {header.originator:<8} -> "
            f"{', '.join(p.topics)} [{p.partition}@{p.offset}]",
            highlight=False,
        )

    count = run(
        lambda: run_demo(
            settings,
            exchange,
            servers,
            rounds=rounds or None,
            interval=interval,
            on_published=show,
        ),
    )
    out.print(f"published {count} reports")


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
        raise fail(str(exc), 2) from None


def _load_schemas(
    directory: Path,
) -> tuple[dict[str, ReportSchema], dict[Fingerprint, ReportSchema]]:
    """The current and the released schemas of ``directory``, or exit with the reason."""
    from services.bus._schemas import load_current, load_released

    try:
        return load_current(directory), load_released(directory / "released")
    except OixError as exc:
        raise fail(str(exc)) from None


@schemas_app.command("check")
def schemas_check(
    schemas_dir: Annotated[Path | None, typer.Option(help="Defaults to OIX_SCHEMAS_DIR.")] = None,
) -> None:
    """Refuse a schema change that is not backward and forward compatible with every release."""
    from services.bus._compat import check_compatibility

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
    from services.bus._compat import release

    directory = schemas_dir or settings_or_exit().schemas_dir
    try:
        written = release(directory)
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
    out_dir: Annotated[Path, typer.Option(help="Where the private key file goes.")] = Path("keys"),
) -> None:
    """Make an Ed25519 key pair: the private key file, and the public key for the agreement."""
    import datetime as dt

    kid = key_id or f"{party}-{dt.datetime.now(dt.UTC).year}-1"
    path = key_file(out_dir, kid)
    if path.exists():
        raise fail(f"{path} exists; refusing to overwrite a private key")
    pair = generate_key_pair()
    out_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(pair.private_pem)
    out.print(f"private key written to {path} (keep it secret; mode 600)")
    out.print("add this to the party's keys in the agreement:")
    out.print(f"      - id: {kid}\n        public_key: {pair.public_b64}", highlight=False)


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


@agreement_app.command("asyncapi")
def agreement_asyncapi(
    output: Annotated[
        Path | None, typer.Option(help="Write the document to this file instead of stdout.")
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of the exchange: channels, messages, schemas, headers, keys."""
    import json

    from services.bus import asyncapi_document

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
