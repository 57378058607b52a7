"""Validating reports, with every failing field named by its dotted path."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from services.bus._errors import FieldIssue, ReportValidationError
from services.bus._reports import ANY_REPORT, REPORT_MODELS, Report

_FIELD_PATH = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*|\[\d+\])*")


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("header", "releasable_to", 2)`` as ``header.releasable_to[2]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")):
            continue
        else:
            path += f".{part}" if path else part
    return path


def issues_of(error: ValidationError) -> list[FieldIssue]:
    """Every failing field of a pydantic validation error, with its reason."""
    issues = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if loc and loc[0] in REPORT_MODELS:
            loc = loc[1:]  # the discriminated union's tag is not a field
        path = field_path(loc)
        reason = str(item["msg"]).removeprefix("Value error, ")
        issues.append(issue_from_message(reason, path))
    return issues


def issue_from_message(message: str, within: str = "") -> FieldIssue:
    """A check's message as a field issue, ``within`` the field that was checked.

    Checks across fields (model validators, routing) name the field they fault
    at the start of their message, as a lower-case dotted path:
    ``"header.impact: required for ..."``, ``"harm: ..."``.
    """
    head, sep, rest = message.partition(": ")
    if sep and _FIELD_PATH.fullmatch(head):
        return FieldIssue(f"{within}.{head}" if within else head, rest)
    return FieldIssue(within or "(report)", message)


def parse_report(data: bytes | str | dict[str, Any]) -> Report:
    """Validate a report (JSON text or a dict with a ``type`` field).

    Raises:
        ReportValidationError: naming every failing field and the reason.
    """
    report_type = "report"
    try:
        if isinstance(data, dict):
            report_type = str(data.get("type", report_type))
            return ANY_REPORT.validate_python(data)
        return ANY_REPORT.validate_json(data)
    except ValidationError as exc:
        raise ReportValidationError(report_type, issues_of(exc)) from exc
