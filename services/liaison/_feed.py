"""``oix feed``: the reports released to an agency, one line each, from its liaison service.

The feed reads the liaison API (``GET /v1/reports`` from ``--since``, then
the live stream ``GET /v1/stream``), never the bus: what an officer sees in
the terminal is what the service shows, releasability, trust and handling
already applied. It finds the service and a token in ``--url``/``--token``
(``OIX_LIAISON_URL``/``OIX_LIAISON_TOKEN``), or signs in with ``--user``, or
takes those ``oix up`` wrote (``<data_dir>/liaison/up.json``).
"""

from __future__ import annotations

import asyncio
import getpass
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse
from rich.console import Console
from rich.markup import escape

from services.bus import ConfigError, OixError, Settings
from services.liaison._settings import liaison_dir

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_IMPACT_STYLE = {"VERY_HIGH": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "green"}
_PRINTED_KINDS = {"report", "withdrawn", "acknowledgement"}


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """What ``oix feed`` was asked."""

    agency: str
    partners: str | None
    report_type: str | None
    since: str
    follow: bool
    json_lines: bool
    url: str | None
    token: str | None
    user: str | None


def since_time(text: str, now: datetime) -> datetime:
    """``30m``, ``2h``, ``1d`` ago, or an ISO 8601 time.

    Raises:
        ConfigError: neither.
    """
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: give 30m, 2h, 1d or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _access(settings: Settings, options: FeedOptions) -> tuple[str, str | None]:
    url, token = options.url, options.token
    if url is None or (token is None and options.user is None):
        path = liaison_dir(settings) / "up.json"
        try:
            found = orjson.loads(path.read_bytes()).get(options.agency)
        except (OSError, orjson.JSONDecodeError, AttributeError):
            found = None
        if found is not None:
            url = url or found["url"]
            token = token or found["token"]
    if url is None:
        raise ConfigError(
            f"where is {options.agency}'s liaison service? give --url (OIX_LIAISON_URL), "
            "or run `oix up`"
        )
    return url.rstrip("/"), token


async def _sign_in(http: httpx.AsyncClient, user: str) -> str:
    password = getpass.getpass(f"password of {user}: ")
    response = await http.post("/v1/tokens", json={"name": user, "password": password})
    if response.status_code != 201:  # noqa: PLR2004
        raise ConfigError(f"cannot sign in as {user}: {_problem(response)}")
    token: str = response.json()["token"]
    return token


def _problem(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return f"HTTP {response.status_code}"


class Printer:
    """One line per report: colour on a terminal, or JSON lines."""

    def __init__(self, console: Console, *, json_lines: bool) -> None:
        self.console = console
        self.json_lines = json_lines
        self.seen: set[tuple[str, str]] = set()

    def report(
        self, report: dict[str, Any], kind: str = "report", event: dict[str, Any] | None = None
    ) -> None:
        """Print one report (once, whatever the page or stream it came from)."""
        key = (report["originator"], report["message_id"])
        if key in self.seen:
            return
        self.seen.add(key)
        if self.json_lines:
            self.console.out(orjson.dumps({"kind": kind, **report}).decode(), highlight=False)
            return
        self.console.print(line(report, event), highlight=False, soft_wrap=True)

    def alert(self, alert: dict[str, Any]) -> None:
        """Print an alert (a broker reset, an untrusted record …)."""
        if self.json_lines:
            self.console.out(orjson.dumps({"kind": "alert", **alert}).decode(), highlight=False)
            return
        self.console.print(
            f"[bold magenta]ALERT[/] {escape(alert['at'][:16])} {escape(alert['kind'])}: "
            f"{escape(alert['detail'])}",
            highlight=False,
            soft_wrap=True,
        )


def line(report: dict[str, Any], event: dict[str, Any] | None = None) -> str:
    """The rich-markup line of one report."""
    impact = report.get("impact") or "-"
    style = _IMPACT_STYLE.get(impact, "dim")
    sections = ",".join(report.get("border_sections") or []) or "-"
    tags = []
    if report.get("exercise"):
        tags.append(f"[bold magenta][{report['mode']}][/]")
    if report.get("tlp") in {"RED", "AMBER_STRICT"}:
        tags.append(f"[red][TLP:{report['tlp']}][/]")
    if event is not None and event.get("status") == "withdrawn":
        tags.append("[bold red][WITHDRAWN][/]")
    if report.get("superseded_by"):
        tags.append("[dim][superseded][/]")
    title = escape(report["title"])
    if report["report_type"] == "Cancellation":
        title = f"[red]{title}[/]"
    when = report["created_at"][:16].replace("T", " ") + "Z"
    return (
        f"[dim]{when}[/] [bold]{report['originator']:<8}[/] {report['report_type']:<21} "
        f"[{style}]{impact:<9}[/] {escape(sections):<18} {title} {' '.join(tags)}"
    ).rstrip()


async def run_feed(settings: Settings, options: FeedOptions, console: Console) -> None:
    """Print the reports since ``options.since``; with ``follow``, then the live stream."""
    url, token = _access(settings, options)
    since = since_time(options.since, datetime.now(UTC))
    printer = Printer(console, json_lines=options.json_lines)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0, read=None)) as http:
        if token is None:
            if options.user is None:
                raise ConfigError("no token: give --token (OIX_LIAISON_TOKEN) or --user to sign in")
            token = await _sign_in(http, options.user)
        http.headers["Authorization"] = f"Bearer {token}"
        status = await _get(http, "/v1/status", {})
        start = int(status["last_seq"])
        filters = {
            k: v for k, v in (("partner", options.partners), ("type", options.report_type)) if v
        }
        cursor: str | None = None
        while True:
            params = {**filters, "since": since.isoformat(), "order": "asc", "limit": "500"}
            if cursor is not None:
                params["cursor"] = cursor
            page = await _get(http, "/v1/reports", params)
            for report in page["items"]:
                printer.report(report)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if not options.follow:
            return
        await _follow(http, printer, filters, start)


async def _get(http: httpx.AsyncClient, path: str, params: dict[str, str]) -> Any:
    try:
        response = await http.get(path, params=params)
    except httpx.TransportError as exc:
        raise OixError(f"the liaison service at {http.base_url} does not answer: {exc!r}") from None
    if response.status_code != 200:  # noqa: PLR2004
        raise OixError(f"{path}: {_problem(response)}")
    return response.json()


async def _follow(
    http: httpx.AsyncClient, printer: Printer, filters: dict[str, str], after: int
) -> None:
    last = after
    while True:
        try:
            async with aconnect_sse(
                http, "GET", "/v1/stream", params=filters, headers={"Last-Event-ID": str(last)}
            ) as source:
                if source.response.status_code != 200:  # noqa: PLR2004
                    raise OixError(f"/v1/stream: {_problem(source.response)}")
                async for message in source.aiter_sse():
                    if not message.data:
                        continue
                    data = orjson.loads(message.data)
                    last = int(data["seq"])
                    if message.event in _PRINTED_KINDS and data.get("report"):
                        printer.report(data["report"], message.event, data.get("event"))
                    elif message.event == "alert" and data.get("alert"):
                        printer.alert(data["alert"])
        except httpx.TransportError:
            # The service restarted: reconnect where the stream stopped.
            await asyncio.sleep(1.0)
