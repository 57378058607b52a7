"""The wire, pinned against the Apache Avro Java library: what JVM partners run.

Debian's ``libavro-java`` (installed by ``make tools``) computes the schema
fingerprints with Java's ``SchemaNormalization`` and decodes and re-encodes
OIX's values with ``BinaryMessageDecoder``/``BinaryMessageEncoder``, the
single-object encoding of the Avro specification. The Java side reads only
the released ``.avsc`` files; nothing of OIX's codec is involved. Java is
also the arbiter where the Python ``avro`` package 1.12 disagrees with the
specification (it keeps ``logicalType`` primitives as objects in the
canonical form; see docs/partners.md).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

from services.bus import REPORT_MODELS, Exchange, ReportSchema, load_examples

REPO = Path(__file__).resolve().parents[2]
RELEASED_FILES = sorted((REPO / "schemas" / "released").glob("*/*.avsc"))
SOURCE = Path(__file__).with_name("java") / "OixWire.java"
JARS = ("avro", "jackson-core-asl", "jackson-mapper-asl", "paranamer", "slf4j-api")
JAVA_LIBS = Path("/usr/share/java")


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``java`` with the compiled helper on its class path."""
    missing = [j for j in JARS if not (JAVA_LIBS / f"{j}.jar").exists()]
    assert not missing, f"run `make tools` (libavro-java): missing {missing} in {JAVA_LIBS}"
    classes = tmp_path_factory.mktemp("java")
    classpath = ":".join(str(JAVA_LIBS / f"{j}.jar") for j in JARS)
    subprocess.run(
        ["javac", "-cp", classpath, "-d", str(classes), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return ["java", "-cp", f"{classes}:{classpath}", "OixWire"]


def _run(java: list[str], *args: str, stdin: str = "") -> list[str]:
    done = subprocess.run(
        [*java, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_java_names_every_released_file_by_its_single_object_header(java: list[str]) -> None:
    headers = {path: _run(java, "fingerprint", str(path))[0] for path in RELEASED_FILES}
    assert {p.relative_to(REPO).as_posix(): h for p, h in headers.items()} == {
        p.relative_to(REPO).as_posix(): f"c301{p.stem}" for p in RELEASED_FILES
    }


def test_java_decodes_every_oix_value_and_encodes_the_same_bytes(
    java: list[str], exchange: Exchange
) -> None:
    values: dict[str, list[bytes]] = {}
    for example in load_examples():
        values.setdefault(example.report.report_type, []).append(
            exchange.codec.encode(example.report)
        )
    assert set(values) == set(REPORT_MODELS)
    for report_type, encoded in sorted(values.items()):
        schema = exchange.codec.registry.current[report_type]
        again = _run(
            java, "reencode", str(_released(schema)), stdin="".join(v.hex() + "\n" for v in encoded)
        )
        assert again == [v.hex() for v in encoded], report_type


def test_java_resolves_an_older_released_version_as_oix_does(
    java: list[str], exchange: Exchange
) -> None:
    registry = exchange.codec.registry
    current = registry.current["IncidentReport"]
    older = [s for s in registry.released.values() if s.name == "IncidentReport" and s != current]
    assert older, "IncidentReport has a single released version; this test needs two"
    report = next(e.report for e in load_examples() if e.report.report_type == "IncidentReport")
    written = [older_value(schema, report.model_dump()) for schema in older]
    resolved = [
        exchange.codec.encode_record("IncidentReport", exchange.codec.decode(v).record)
        for v in written
    ]
    again = _run(
        java,
        "reencode",
        str(_released(current)),
        *(str(_released(s)) for s in older),
        stdin="".join(v.hex() + "\n" for v in written),
    )
    assert again == [v.hex() for v in resolved]


def _released(schema: ReportSchema) -> Path:
    return REPO / "schemas" / "released" / schema.name / f"{schema.fingerprint_hex}.avsc"


def older_value(schema: ReportSchema, record: dict[str, Any]) -> bytes:
    """``record`` as a partner still on ``schema`` writes it (fields it lacks are dropped)."""
    out = io.BytesIO(b"\xc3\x01" + schema.fingerprint)
    out.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(out, schema.parsed, record)
    return out.getvalue()
