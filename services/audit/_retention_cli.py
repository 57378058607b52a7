"""``oix audit purge|erase|hold|release-hold|holds|retention-log``: retention from the command line.

Only wiring, like ``_cli.py`` (which registers these commands): the work is
in :mod:`services.audit._retention`, loaded inside each command so that
``oix --help`` stays fast.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from services.audit._settings import load_audit_settings
from services.bus import ConfigError, Exchange, OixError, Settings
from services.host import err, fail, out, run, settings_or_exit

if TYPE_CHECKING:
    from services.audit._retention import PurgeOutcome, Retention

EXIT_ERROR = 2
"""Could not run, or the request was refused (the line says why)."""
T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="Store URL [env: OIX_AUDIT_DATABASE_URL; default SQLite in OIX_DATA_DIR]."),
]
By = Annotated[
    str | None,
    typer.Option("--by", help="Who does this, as the retention log records it [default: $USER]."),
]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


def _url(database_url: str | None) -> tuple[Settings, str]:
    settings = settings_or_exit()
    try:
        audit = load_audit_settings(**({"database_url": database_url} if database_url else {}))
        return settings, audit.resolved_url(settings)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_ERROR) from None


def _with_retention(url: str, work: Callable[[Retention], Coroutine[Any, Any, T]]) -> T:
    # SQLAlchemy: not for `oix --help`.
    from services.audit._retention import Retention  # noqa: PLC0415  # fast --help
    from services.audit._store import AuditStore  # noqa: PLC0415  # fast --help: SQLAlchemy

    async def main() -> T:
        store = await AuditStore.open(url)
        try:
            return await work(Retention(store))
        finally:
            await store.close()

    return run(main, EXIT_ERROR)


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option}: {text!r} is not an ISO 8601 time (2026-03-01T12:00:00Z)", EXIT_ERROR
        ) from None


def _print_outcome(outcome: PurgeOutcome, verb: str) -> None:
    for item in outcome.ranges:
        offsets = (
            str(item["first_offset"])
            if item["first_offset"] == item["last_offset"]
            else f"{item['first_offset']}..{item['last_offset']}"
        )
        epoch = f" epoch {item['epoch']}" if item["epoch"] else ""
        out.print(
            f"  {item['topic']}[{item['partition']}]{epoch} offset {offsets}: "
            f"{item['count']} record(s)",
            highlight=False,
        )
    if outcome.dry_run:
        out.print(
            f"would {verb} {outcome.count} record(s); nothing was changed (dry run)",
            highlight=False,
        )
    else:
        events = ", ".join(e.event_id for e in outcome.events) or "none"
        out.print(
            f"{verb}d {outcome.count} record(s) (retention event {events}); "
            "digests, coordinates and chain kept",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.held:
        out.print(f"{outcome.held} record(s) past retention kept by a legal hold", highlight=False)
    if outcome.unchained:
        err.print(
            f"{outcome.unchained} record(s) past retention are on chain version 1 and were not "
            "purged: run `oix audit migrate` (it re-chains them) and purge again",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.wal_truncated is False:
        err.print(
            "the SQLite write-ahead log could not be truncated (busy): purged pages may "
            "linger in it until the next checkpoint; run the purge again when idle",
            highlight=False,
            soft_wrap=True,
        )


def purge_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be purged; change nothing.")
    ] = False,
    database_url: DatabaseUrl = None,
    by: By = None,
) -> None:
    """Purge the content of every record past its retention (held records stay).

    A record's retention is its report's retention_days counted from its
    Kafka timestamp (the agreement's default when the report names none).
    The content goes (value, decoded report, decode error); coordinates,
    message id, originator, type, signature status, digests and the hash
    chain stay, and the purge is recorded in the retention log.
    """
    settings, url = _url(database_url)
    try:
        default_days = Exchange.from_settings(settings).agreement.defaults.retention_days
    except OixError as exc:
        raise fail(str(exc), EXIT_ERROR) from None
    outcome = _with_retention(
        url, lambda r: r.purge(default_days, actor=_who(by) + " (oix audit purge)", dry_run=dry_run)
    )
    _print_outcome(outcome, "purge")


def erase_command(
    *,
    message_id: Annotated[str, typer.Argument(help="The message id to erase.")],
    requested_by: Annotated[
        str, typer.Option(help="The party asking: must be the message's proven originator.")
    ],
    request_ref: Annotated[
        str, typer.Option(help="The reference of the originator's written request.")
    ],
    reason: Annotated[str, typer.Option(help="Why, e.g. 'a wrong person was named'.")],
    database_url: DatabaseUrl = None,
    by: By = None,
) -> None:
    """Erase one report's content now, before its retention ends, on its originator's request.

    Refused unless --requested-by is the report's proven originator (the
    signed originator of a valid record), and while a legal hold covers it.
    """
    _, url = _url(database_url)
    outcome = _with_retention(
        url,
        lambda r: r.erase(
            message_id,
            requested_by=requested_by,
            request_ref=request_ref,
            reason=reason,
            actor=_who(by),
        ),
    )
    _print_outcome(outcome, "erase")


def hold_command(
    *,
    reason: Annotated[str, typer.Option(help="Why (case, court order): recorded.")],
    message_id: Annotated[str | None, typer.Option(help="Hold this message id.")] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Hold every report on this event id (the Kafka key).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Hold a Kafka time range from (ISO 8601, included).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="... until (ISO 8601, excluded).")] = None,
    database_url: DatabaseUrl = None,
    by: By = None,
) -> None:
    """Put a legal hold on a message id, an event id or a time range: never purged while held."""
    _, url = _url(database_url)
    start, end = _moment(since, "--since"), _moment(until, "--until")
    hold = _with_retention(
        url,
        lambda r: r.hold(
            reason=reason,
            actor=_who(by),
            message_id=message_id,
            event_id=event_id,
            since=start,
            until=end,
        ),
    )
    out.print(f"hold {hold.hold_id} placed on {hold.scope}", highlight=False)


def release_hold_command(
    hold_id: Annotated[str, typer.Argument(help="The hold (`oix audit holds`).")],
    reason: Annotated[str, typer.Option(help="Why it is lifted: recorded.")],
    database_url: DatabaseUrl = None,
    by: By = None,
) -> None:
    """Lift a legal hold: the next purge takes what it kept past retention."""
    _, url = _url(database_url)
    hold = _with_retention(url, lambda r: r.release(hold_id, reason=reason, actor=_who(by)))
    out.print(f"hold {hold.hold_id} on {hold.scope} released", highlight=False)


def holds_command(
    all_holds: Annotated[
        bool, typer.Option("--all", help="Also the holds released already.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List the legal holds standing (or every hold, with --all)."""
    _, url = _url(database_url)
    found = _with_retention(url, lambda r: r.holds(active_only=not all_holds))
    for hold in found:
        state = (
            f"released {hold.released_at.isoformat(timespec='seconds')} by {hold.released_by}"
            if hold.released_at is not None
            else "standing"
        )
        out.print(
            f"{hold.hold_id}  {hold.scope}  placed "
            f"{hold.placed_at.isoformat(timespec='seconds')} by {hold.placed_by}: "
            f"{hold.reason}  [{state}]",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"{len(found)} hold(s)", highlight=False)


def retention_log_command(database_url: DatabaseUrl = None) -> None:
    """Every purge, erasure, hold and release, oldest first (the chained retention log)."""
    _, url = _url(database_url)
    found = _with_retention(url, lambda r: r.events())
    for event in found:
        out.print(
            f"{event.seq} {event.event_id} {event.describe()}", highlight=False, soft_wrap=True
        )
    out.print(f"{len(found)} retention event(s)", highlight=False)


def register(commands: typer.Typer) -> None:
    """Add the retention commands to ``oix audit``."""
    commands.command("purge")(purge_command)
    commands.command("erase")(erase_command)
    commands.command("hold")(hold_command)
    commands.command("release-hold")(release_hold_command)
    commands.command("holds")(holds_command)
    commands.command("retention-log")(retention_log_command)
