"""The schema contract: `.avsc` files, their Parsing Canonical Form, fingerprints and history.

Report schemas reference shared named types (``MessageHeader``, enums, ...) kept in
files of their own. Partners' Avro libraries fingerprint the *self-contained*
schema, with every named type inlined where it is first used, so that is what
we build here before asking fastavro for the canonical form: fastavro would
otherwise leave the shared types as bare names and give another fingerprint.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from services.bus._errors import SchemaError

NAMESPACE = "eu.oix.exchange"
_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"},
)
_NAMED_KINDS = frozenset({"record", "enum", "fixed"})

JsonSchema = Any
Fingerprint = bytes
"""A CRC-64-AVRO schema fingerprint: the 8 bytes exactly as they stand on the wire.

One representation everywhere; shown as ``bytes.hex()`` (16 hex digits). Never
an integer: reading the bytes as a number and packing it again is how a
fingerprint gets written byte-reversed.
"""
FINGERPRINT_SIZE = 8


@dataclass(frozen=True, slots=True)
class ReportSchema:
    """One self-contained report schema, identified by its CRC-64-AVRO fingerprint."""

    name: str
    """Short record name, e.g. ``IncidentReport``; it is the report type."""
    schema: JsonSchema
    """The self-contained schema with docs and defaults, as released."""
    canonical_form: str
    fingerprint: Fingerprint
    """The 8 bytes a single-object value carries after ``C3 01``, in wire order."""
    parsed: Any = field(repr=False, compare=False)

    @property
    def fingerprint_hex(self) -> str:
        """The 8 fingerprint bytes as 16 hex digits, in wire order.

        This is what the Avro reference implementations print, the released
        file's name and the ``oix-schema`` header.
        """
        return self.fingerprint.hex()


def build(schema: JsonSchema) -> ReportSchema:
    """Fingerprint and parse one self-contained schema."""
    canonical = to_parsing_canonical_form(schema)
    # fastavro's hex string spells the 8 little-endian wire bytes in order (as the
    # Avro reference implementations do): read it as bytes, never as a number.
    fingerprint = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    name = str(schema["name"]).rsplit(".", 1)[-1]
    try:
        parsed = fastavro.parse_schema(schema, named_schemas={})
    except Exception as exc:
        raise SchemaError(f"schema {name} does not parse: {exc}") from exc
    return ReportSchema(name, schema, canonical, fingerprint, parsed)


def _read_json(path: Path) -> JsonSchema:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read schema: {exc}") from exc


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _Inliner:
    """Expands references to shared named types, first use inlined, later uses by full name."""

    def __init__(self, library: dict[str, JsonSchema]) -> None:
        self._library = library
        self._defined: set[str] = set()

    def expand(self, node: JsonSchema, namespace: str | None) -> JsonSchema:
        if isinstance(node, str):
            return self._reference(node, namespace)
        if isinstance(node, list):
            return [self.expand(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            raise SchemaError(f"unexpected schema node {node!r}")
        kind = node.get("type")
        if kind in _NAMED_KINDS:
            own_namespace = node.get("namespace", namespace)
            full = _full_name(str(node["name"]), own_namespace)
            self._defined.add(full)
            out = dict(node)
            if kind == "record":
                out["fields"] = [
                    {**f, "type": self.expand(f["type"], _namespace_of(full))}
                    for f in node["fields"]
                ]
            return out
        if kind == "array":
            return {**node, "items": self.expand(node["items"], namespace)}
        if kind == "map":
            return {**node, "values": self.expand(node["values"], namespace)}
        if isinstance(kind, (dict, list)):
            return {**node, "type": self.expand(kind, namespace)}
        return node

    def _reference(self, name: str, namespace: str | None) -> JsonSchema:
        if name in _PRIMITIVES:
            return name
        full = _full_name(name, namespace)
        if full in self._defined:
            return full
        if full not in self._library:
            raise SchemaError(f"unknown named type {full!r}")
        return self.expand(copy.deepcopy(self._library[full]), _namespace_of(full))


def _namespace_of(full_name: str) -> str | None:
    return full_name.rsplit(".", 1)[0] if "." in full_name else None


def load_current(schemas_dir: Path) -> dict[str, ReportSchema]:
    """Load the current schema of every report type from ``schemas_dir``.

    ``common/`` holds shared named types, ``reports/`` one top-level record per
    report type.
    """
    library: dict[str, JsonSchema] = {}
    report_files = sorted((schemas_dir / "reports").glob("*.avsc"))
    if not report_files:
        raise SchemaError(f"{schemas_dir / 'reports'}: no report schemas (*.avsc) found")
    for path in [*sorted((schemas_dir / "common").glob("*.avsc")), *report_files]:
        node = _read_json(path)
        if not isinstance(node, dict) or node.get("type") not in _NAMED_KINDS:
            raise SchemaError(f"{path}: a schema file must hold one named type")
        full = _full_name(str(node["name"]), node.get("namespace"))
        if path.stem != full.rsplit(".", 1)[-1]:
            raise SchemaError(f"{path}: file name must match the type name {full!r}")
        library[full] = node
    current: dict[str, ReportSchema] = {}
    for path in report_files:
        node = _read_json(path)
        expanded = _Inliner(library).expand(node, node.get("namespace"))
        schema = build(expanded)
        current[schema.name] = schema
    return current


def released_path(released_dir: Path, schema: ReportSchema) -> Path:
    """Where a released schema version is kept."""
    return released_dir / schema.name / f"{schema.fingerprint_hex}.avsc"


def load_released(released_dir: Path) -> dict[Fingerprint, ReportSchema]:
    """Load every released schema version by fingerprint, checking that none was altered."""
    released: dict[Fingerprint, ReportSchema] = {}
    for path in sorted(released_dir.glob("*/*.avsc")):
        schema = build(_read_json(path))
        if path.stem != schema.fingerprint_hex or path.parent.name != schema.name:
            raise SchemaError(
                f"{path}: released schemas are immutable, but this file's content has "
                f"fingerprint {schema.fingerprint_hex} and type {schema.name}; restore it "
                "from version control and release the change as a new version"
            )
        released[schema.fingerprint] = schema
    return released


def dump_schema(schema: ReportSchema) -> str:
    """The text a released schema file holds."""
    return json.dumps(schema.schema, indent=2, ensure_ascii=False) + "\n"
