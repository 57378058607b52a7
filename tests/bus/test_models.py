"""The pydantic models mirror the .avsc contract field by field, and validate strictly."""

from __future__ import annotations

import enum
import types
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel
from pydantic_core import PydanticUndefined

from services.bus import REPORT_MODELS, ReportValidationError, load_current, parse_report

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = load_current(REPO / "schemas")
AVRO_PRIMITIVES = {"string": str, "int": int, "long": int, "double": float, "boolean": bool}
# Timestamps must carry a timezone: pydantic's AwareDatetime stands for datetime.
LOGICAL = {"uuid": uuid.UUID, "timestamp-millis": AwareDatetime}


def _strip(annotation: Any) -> tuple[Any, bool]:
    """The core type of an annotation and whether it admits None."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) == 1:
                annotation = args[0]
            else:  # int | float for coordinates
                return tuple(_strip(a)[0] for a in args), optional
        else:
            return annotation, optional


def _compare(avro_type: Any, annotation: Any, path: str, named: dict[str, Any]) -> None:
    core, optional = _strip(annotation)
    if isinstance(avro_type, list):
        assert avro_type[0] == "null", f"{path}: only [null, X] unions"
        assert len(avro_type) == 2, f"{path}: only [null, X] unions"
        assert optional, f"{path}: Avro allows null, the model does not"
        _compare(avro_type[1], core, path, named)
        return
    assert not optional, f"{path}: the model allows None, Avro does not"
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if isinstance(avro_type, str):
        expected = AVRO_PRIMITIVES[avro_type]
        assert core is expected or (isinstance(core, tuple) and expected in core), (
            f"{path}: Avro {avro_type}, model {core}"
        )
        return
    kind = avro_type["type"]
    if "logicalType" in avro_type:
        assert core is LOGICAL[avro_type["logicalType"]], f"{path}: {avro_type}, model {core}"
    elif kind == "array":
        assert typing.get_origin(core) is list, f"{path}: Avro array, model {core}"
        _compare(avro_type["items"], typing.get_args(core)[0], f"{path}[]", named)
    elif kind == "enum":
        named[f"eu.oix.exchange.{avro_type['name']}"] = avro_type
        assert issubclass(core, enum.Enum), f"{path}: Avro enum, model {core}"
        assert core.__name__ == avro_type["name"]
        assert [m.value for m in core] == avro_type["symbols"], f"{path}: symbols differ"
    elif kind == "record":
        named[f"eu.oix.exchange.{avro_type['name']}"] = avro_type
        assert issubclass(core, BaseModel), f"{path}: Avro record, model {core}"
        _compare_record(avro_type, core, path, named)
    else:
        pytest.fail(f"{path}: unexpected Avro type {avro_type}")


def _compare_record(
    schema: dict[str, Any], model: type[BaseModel], path: str, named: dict[str, Any]
) -> None:
    assert model.__name__ == schema["name"], (
        f"{path}: record {schema['name']}, model {model.__name__}"
    )
    fields = {n: f for n, f in model.model_fields.items() if n != "type"}
    assert list(fields) == [f["name"] for f in schema["fields"]], (
        f"{path}: field names or order differ"
    )
    for avro_field in schema["fields"]:
        name = avro_field["name"]
        here = f"{path}.{name}" if path else name
        info = fields[name]
        _compare(avro_field["type"], info.annotation, here, named)
        if "default" in avro_field:
            assert not info.is_required(), f"{here}: Avro has a default, the model requires it"
            default = (
                info.default if info.default is not PydanticUndefined else info.default_factory()
            )  # type: ignore[call-arg,misc]
            assert default == avro_field["default"], (
                f"{here}: default {default!r} != {avro_field['default']!r}"
            )


@pytest.mark.parametrize("name", sorted(REPORT_MODELS))
def test_model_and_schema_agree_field_by_field(name: str) -> None:
    _compare_record(SCHEMAS[name].schema, REPORT_MODELS[name], "", {})


def _example(name: str) -> dict[str, Any]:
    import json

    return json.loads(next((REPO / "deploy" / "examples").glob(f"{name}*.json")).read_text())


@pytest.mark.parametrize(
    ("example", "change", "path", "reason"),
    [
        (
            "02",
            lambda d: d["persons"].update(total=-1),
            "persons.total",
            "greater than or equal to 0",
        ),
        ("02", lambda d: d["persons"].update(total="7"), "persons.total", "valid integer"),
        (
            "02",
            lambda d: d["location"]["point"].update(lat=91.5),
            "location.point.lat",
            "less than or equal to 90",
        ),
        (
            "02",
            lambda d: d["persons"]["nationalities"][0].update(nationality="QQ"),
            "persons.nationalities[0].nationality",
            "ISO 3166-1",
        ),
        ("02", lambda d: d["header"].pop("impact"), "header.impact", "must state its impact level"),
        ("02", lambda d: d["header"].update(originator="Latvia"), "header.originator", "pattern"),
        (
            "02",
            lambda d: d["header"].update(created_at="2025-08-14T03:05:00"),
            "header.created_at",
            "timezone",
        ),
        ("02", lambda d: d["header"].update(language="xx"), "header.language", "ISO 639-1"),
        (
            "02",
            lambda d: d["header"].update(releasable_to=["LT-VSAT", "LT-VSAT"]),
            "header",
            "lists an agency twice",
        ),
        ("02", lambda d: d.update(colour="red"), "colour", "Extra inputs are not permitted"),
        ("02", lambda d: d["persons"].update(men=9), "persons", "exceeds total 7"),
        ("02", lambda d: d.update(category="PICNIC"), "category", "ILLEGAL_CROSSING_ATTEMPT"),
        (
            "01",
            lambda d: d.update(period_end=d["period_start"]),
            "(report)",
            "period_end must be after",
        ),
        (
            "03",
            lambda d: d.update(officers_max=5),
            "(report)",
            "officers_max is below officers_min",
        ),
        (
            "05",
            lambda d: d.update(host_agency="LT-VSAT"),
            "(report)",
            "host_agency is the originator",
        ),
        (
            "01",
            lambda d: d.update(period_end="0001-01-01T00:00:00+03:02"),
            "period_end",
            "before year 1",
        ),
        (
            "07",
            lambda d: d["header"].update(confidence=None),
            "header.confidence",
            "must state its confidence",
        ),
    ],
)
def test_invalid_reports_name_the_field_and_the_reason(
    example: str, change: Any, path: str, reason: str
) -> None:
    data = _example(example)
    change(data)
    with pytest.raises(ReportValidationError) as raised:
        parse_report(data)
    issues = raised.value.issues
    assert any(i.path == path and reason in i.reason for i in issues), [str(i) for i in issues]


def test_every_failing_field_is_reported_at_once() -> None:
    data = _example("02")
    data["persons"]["total"] = -1
    data["location"]["point"]["lon"] = 200
    data["header"]["tlp"] = "PURPLE"
    with pytest.raises(ReportValidationError) as raised:
        parse_report(data)
    paths = {i.path for i in raised.value.issues}
    assert {"persons.total", "location.point.lon", "header.tlp"} <= paths


def test_unknown_report_type_is_named() -> None:
    data = _example("02")
    data["type"] = "Gossip"
    with pytest.raises(ReportValidationError) as raised:
        parse_report(data)
    assert "IncidentReport" in str(raised.value)


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ReportValidationError, match="Invalid JSON"):
        parse_report(b'{"type": "IncidentReport",')


def test_event_id_defaults_to_message_id() -> None:
    data = _example("02")
    data["header"].pop("message_id")
    report = parse_report(data)
    assert report.header.event_id == report.header.message_id
