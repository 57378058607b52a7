"""Schema evolution on a real change: IncidentReport has two released versions, both read.

The older version's values are written here by the avro package from the
released file alone, as a partner that never upgraded would write them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from wire_support import (
    RELEASED,
    reference_decode,
    reference_encode,
    reference_form,
)

from services.bus import (
    Exchange,
    IncidentReport,
    ReportValidationError,
    load_examples,
    parse_report,
)
from services.bus._schemas import released_path

FIRST = RELEASED / "IncidentReport" / "897eecb088f47981.avsc"
WETSUITS = next(e.report for e in load_examples() if e.name == "06-lt-incident-wetsuits-neman")


def _current(exchange: Exchange) -> Path:
    return released_path(RELEASED, exchange.codec.registry.current["IncidentReport"])


def _first_version_datum() -> dict[str, Any]:
    datum = reference_form(WETSUITS.model_dump())
    del datum["detected_by"]  # the first version has no such field
    return datum


def test_incident_report_has_two_released_versions(exchange: Exchange) -> None:
    versions = sorted(p.stem for p in (RELEASED / "IncidentReport").glob("*.avsc"))
    assert len(versions) == 2
    assert FIRST.stem in versions
    assert _current(exchange).stem in versions
    assert _current(exchange) != FIRST
    fields = [f["name"] for f in json.loads(FIRST.read_text())["fields"]]
    assert "detected_by" not in fields


def test_a_first_version_value_decodes_to_the_current_model_in_oix(exchange: Exchange) -> None:
    value = reference_encode(FIRST, _first_version_datum())
    assert value[2:10].hex() == FIRST.stem
    decoded = exchange.codec.decode(value)
    assert decoded.writer_fingerprint.hex() == FIRST.stem
    report = decoded.to_model()
    assert isinstance(report, IncidentReport)
    assert report.detected_by is None
    assert report == WETSUITS.model_copy(update={"detected_by": None})


def test_a_first_version_value_decodes_to_the_current_schema_with_the_avro_package(
    exchange: Exchange,
) -> None:
    value = reference_encode(FIRST, _first_version_datum())
    read = reference_decode(value, FIRST, _current(exchange))
    assert read == {**_first_version_datum(), "detected_by": None}


def test_a_partner_still_on_the_first_version_reads_current_values(exchange: Exchange) -> None:
    value = exchange.codec.encode(WETSUITS)
    assert value[2:10].hex() == _current(exchange).stem
    assert reference_decode(value, _current(exchange), FIRST) == _first_version_datum()


def _example(name: str) -> dict[str, Any]:
    path = next((RELEASED.parents[1] / "deploy" / "examples").glob(f"{name}*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize(
    ("example", "change", "path", "reason"),
    [
        ("11", lambda d: d["header"].pop("links"), "header.links", "RESPONDS_TO"),
        ("11", lambda d: d.update(decision="DECLINE"), "decision", "DECLINE offers nothing"),
        ("11", lambda d: d.pop("available_from"), "available_from", "required with decision"),
        (
            "11",
            lambda d: d.update(officers_offered=5),
            "specialities",
            "more than officers_offered",
        ),
        ("11", lambda d: d.update(decision="MAYBE"), "decision", "ACCEPT"),
        ("12", lambda d: d["header"].pop("impact"), "header.impact", "must state its impact"),
        ("12", lambda d: d.update(category="USE_OF_FORCE"), "use_of_force", "names the force"),
        ("12", lambda d: d.update(category="DEATH"), "harm", "counts the dead"),
        ("12", lambda d: d.pop("handler"), "handler", "Field required"),
        ("12", lambda d: d.update(status="PAUSED"), "status", "ONGOING"),
    ],
)
def test_the_new_report_types_name_the_field_and_the_reason(
    example: str, change: Any, path: str, reason: str
) -> None:
    data = _example(example)
    change(data)
    with pytest.raises(ReportValidationError) as raised:
        parse_report(data)
    issues = raised.value.issues
    assert any(i.path == path and reason in i.reason for i in issues), [str(i) for i in issues]
