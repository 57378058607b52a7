"""From what a client sent to a validated report: JSON, the type, the originator, the defaults.

Pure logic, no I/O: the HTTP body and an SDK call both end up here, so a
report is checked the same way whichever door it came through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from services.bus import (
    REPORT_MODELS,
    Agreement,
    FieldIssue,
    Report,
    ReportValidationError,
    parse_report,
)
from services.gateway._errors import (
    ForbiddenError,
    MalformedReportError,
    ReportRejectedError,
    clip,
)

FILLED_BY_GATEWAY = ("message_id", "created_at", "originator")
"""Header fields a client may leave out because the gateway always knows them."""
DEFAULTED_BY_AGREEMENT = ("classification", "tlp", "handling", "retention_days", "priority")
"""Header fields a client may leave out; the agreement's ``defaults`` fill them."""
_KNOWN = ", ".join(sorted(REPORT_MODELS))
MAX_DEPTH = 254
"""How deeply a report's JSON may nest: as deep as orjson writes (a report needs about 5)."""
_PATH_STEPS = 6


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``.

    Raises:
        MalformedReportError: the body is not UTF-8 JSON (with the position of the error).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedReportError(f"the body is not valid JSON: {exc}") from None


def decode_ndjson(body: bytes) -> list[Any]:
    """One JSON value (or the :class:`MalformedReportError` of its line) per non-blank line."""
    items: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            items.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            items.append(MalformedReportError(f"line {number} is not valid JSON: {exc}"))
    return items


def fingerprint_of(data: Mapping[str, Any] | Report) -> str:
    """What identifies a request for idempotency: the SHA-256 of its canonical JSON.

    Taken from what the client sent, before the gateway filled anything in, so
    a retry that again leaves ``created_at`` out is still the same request.
    """
    if isinstance(data, Report):
        raw = data.model_dump_json().encode()
    else:
        try:
            raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            # orjson writes at most 255 levels but reads 1024: a report nested
            # deeper than it can write is refused as malformed, never a 500.
            raise not_writable(data, exc) from None
    return hashlib.sha256(raw).hexdigest()


def not_writable(data: Any, error: Exception) -> MalformedReportError:
    """The refusal of a value orjson cannot write: too deep (naming the field), or why not.

    (An SDK caller may pass what JSON cannot hold, such as an integer past 64 bits.)
    """
    path = deep_path(data, MAX_DEPTH)
    if path is None:
        return MalformedReportError(f"the report cannot be written as JSON: {error}")
    return MalformedReportError(
        f"the report is nested more than {MAX_DEPTH} levels deep; no report needs that",
        [FieldIssue(path or "(the report)", f"nested more than {MAX_DEPTH} levels deep")],
    )


def deep_path(data: Any, limit: int) -> str | None:
    """The path of the first value nested more than ``limit`` levels deep, or None.

    Iterative, so no depth of input can exhaust the interpreter's stack; the
    path is cut after a few steps (it names the field, not all of its levels).
    """
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(data, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children: Iterable[tuple[str, Any]] = ((f".{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            children = ((f"[{i}]", v) for i, v in enumerate(value))
        else:
            continue
        if depth >= limit:
            return _path_text(path)
        for step, child in children:
            stack.append((child, depth + 1, (*path, step) if len(path) < _PATH_STEPS else path))
    return None


def _path_text(path: tuple[str, ...]) -> str:
    text = "".join(path).lstrip(".")
    return clip(f"{text}…" if len(path) >= _PATH_STEPS else text, 200)


def report_type_of(data: Any) -> str:
    """The ``type`` of a would-be report.

    Raises:
        MalformedReportError: not a JSON object, or no known ``type``.
    """
    if not isinstance(data, dict):
        raise MalformedReportError(
            f"a report is a JSON object with a 'type' field, not {_json_kind(data)}",
        )
    report_type = data.get("type")
    if report_type is None:
        raise MalformedReportError(
            "the report has no 'type' field",
            [FieldIssue("type", f"missing; one of: {_KNOWN}")],
        )
    if not isinstance(report_type, str) or report_type not in REPORT_MODELS:
        # Quoted clipped, and only a string: the repr of a deeply nested value
        # could exhaust the interpreter's recursion limit.
        named = quoted(report_type)
        raise MalformedReportError(
            f"unknown report type {named}",
            [FieldIssue("type", f"unknown report type {named}; one of: {_KNOWN}")],
        )
    return report_type


def quoted(value: object, limit: int = 100) -> str:
    """A client-supplied value as an answer may quote it: a clipped string, or its JSON kind."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    return _json_kind(value)


def _json_kind(value: Any) -> str:
    kinds = {
        list: "an array",
        dict: "an object",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }
    return kinds.get(type(value), "a number")


def check_originator(claimed: object, agency: str) -> None:
    """Refuse a report that claims another originator than the gateway's agency.

    Raises:
        ForbiddenError: ``claimed`` is another agency; the gateway never signs for it.
    """
    if claimed is not None and claimed != agency:
        raise ForbiddenError(
            f"header.originator is {quoted(claimed)}, but this gateway publishes for {agency} only "
            "and never signs for another agency",
            [FieldIssue("header.originator", f"must be {agency} (or left out)")],
        )


def fill_header(
    data: dict[str, Any],
    agency: str,
    agreement: Agreement,
    releasable_to: list[str] | None = None,
) -> dict[str, Any]:
    """A copy of ``data`` whose header has what the client left out (or sent as null).

    The originator is the gateway's agency; classification, TLP, handling,
    retention and priority come from the agreement's defaults; ``releasable_to``
    is given for a cancellation (the original's). A header that is not an
    object is left for validation to report.
    """
    header = data.get("header", {})
    if not isinstance(header, dict):
        return data
    filled = dict(header)
    filled.setdefault("originator", agency)
    for name in DEFAULTED_BY_AGREEMENT:
        # null counts as left out: many JSON encoders write every optional field,
        # and a retention or handling rule must not vanish that way.
        if filled.get(name) is None:
            value = getattr(agreement.defaults, name)
            filled[name] = list(value) if isinstance(value, list) else value
    if releasable_to is not None:
        filled.setdefault("releasable_to", releasable_to)
    return {**data, "header": filled}


def validate(data: dict[str, Any]) -> Report:
    """The report model of ``data``.

    Raises:
        ReportRejectedError: naming every failing field and the reason.
    """
    try:
        return parse_report(data)
    except ReportValidationError as exc:
        raise ReportRejectedError(
            f"the {exc.report_type} is not valid: {len(exc.issues)} problem(s)", exc.issues
        ) from None


def with_defaults(report: Report, agreement: Agreement) -> Report:
    """``report`` with the agreement's defaults in header fields its author did not set."""
    missing = {
        name: getattr(agreement.defaults, name)
        for name in DEFAULTED_BY_AGREEMENT
        if name not in report.header.model_fields_set or getattr(report.header, name) is None
    }
    if not missing:
        return report
    # The defaults were validated with the agreement, so no new validation is needed.
    return report.model_copy(update={"header": report.header.model_copy(update=missing)})
