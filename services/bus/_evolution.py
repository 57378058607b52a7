"""Schema evolution rules: a change must be backward and forward compatible with every release.

The Avro reference implementation's reader/writer checker (the ``avro``
package) does the work; this module turns its locations into field paths a
person can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from services.bus._errors import SchemaCompatibilityError
from services.bus._schemas import (
    Fingerprint,
    ReportSchema,
    dump_schema,
    load_current,
    load_released,
    released_path,
)

_RULES = {
    "name_mismatch": "a named type was renamed",
    "fixed_size_mismatch": "a fixed type changed size",
    "missing_enum_symbols": "an enum lost symbols and the reader has no default symbol",
    "reader_field_missing_default_value": "a field was added (or removed) without a default",
    "type_mismatch": "a field changed to a type that cannot be promoted",
    "missing_union_branch": "a union lost a branch the other side may write",
}


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason why a schema cannot read, or be read by, a released version."""

    report_type: str
    direction: str
    """``backward`` (new reads old) or ``forward`` (old reads new)."""
    released_fingerprint: str
    field_path: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.report_type}.{self.field_path}: {self.rule} ({self.detail}); "
            f"breaks {self.direction} compatibility with released {self.released_fingerprint}"
        )


def _field_path(schema: dict[str, Any], location: str) -> str:
    """Turn a checker location such as ``/fields/0/type/fields/7/type`` into ``header.tlp``."""
    names: list[str] = []
    node: Any = schema
    parts = [p for p in location.split("/") if p]
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "fields" and i + 1 < len(parts) and isinstance(node, dict):
            node = node["fields"][int(parts[i + 1])]
            names.append(node["name"])
            i += 2
            continue
        if part in {"type", "items", "values"} and isinstance(node, dict) and part in node:
            node = node[part]
        elif part.isdigit() and isinstance(node, list):
            node = node[int(part)]
        i += 1
    return ".".join(names) or "(record)"


def _check(
    reader: ReportSchema,
    writer: ReportSchema,
    direction: str,
    released: ReportSchema,
) -> list[Incompatibility]:
    reader_avro = avro.schema.parse(json.dumps(reader.schema))
    writer_avro = avro.schema.parse(json.dumps(writer.schema))
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader_avro, writer_avro)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    rules = sorted({_RULES.get(k.value, k.value) for k in result.incompatibilities})
    # The checker merges its findings, so with several locations we cannot tell
    # which rule belongs to which; we then name every rule on every location.
    rule = " / ".join(rules) or "incompatible"
    detail = "; ".join(sorted(result.messages))
    # The checker seeds every result with the root location "/"; keep it only alone.
    locations = sorted(result.locations - {"/"}) or ["/"]
    return [
        Incompatibility(
            report_type=reader.name,
            direction=direction,
            released_fingerprint=released.fingerprint_hex,
            field_path=_field_path(reader.schema, location),
            rule=rule,
            detail=detail,
        )
        for location in locations
    ]


def check_compatibility(
    current: dict[str, ReportSchema],
    released: dict[Fingerprint, ReportSchema],
) -> list[Incompatibility]:
    """Every way the current schemas break a released version; empty when the change is safe."""
    problems: list[Incompatibility] = []
    for old in released.values():
        new = current.get(old.name)
        if new is None:
            problems.append(
                Incompatibility(
                    old.name,
                    "backward",
                    old.fingerprint_hex,
                    "(record)",
                    "a released report type was removed",
                    "its messages could no longer be read",
                ),
            )
            continue
        if new.fingerprint == old.fingerprint:
            continue
        problems += _check(new, old, "backward", old)
        problems += _check(old, new, "forward", old)
    return problems


def release_schemas(schemas_dir: Path) -> list[ReportSchema]:
    """Record every current schema that is not released yet; returns what was written.

    Raises:
        SchemaCompatibilityError: a current schema breaks a released version.
    """
    current = load_current(schemas_dir)
    released_dir = schemas_dir / "released"
    released = load_released(released_dir)
    problems = check_compatibility(current, released)
    if problems:
        raise SchemaCompatibilityError(
            "refusing to release:\n  " + "\n  ".join(str(p) for p in problems),
        )
    written = []
    for schema in current.values():
        if schema.fingerprint in released:
            continue
        path = released_path(released_dir, schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_schema(schema), encoding="utf-8")
        written.append(schema)
    return written
