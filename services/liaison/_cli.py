"""``oix liaison …``: run the service, migrate its store, manage officers and webhooks.

Only wiring: every command hands over to the module that does the work.
Heavy imports happen inside the commands so that ``oix --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from services.bus import ConfigError, Exchange, OixError, Settings, stop_on_signals
from services.host import EXIT_CONFIG, err, fail, out, run, settings_or_exit
from services.liaison._auth import add_officer, new_password, read_officers, remove_officer
from services.liaison._endpoints import add_endpoint, read_endpoints
from services.liaison._settings import LiaisonSettings, load_liaison_settings

commands = typer.Typer(
    name="liaison",
    help="The liaison service: officers follow partner feeds, acknowledge and answer.",
    no_args_is_help=True,
)
officer_app = typer.Typer(
    help="Officers who may sign in to a liaison service.", no_args_is_help=True
)
webhook_app = typer.Typer(
    help="Agency systems that receive reports by webhook.", no_args_is_help=True
)
commands.add_typer(officer_app, name="officer")
commands.add_typer(webhook_app, name="webhook")

Agency = Annotated[
    str | None,
    typer.Option(
        "--as", help="The agency whose officers the service serves [env: OIX_LIAISON_AGENCY]."
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="Store URL [env: OIX_LIAISON_DATABASE_URL; default SQLite in OIX_DATA_DIR]."),
]


def _liaison_settings(**overrides: object) -> LiaisonSettings:
    try:
        return load_liaison_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _agency(settings: Settings, liaison: LiaisonSettings) -> str:
    try:
        return liaison.required_agency(Exchange.from_settings(settings))
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


@commands.command("run")
def run_command(
    agency: Agency = None,
    database_url: DatabaseUrl = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port [env: OIX_LIAISON_PORT; 8090].")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [env: OIX_BOOTSTRAP].")
    ] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Migrate the store's schema first.")
    ] = False,
) -> None:
    """Follow what the agreement releases to the agency and serve its officers until SIGTERM."""
    from services.liaison._server import LiaisonServer, run_liaison  # noqa: PLC0415  # fast --help

    settings = settings_or_exit(**({"bootstrap": bootstrap} if bootstrap else {}))
    liaison = _liaison_settings(agency=agency, database_url=database_url, port=port)
    if settings.bootstrap is None:
        raise fail("no broker: set OIX_BOOTSTRAP or --bootstrap (or run `oix up`)", EXIT_CONFIG)

    def ready(server: LiaisonServer) -> None:
        service = server.service
        err.print(
            f"liaison for {service.agency} at {server.url} (store {service.store.display_url}, "
            f"group {service.group_id})",
            highlight=False,
        )

    async def main() -> None:
        await run_liaison(
            settings, liaison, stop_on_signals(), migrate_first=migrate, on_ready=ready
        )

    run(main)


@commands.command("migrate")
def migrate_command(
    agency: Agency = None,
    database_url: DatabaseUrl = None,
    sql: Annotated[
        str | None,
        typer.Option(
            help="Print the SQL for this dialect (postgresql, sqlite) instead of applying it."
        ),
    ] = None,
) -> None:
    """Bring the store's schema to this release's revision (safe to run again)."""
    from services.liaison import _migrate  # noqa: PLC0415  # fast --help: Alembic

    if sql is not None:
        out.out(_migrate.migration_sql(sql), highlight=False)
        return
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency, database_url=database_url)
    if liaison.database_url is None:
        url = liaison.resolved_url(settings, _agency(settings, liaison))
    else:
        url = liaison.resolved_url(settings, liaison.agency or "")
    done = run(lambda: _migrate.migrate(url))
    if done.before == done.after:
        out.print(f"the liaison store is at revision {done.after}; nothing to do", highlight=False)
    else:
        out.print(f"migrated the liaison store from {done.before} to {done.after}", highlight=False)


@officer_app.command("add")
def officer_add(
    name: Annotated[str, typer.Argument(help="The officer's sign-in name.")],
    agency: Agency = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from stdin instead of generating one."
        ),
    ] = False,
) -> None:
    """Add an officer (or set a new password); a generated password is printed once."""
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency)
    code = _agency(settings, liaison)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else new_password()
    try:
        add_officer(liaison.officers_path(settings), code, name, password)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    err.print(f"officer {name} of {code} in {liaison.officers_path(settings)}", highlight=False)
    if not password_stdin:
        out.print(password, highlight=False)


@officer_app.command("remove")
def officer_remove(name: Annotated[str, typer.Argument()], agency: Agency = None) -> None:
    """Remove an officer (their sessions end when they expire)."""
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency)
    try:
        remove_officer(liaison.officers_path(settings), _agency(settings, liaison), name)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@officer_app.command("list")
def officer_list(agency: Agency = None) -> None:
    """The officers (of one agency with --as)."""
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency)
    try:
        officers = read_officers(liaison.officers_path(settings))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    for officer in officers:
        if liaison.agency in {None, officer.agency}:
            out.print(
                f"{officer.agency} {officer.name} (since {officer.created_at})", highlight=False
            )


@webhook_app.command("add")
def webhook_add(
    name: Annotated[str, typer.Argument(help="A name for the receiving system (lower case).")],
    url: Annotated[str, typer.Argument(help="Where reports are POSTed.")],
    agency: Agency = None,
    owner: Annotated[
        str | None,
        typer.Option(help="The organisation the system belongs to; default the agency itself."),
    ] = None,
    report_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only these report types (repeatable).")
    ] = None,
) -> None:
    """Add a webhook endpoint; its signing secret is printed once (restart the service)."""
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency)
    code = _agency(settings, liaison)
    try:
        secret = add_endpoint(
            liaison.webhooks_path(settings),
            code,
            name,
            url,
            owner=owner,
            report_types=report_type or [],
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None
    err.print(f"webhook {name} of {code} in {liaison.webhooks_path(settings)}", highlight=False)
    out.print(secret, highlight=False)


@webhook_app.command("list")
def webhook_list(agency: Agency = None) -> None:
    """The webhook endpoints (never their secrets)."""
    settings = settings_or_exit()
    liaison = _liaison_settings(agency=agency)
    try:
        endpoints = read_endpoints(liaison.webhooks_path(settings))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    for e in endpoints:
        if liaison.agency in {None, e.agency}:
            types = ",".join(e.report_types) or "all types"
            out.print(f"{e.agency} {e.name} {e.url} (owner {e.owner}; {types})", highlight=False)


def feed(  # one option per filter of the feed
    *,
    agency: Annotated[str, typer.Option("--as", help="The agency whose feed to follow.")],
    partners: Annotated[
        str | None, typer.Option("--from", help="Only these originators, comma-separated.")
    ] = None,
    report_type: Annotated[
        str | None, typer.Option("--type", help="Only these report types, comma-separated.")
    ] = None,
    since: Annotated[
        str, typer.Option(help="From how long ago (30m, 2h, 1d) or an ISO 8601 time.")
    ] = "24h",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep following the live stream.")
    ] = False,
    json_lines: Annotated[
        bool | None, typer.Option("--json/--no-json", help="JSON lines (the default when piped).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The liaison service [env: OIX_LIAISON_URL].", envvar="OIX_LIAISON_URL"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="A bearer token [env: OIX_LIAISON_TOKEN].", envvar="OIX_LIAISON_TOKEN"),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Sign in as this officer (asks the password).")
    ] = None,
) -> None:
    """Partner reports released to an agency, one line each, from its liaison service.

    Reads the liaison API: the service must run (`oix liaison run`, or `oix up`, whose
    services and tokens it finds by itself). Colour on a terminal; JSON lines when piped.
    """
    from services.liaison._feed import FeedOptions, run_feed  # noqa: PLC0415  # fast --help: httpx

    settings = settings_or_exit()
    options = FeedOptions(
        agency=agency,
        partners=partners,
        report_type=report_type,
        since=since,
        follow=follow,
        json_lines=json_lines if json_lines is not None else not out.is_terminal,
        url=url,
        token=token,
        user=user,
    )
    run(lambda: run_feed(settings, options, out))
