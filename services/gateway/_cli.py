"""``oix gateway …``: run a gateway, and manage its bearer tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.bus import OixError, stop_on_signals
from services.gateway._settings import GatewaySettings, load_gateway_settings, tokens_path
from services.gateway._tokens import create_token, read_tokens, revoke_token
from services.host import (
    EXIT_CONFIG,
    broker_settings_or_exit,
    err,
    fail,
    out,
    run,
    settings_or_exit,
)

commands = typer.Typer(
    name="gateway",
    help="The publisher gateway: agency systems publish reports over HTTP.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="Bearer tokens of agency systems (stored hashed).", no_args_is_help=True
)
commands.add_typer(token_app, name="token")

TokensOption = Annotated[
    Path | None,
    typer.Option(
        help="Token file [env: OIX_GATEWAY_TOKENS_FILE; default <data_dir>/gateway/tokens.yaml]."
    ),
]


def _gateway_settings(**overrides: object) -> GatewaySettings:
    try:
        return load_gateway_settings(**{k: v for k, v in overrides.items() if v is not None})
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _tokens_path(tokens_file: Path | None) -> Path:
    """The token file the ``token`` commands work on."""
    return tokens_path(settings_or_exit(), _gateway_settings(tokens_file=tokens_file))


@commands.command("run")
def run_command(
    agency: Annotated[
        str | None, typer.Option(help="Agency code, e.g. LV-VRS [env: OIX_GATEWAY_AGENCY].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="[env: OIX_GATEWAY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[env: OIX_GATEWAY_PORT]")] = None,
    tokens_file: TokensOption = None,
) -> None:
    """Serve one agency's HTTP gateway until SIGINT/SIGTERM, then drain and stop."""
    # uvicorn and FastAPI load only to serve, not for `oix --help`.
    from services.gateway._server import run_gateway  # noqa: PLC0415  # fast --help

    # Without OIX_BOOTSTRAP: the broker of the `oix up` running with the same data.
    settings = broker_settings_or_exit()
    gateway = _gateway_settings(agency=agency, host=host, port=port, tokens_file=tokens_file)

    async def serve() -> None:
        stop = stop_on_signals()
        await run_gateway(
            settings,
            gateway,
            stop,
            on_ready=lambda url: out.print(
                f"gateway for {gateway.agency} at {url} (docs at {url}/docs); Ctrl-C stops",
                highlight=False,
            ),
        )
        out.print("gateway stopped")

    run(serve)


@commands.command("example")
def example_command(
    report_type: Annotated[str, typer.Argument(help="A report type, e.g. IncidentReport.")],
    agency: Annotated[
        str,
        typer.Option(help="The agency that publishes it, e.g. LV-VRS [env: OIX_GATEWAY_AGENCY]."),
    ],
) -> None:
    """Print an example report as an agency system would send it today (JSON, to pipe to curl).

    The one `/docs` offers: from deploy/examples, rewritten for the agency and
    moved to the present (the gateway refuses times far from now).
    """
    # FastAPI (under the OpenAPI module) loads only for this command, not for `oix --help`.
    from services.bus import Exchange  # noqa: PLC0415  # fast --help: the codec
    from services.gateway._openapi import examples_for  # noqa: PLC0415  # fast --help: FastAPI

    settings = settings_or_exit()
    try:
        exchange = Exchange.from_settings(settings)
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    examples = examples_for(exchange, agency)
    if report_type not in examples:
        known = ", ".join(sorted(examples)) or "none: is the agency in the agreement?"
        raise fail(f"no example of {report_type!r} for {agency}; there are: {known}")
    # Plain JSON, never wrapped to the terminal's width: it is piped to curl.
    typer.echo(json.dumps(examples[report_type]["value"], indent=2, ensure_ascii=False))


@token_app.command("create")
def token_create(
    agency: Annotated[str, typer.Argument(help="Agency the token publishes for, e.g. LV-VRS.")],
    name: Annotated[str, typer.Option(help="Which agency system uses it, e.g. lv-incidents.")],
    tokens_file: TokensOption = None,
) -> None:
    """Make a bearer token for an agency system; it is printed once and stored hashed."""
    path = _tokens_path(tokens_file)
    try:
        token = create_token(path, agency, name)
    except OixError as exc:
        raise fail(str(exc)) from None
    err.print(f"token {name!r} for {agency} added to {path} (only its SHA-256 is kept)")
    err.print("copy it now: it cannot be shown again.")
    # Only the token on stdout, so TOKEN=$(oix gateway token create …) works.
    out.print(token, highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(tokens_file: TokensOption = None) -> None:
    """The tokens of the token file: names, agencies, creation dates (never the tokens)."""
    path = _tokens_path(tokens_file)
    try:
        entries = read_tokens(path)
    except OixError as exc:
        raise fail(str(exc)) from None
    table = Table("name", "agency", "created", title=str(path))
    for entry in entries:
        table.add_row(entry.name, entry.agency, entry.created_at)
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    tokens_file: TokensOption = None,
) -> None:
    """Remove a token; a running gateway refuses it within a second."""
    path = _tokens_path(tokens_file)
    try:
        revoke_token(path, name)
    except OixError as exc:
        raise fail(str(exc)) from None
    out.print(f"token {name!r} revoked in {path}")
