"""What a valid report may still not claim: times far from now, border sections not its own.

The models check a report on its own (types, ranges, order of its times); the
gateway also checks it against the world: its times lie within a window
around now (no incident detected in 1900 or in 2199), and the border sections
it names are the ones the agreement lists for the party concerned. Both are
422 naming every failing field.

Sections: where a report happened or what it asks for (an incident's or a
request's ``location``, a situation report's ``sections``) is on its
originator's border; a deployment's ``deployed_to`` is on its host agency's;
an early warning's ``affected_sections`` may be any party's. A party for which
the agreement lists no sections is not checked.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel

from services.bus import Agreement, FieldIssue, Report
from services.gateway._errors import ReportRejectedError
from services.gateway._settings import GatewaySettings

HAPPENED = frozenset({"created_at", "detected_at", "occurred_at"})
"""Times of something that already happened: never later than now (and the clock skew)."""
_OWNER_FIELD = {"deployed_to": "host_agency"}
"""Locations on another party's border: the field naming that party."""
_ANY_PARTY = frozenset({"affected_sections"})
"""Lists of sections that may be any party's."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far from now a report's times may lie."""

    past: timedelta
    """Any time: at most this long ago."""
    ahead: timedelta
    """A planned or validity time (needed_until, period_end, due_at …): at most this far ahead."""
    skew: timedelta
    """A time of something that happened (created_at, detected_at, occurred_at): at most
    this far ahead (the client's clock may run a little fast)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where one report type keeps its times and sections, found once from its model."""

    times: tuple[str, ...]
    located: tuple[str, ...]
    """Fields holding one thing with a ``border_section`` (a location)."""
    listed: tuple[str, ...]
    """Fields holding a list of things with a ``border_section``."""
    any_party: tuple[str, ...]
    """Fields holding sections that may be any party's."""


class ClaimCheck:
    """Checks one agency's reports for times and border sections they may claim."""

    def __init__(self, agreement: Agreement, window: TimeWindow) -> None:
        self._window = window
        self._sections = {
            code: frozenset(party.border_sections)
            for code, party in agreement.parties.items()
            if party.border_sections
        }
        self._all_sections = frozenset().union(*self._sections.values())
        self._plans: dict[type[Report], _Plan] = {}

    def check(self, report: Report, now: datetime | None = None) -> None:
        """Refuse ``report`` if a time or section it claims is out of bounds.

        Raises:
            ReportRejectedError: naming every such field and the bound it breaks.
        """
        plan = self._plan(type(report))
        issues = self._time_issues(report, plan, now or datetime.now(UTC))
        if self._sections:
            issues.extend(self._section_issues(report, plan))
        if issues:
            raise ReportRejectedError(
                f"the {report.report_type} claims what it may not: {len(issues)} problem(s)",
                issues,
            )

    def _time_issues(self, report: Report, plan: _Plan, now: datetime) -> list[FieldIssue]:
        window = self._window
        oldest, happened, planned = now - window.past, now + window.skew, now + window.ahead
        issues: list[FieldIssue] = []
        created = report.header.created_at
        if not oldest <= created <= happened:
            issues.append(self._time_issue("header.created_at", created, now))
        for name in plan.times:
            value = getattr(report, name)
            if value is None:
                continue
            if not oldest <= value <= (happened if name in HAPPENED else planned):
                issues.append(self._time_issue(name, value, now))
        return issues

    def _time_issue(self, path: str, value: datetime, now: datetime) -> FieldIssue:
        window = self._window
        oldest = now - window.past
        if value < oldest:
            return FieldIssue(
                path,
                f"{value.isoformat()} is more than {_span(window.past)} ago; the gateway "
                f"takes times from {_stamp(oldest)} on",
            )
        happened = path.rpartition(".")[2] in HAPPENED
        allowed = window.skew if happened else window.ahead
        return FieldIssue(
            path,
            f"{value.isoformat()} is more than {_span(allowed)} "
            f"{'in the future' if happened else 'ahead'}; the gateway takes times up to "
            f"{_stamp(now + allowed)}",
        )

    def _plan(self, kind: type[Report]) -> _Plan:
        plan = self._plans.get(kind)
        if plan is None:
            fields = [(n, f.annotation) for n, f in kind.model_fields.items() if n != "header"]
            plan = _Plan(
                times=tuple(n for n, a in fields if _is_time(a)),
                located=tuple(n for n, a in fields if _has_section(a)),
                listed=tuple(
                    n
                    for n, a in fields
                    if typing.get_origin(a) is list and any(map(_has_section, typing.get_args(a)))
                ),
                any_party=tuple(n for n, _ in fields if n in _ANY_PARTY),
            )
            self._plans[kind] = plan
        return plan

    def _times_of(self, report: Report) -> tuple[str, ...]:
        """The report's own (not the header's) time fields."""
        return self._plan(type(report)).times

    def _section_issues(self, report: Report, plan: _Plan) -> list[FieldIssue]:
        issues: list[FieldIssue] = []
        originator = report.header.originator
        for name in plan.located:
            owner_field = _OWNER_FIELD.get(name)
            owner = getattr(report, owner_field) if owner_field else originator
            located = getattr(report, name)
            if located is not None:
                path = f"{name}.border_section"
                self._check_section(issues, path, located.border_section, owner)
        for name in plan.listed:
            for index, item in enumerate(getattr(report, name)):
                path = f"{name}[{index}].border_section"
                self._check_section(issues, path, item.border_section, originator)
        for name in plan.any_party:
            for index, section in enumerate(getattr(report, name)):
                if section not in self._all_sections:
                    issues.append(
                        FieldIssue(
                            f"{name}[{index}]", f"{section} is no border section of the agreement"
                        )
                    )
        return issues

    def _check_section(self, issues: list[FieldIssue], path: str, section: str, owner: str) -> None:
        own = self._sections.get(owner)
        if own is None or section in own:
            return
        listed = ", ".join(sorted(own))
        issues.append(
            FieldIssue(
                path, f"{section} is not a border section of {owner} in the agreement ({listed})"
            )
        )


def claim_check(agreement: Agreement, gateway: GatewaySettings) -> ClaimCheck:
    """The claim check a gateway with these settings applies."""
    return ClaimCheck(
        agreement,
        TimeWindow(
            past=gateway.max_time_past, ahead=gateway.max_time_ahead, skew=gateway.max_clock_skew
        ),
    )


def _has_section(annotation: Any) -> bool:
    """A model with a ``border_section`` (a location), or an optional one."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel) and "border_section" in annotation.model_fields
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_has_section(arg) for arg in typing.get_args(annotation))
    return False


def _is_time(annotation: Any) -> bool:
    if isinstance(annotation, type):
        # pydantic's AwareDatetime stands for a datetime without being a subclass.
        return issubclass(annotation, datetime) or annotation is AwareDatetime
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return any(_is_time(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return False


def _span(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    if delta >= timedelta(hours=2):
        return f"{delta.total_seconds() / 3600:g} hours"
    return f"{delta.total_seconds() / 60:g} minutes"


def _stamp(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()
