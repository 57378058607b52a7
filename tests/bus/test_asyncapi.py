"""``oix agreement asyncapi``: valid AsyncAPI 3.0.0, and true to the agreement and the schemas."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from wire_support import RELEASED, reference_fingerprint

from services.bus import Exchange, Settings

HERE = Path(__file__).resolve().parent
SPEC = HERE / "asyncapi" / "asyncapi-3.0.0.schema.json"
OIX = Path(sys.executable).parent / "oix"


REPO = HERE.parents[1]
EXCHANGE = Exchange.from_settings(
    Settings(
        agreement=REPO / "deploy" / "agreement.example.yaml",
        keys_dir=REPO / "deploy" / "keys",
        schemas_dir=REPO / "schemas",
    )
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as the command prints it (run once: it is the same for every test)."""
    env = {
        **os.environ,
        "OIX_BOOTSTRAP": "kafka-1.example:9093",
        "OIX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "OIX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "OIX_KAFKA_SASL_USERNAME": "LT-VSAT",
        "OIX_TOPIC_PREFIX": "oix",
        "OIX_AGREEMENT": str(REPO / "deploy" / "agreement.example.yaml"),
        "OIX_SCHEMAS_DIR": str(REPO / "schemas"),
        "OIX_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [str(OIX), "agreement", "asyncapi"], env=env, capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SPEC.read_text(encoding="utf-8")))


def test_the_kept_schema_is_the_published_one() -> None:
    named = (HERE / "asyncapi" / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(SPEC.read_bytes()).hexdigest() in named


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in _validator().iter_errors(document)
    ]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"
    server = document["servers"]["exchange"]
    assert (server["host"], server["protocol"]) == ("kafka-1.example:9093", "kafka-secure")


def test_the_validator_refuses_a_broken_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["components"]["messages"]["IncidentReport"]["payload"]["schema"]["type"] = "recrod"
    assert not _validator().is_valid(broken)


def test_every_topic_is_a_channel_with_its_messages(document: dict[str, Any]) -> None:
    exchange = EXCHANGE
    channels = document["channels"]
    assert sorted(c["address"] for c in channels.values()) == exchange.router.all_topics()
    feed = channels["LT-VSAT.incidents"]
    assert feed["address"] == f"{exchange.naming.prefix}.LT-VSAT.incidents"
    assert set(feed["messages"]) == {
        "IncidentReport",
        "SeriousIncidentReport",
        "EarlyWarning",
        "Cancellation",
    }
    assert "AssistanceResponse" in channels["LT-VSAT.direct.LV-VRS"]["messages"]
    assert set(channels["quarantine"]["messages"]) == {"QuarantinedRecord"}
    operations = document["operations"]
    assert operations["PL-SG.receive.LT-VSAT.incidents"]["action"] == "receive"
    assert operations["LT-VSAT.send.LT-VSAT.incidents"]["action"] == "send"
    assert "UA-DPSU.receive.LV-VRS.coordination" not in operations  # not released to UA


def test_payloads_are_the_released_files_named_by_their_reference_fingerprint(
    document: dict[str, Any],
) -> None:
    exchange = EXCHANGE
    messages = document["components"]["messages"]
    for report_type in exchange.codec.registry.current:
        message = messages[report_type]
        path = RELEASED / report_type / f"{message['x-oix-fingerprint']}.avsc"
        assert message["payload"]["schema"] == json.loads(path.read_text()), report_type
        assert reference_fingerprint(path).hex() == message["x-oix-fingerprint"]
        released = sorted(p.stem for p in (RELEASED / report_type).glob("*.avsc"))
        assert message["headers"]["properties"]["oix-schema"]["enum"] == released
    keys = {
        key["id"]: key["public_key"]
        for party in document["x-oix-parties"].values()
        for key in party["keys"]
    }
    agreement = exchange.agreement
    assert keys == {k.id: k.public_key for p in agreement.parties.values() for k in p.keys}
