"""The schema contract: canonical form and fingerprints as partners compute them, and history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from services.bus import (
    Codec,
    SchemaError,
    SchemaRegistry,
    check_compatibility,
    load_current,
    load_released,
    release_schemas,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


def _without_logical_types(node: Any) -> Any:
    # logicalType is not part of the Parsing Canonical Form ([STRIP] in the
    # spec; Java's SchemaNormalization writes such a primitive as plain
    # "string"). The avro package 1.12 keeps {"type":"string"} instead, so we
    # hand it the schema without the attribute, which by the spec cannot
    # change any correct implementation's canonical form.
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@pytest.mark.parametrize("name", sorted(load_current(SCHEMAS)))
def test_fingerprint_agrees_with_the_avro_reference_package(name: str) -> None:
    ours = load_current(SCHEMAS)[name]
    theirs = avro.schema.parse(json.dumps(_without_logical_types(ours.schema)))
    assert ours.canonical_form == theirs.canonical_form
    assert ours.fingerprint_hex == theirs.fingerprint("CRC-64-AVRO").hex()


def test_shared_types_are_inlined_at_first_use_and_named_afterwards() -> None:
    canonical = load_current(SCHEMAS)["AssistanceRequest"].canonical_form
    definition = '"name":"eu.oix.exchange.Speciality","type":"enum"'
    assert canonical.count(definition) == 1
    assert (
        '"eu.oix.exchange.Location"' not in canonical.split('"name":"eu.oix.exchange.Location"')[0]
    )
    assert '"type":"MessageHeader"' not in canonical


def test_every_current_schema_is_released() -> None:
    registry = SchemaRegistry.from_dir(SCHEMAS)
    assert registry.unreleased() == []


def test_codec_refuses_unreleased_schemas(tmp_path: Path) -> None:
    copy = _copy_schemas(tmp_path)
    shutil.rmtree(copy / "released" / "Cancellation")
    with pytest.raises(SchemaError, match=r"Cancellation \([0-9a-f]{16}\).*oix schemas release"):
        Codec(SchemaRegistry.from_dir(copy))


def test_an_altered_released_schema_is_detected(tmp_path: Path) -> None:
    copy = _copy_schemas(tmp_path)
    path = next((copy / "released" / "Acknowledgement").glob("*.avsc"))
    schema = json.loads(path.read_text())
    schema["fields"][-1]["name"] = "remark"
    path.write_text(json.dumps(schema))
    with pytest.raises(SchemaError, match="immutable"):
        load_released(copy / "released")


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def _edit(schemas: Path, file: str, change: Any) -> None:
    path = schemas / file
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def test_compatible_evolution_is_released_and_old_messages_still_decode(tmp_path: Path) -> None:
    from services.bus import parse_report

    schemas = _copy_schemas(tmp_path)
    old_codec = Codec(SchemaRegistry.from_dir(schemas))
    example = REPO / "deploy" / "examples" / "02-lv-incident-ladders.json"
    report = parse_report(example.read_bytes())
    old_value = old_codec.encode(report)

    _edit(
        schemas,
        "reports/IncidentReport.avsc",
        lambda s: s["fields"].append(
            {"name": "weather", "type": ["null", "string"], "default": None},
        ),
    )
    _edit(schemas, "common/MeansOfCrossing.avsc", lambda s: s["symbols"].insert(-1, "BALLOON"))
    assert check_compatibility(load_current(schemas), load_released(schemas / "released")) == []
    written = release_schemas(schemas)
    assert [s.name for s in written] == ["IncidentReport"]

    # The new reader resolves the old writer schema: the added field takes its default.
    new_registry = SchemaRegistry(load_current(schemas), load_released(schemas / "released"))
    decoded = Codec.__new__(Codec)
    Codec.__init__(decoded, new_registry)
    result = decoded.decode(old_value)
    assert result.record["weather"] is None
    assert result.record["persons"]["total"] == report.persons.total
    assert result.writer_fingerprint != new_registry.current["IncidentReport"].fingerprint


def test_an_unknown_enum_symbol_resolves_to_the_readers_default(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    old = load_current(schemas)["IncidentReport"]
    _edit(schemas, "common/MeansOfCrossing.avsc", lambda s: s["symbols"].insert(-1, "BALLOON"))
    new = load_current(schemas)["IncidentReport"]
    from io import BytesIO

    from fastavro import schemaless_reader, schemaless_writer

    from services.bus import parse_report

    record = parse_report(
        (REPO / "deploy" / "examples" / "02-lv-incident-ladders.json").read_bytes(),
    ).model_dump()
    record["means"] = ["BALLOON"]
    out = BytesIO()
    schemaless_writer(out, new.parsed, record)
    out.seek(0)
    old_reader_view = schemaless_reader(out, new.parsed, old.parsed)
    assert old_reader_view["means"] == ["OTHER"]


@pytest.mark.parametrize(
    ("file", "change", "field", "rule"),
    [
        (
            "reports/IncidentReport.avsc",
            lambda s: s["fields"].append({"name": "sector_code", "type": "string"}),
            "sector_code",
            "without a default",
        ),
        (
            "common/MessageHeader.avsc",
            lambda s: next(f for f in s["fields"] if f["name"] == "event_version").update(
                type="string", default="1"
            ),
            "header.event_version",
            "cannot be promoted",
        ),
        (
            "common/TlpMarking.avsc",
            lambda s: (s["symbols"].remove("CLEAR"), s.pop("default")),
            "header.tlp",
            "enum lost symbols",
        ),
    ],
)
def test_a_breaking_change_is_refused_naming_the_field_and_rule(
    tmp_path: Path, file: str, change: Any, field: str, rule: str
) -> None:
    schemas = _copy_schemas(tmp_path)
    _edit(schemas, file, change)
    problems = check_compatibility(load_current(schemas), load_released(schemas / "released"))
    assert problems, "the check must refuse this change"
    assert any(p.field_path == field and rule in p.rule for p in problems), [
        str(p) for p in problems
    ]
    with pytest.raises(SchemaError, match="refusing to release"):
        release_schemas(schemas)
