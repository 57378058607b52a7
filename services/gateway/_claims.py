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
        self._time_fields: dict[type[Report], tuple[str, ...]] = {}

    def check(self, report: Report, now: datetime | None = None) -> None:
        """Refuse ``report`` if a time or section it claims is out of bounds.

        Raises:
            ReportRejectedError: naming every such field and the bound it breaks.
        """
        issues = self._time_issues(report, now or datetime.now(UTC))
        if self._sections:
            issues.extend(self._section_issues(report))
        if issues:
            raise ReportRejectedError(
                f"the {report.report_type} claims what it may not: {len(issues)} problem(s)",
                issues,
            )

    def _time_issues(self, report: Report, now: datetime) -> list[FieldIssue]:
        window = self._window
        oldest = now - window.past
        issues: list[FieldIssue] = []
        times = [("header.created_at", "created_at", report.header.created_at)]
        times.extend((name, name, getattr(report, name)) for name in self._times_of(report))
        for path, name, value in times:
            if not isinstance(value, datetime):
                continue
            latest = now + (window.skew if name in HAPPENED else window.ahead)
            if value < oldest:
                issues.append(
                    FieldIssue(
                        path,
                        f"{value.isoformat()} is more than {_span(window.past)} ago; the "
                        f"gateway takes times from {_stamp(oldest)} on",
                    ),
                )
            elif value > latest:
                bound = "in the future" if name in HAPPENED else "ahead"
                allowed = window.skew if name in HAPPENED else window.ahead
                issues.append(
                    FieldIssue(
                        path,
                        f"{value.isoformat()} is more than {_span(allowed)} {bound}; the "
                        f"gateway takes times up to {_stamp(latest)}",
                    ),
                )
        return issues

    def _times_of(self, report: Report) -> tuple[str, ...]:
        """The report's own (not the header's) time fields, found once per report type."""
        kind = type(report)
        names = self._time_fields.get(kind)
        if names is None:
            names = tuple(
                name
                for name, field in kind.model_fields.items()
                if name != "header" and _is_time(field.annotation)
            )
            self._time_fields[kind] = names
        return names

    def _section_issues(self, report: Report) -> list[FieldIssue]:
        issues: list[FieldIssue] = []
        originator = report.header.originator
        for name in type(report).model_fields:
            value = getattr(report, name)
            if name in _ANY_PARTY and isinstance(value, list):
                for index, section in enumerate(value):
                    if isinstance(section, str) and section not in self._all_sections:
                        issues.append(
                            FieldIssue(
                                f"{name}[{index}]",
                                f"{section} is no border section of the agreement",
                            ),
                        )
                continue
            owner_field = _OWNER_FIELD.get(name)
            owner = getattr(report, owner_field) if owner_field else originator
            for path, section in _located(name, value):
                issue = self._section_issue(path, section, owner)
                if issue is not None:
                    issues.append(issue)
        return issues

    def _section_issue(self, path: str, section: str, owner: str) -> FieldIssue | None:
        own = self._sections.get(owner)
        if own is None or section in own:
            return None
        listed = ", ".join(sorted(own))
        return FieldIssue(
            path, f"{section} is not a border section of {owner} in the agreement ({listed})"
        )


def claim_check(agreement: Agreement, gateway: GatewaySettings) -> ClaimCheck:
    """The claim check a gateway with these settings applies."""
    return ClaimCheck(
        agreement,
        TimeWindow(
            past=gateway.max_time_past, ahead=gateway.max_time_ahead, skew=gateway.max_clock_skew
        ),
    )


def _located(name: str, value: Any) -> list[tuple[str, str]]:
    """(path, section) of a field holding a location, or a list of things with sections."""
    if isinstance(value, BaseModel):
        section = getattr(value, "border_section", None)
        return [(f"{name}.border_section", section)] if isinstance(section, str) else []
    if isinstance(value, list):
        return [
            (f"{name}[{index}].border_section", item.border_section)
            for index, item in enumerate(value)
            if isinstance(getattr(item, "border_section", None), str)
        ]
    return []


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
