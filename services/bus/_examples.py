"""The example reports in ``deploy/examples``: realistic situations, valid against the schemas.

The demo publishes them again and again; :func:`freshen` gives each round new
message ids (links kept consistent) and moves its timestamps to the present.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.bus._errors import ReportValidationError
from services.bus._header import now
from services.bus._reports import Report
from services.bus._settings import repo_root
from services.bus._validation import parse_report


@dataclass(frozen=True, slots=True)
class Example:
    """One example report and the file it came from."""

    name: str
    report: Report


def examples_dir() -> Path:
    """``deploy/examples`` of the checkout (or the packaged copy)."""
    return repo_root() / "deploy" / "examples"


def load_examples(directory: Path | None = None) -> list[Example]:
    """Every example, in file name order."""
    examples = []
    for path in sorted((directory or examples_dir()).glob("*.json")):
        try:
            report = parse_report(path.read_bytes())
        except ReportValidationError as exc:
            raise ReportValidationError(f"{path.name} ({exc.report_type})", exc.issues) from exc
        examples.append(Example(path.stem, report))
    return examples


def _rewrite(value: Any, ids: dict[uuid.UUID, uuid.UUID], shift: timedelta) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, ids, shift) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, ids, shift) for v in value]
    if isinstance(value, uuid.UUID):
        return ids.get(value, value)
    if isinstance(value, datetime):
        return value + shift
    return value


def freshen(reports: list[Report], at: datetime | None = None) -> list[Report]:
    """Copies with new ids (links, events and references remapped) and times moved to ``at``."""
    latest = max(r.header.created_at for r in reports)
    shift = (at or now()) - latest
    ids = {r.header.message_id: uuid.uuid4() for r in reports}
    return [type(r).model_validate(_rewrite(r.model_dump(), ids, shift)) for r in reports]
