"""The ACLs the agreement implies, checked against a table of who may and may not do what.

Both renderings are parsed back from their text (the ``kafka-acls.sh``
commands and the Strimzi ``KafkaUser`` YAML) and evaluated with the rules of
Kafka's authorizer, written here independently of OIX: a binding matches a
LITERAL name exactly (or ``*``) and a PREFIXED name by prefix; READ and WRITE
imply DESCRIBE; anything not allowed is denied.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from services.bus import Router, TopicNaming, load_agreement, parse_agreement, render_acls
from services.bus._provision import Layout, plan_acls
from services.bus._strimzi import render_strimzi

REPO = Path(__file__).resolve().parents[2]
AGREEMENT = REPO / "deploy" / "agreement.example.yaml"

Grant = tuple[str, str, str, str, str]
"""(principal, operation, resource type, pattern type, name)"""

IMPLIES_DESCRIBE = {"READ", "WRITE", "DELETE", "ALTER"}


def allowed(grants: set[Grant], principal: str, operation: str, kind: str, name: str) -> bool:
    """Kafka's authorizer (ALLOW bindings only, host ``*``)."""
    for who, op, resource, pattern, pattern_name in grants:
        if who not in {principal, "User:*"} or resource != kind:
            continue
        if pattern == "LITERAL":
            matches = pattern_name in {name, "*"}
        elif pattern == "PREFIXED":
            matches = name.startswith(pattern_name)
        else:
            pytest.fail(f"unknown pattern type {pattern}")
        operation_ok = op in {operation, "ALL"} or (
            operation == "DESCRIBE" and op in IMPLIES_DESCRIBE
        )
        if matches and operation_ok:
            return True
    return False


def from_kafka_acls_commands(lines: list[str]) -> set[Grant]:
    """Parse ``kafka-acls.sh --add`` command lines back into grants."""
    grants: set[Grant] = set()
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "kafka-acls.sh"
        assert "--add" in words
        options = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
        kind = "TOPIC" if "--topic" in options else "GROUP"
        name = options["--topic"] if kind == "TOPIC" else options["--group"]
        grants.add(
            (
                options["--allow-principal"],
                options["--operation"],
                kind,
                options["--resource-pattern-type"].upper(),
                name,
            )
        )
    return grants


def from_strimzi(text: str) -> set[Grant]:
    """Parse Strimzi ``KafkaUser`` resources back into grants."""
    patterns = {"literal": "LITERAL", "prefix": "PREFIXED"}
    grants: set[Grant] = set()
    for document in yaml.safe_load_all(text):
        if document["kind"] != "KafkaUser":
            continue
        assert document["spec"]["authentication"]["type"] == "scram-sha-512"
        assert document["spec"]["authorization"]["type"] == "simple"
        principal = f"User:{document['metadata']['name']}"
        for rule in document["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            assert rule.get("host", "*") == "*"
            for operation in rule["operations"]:
                grants.add(
                    (
                        principal,
                        operation.upper(),
                        resource["type"].upper(),
                        patterns[resource["patternType"]],
                        resource["name"],
                    )
                )
    return grants


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_agreement(AGREEMENT), TopicNaming("oix"))


def _kafka_acls(router: Router) -> set[Grant]:
    return from_kafka_acls_commands([acl.command("kafka-1:9092") for acl in render_acls(router)])


def _strimzi(router: Router) -> set[Grant]:
    return from_strimzi(render_strimzi(router, Layout(), "oix"))


RENDERINGS = {"kafka-acls": _kafka_acls, "strimzi": _strimzi}

# principal, operation, resource type, name, allowed
TABLE = [
    # Each party writes only under its own prefix.
    ("User:lt-vsat", "WRITE", "TOPIC", "oix.LT-VSAT.incidents", True),
    ("User:lt-vsat", "WRITE", "TOPIC", "oix.LT-VSAT.direct.LV-VRS", True),
    ("User:lt-vsat", "WRITE", "TOPIC", "oix.LV-VRS.incidents", False),
    ("User:lt-vsat", "WRITE", "TOPIC", "oix.LT-VSAT-X.incidents", False),
    ("User:lt-vsat", "WRITE", "TOPIC", "oix.quarantine", False),
    ("User:ua-dpsu", "WRITE", "TOPIC", "oix.PL-SG.direct.UA-DPSU", False),
    # Each party reads only what was released to it.
    ("User:ua-dpsu", "READ", "TOPIC", "oix.LV-VRS.incidents", True),
    ("User:ua-dpsu", "READ", "TOPIC", "oix.LV-VRS.coordination", False),
    ("User:ua-dpsu", "READ", "TOPIC", "oix.EE-PPA.incidents", False),
    ("User:ua-dpsu", "READ", "TOPIC", "oix.LV-VRS.direct.UA-DPSU", True),
    ("User:ua-dpsu", "READ", "TOPIC", "oix.LV-VRS.direct.PL-SG", False),
    ("User:lv-vrs", "READ", "TOPIC", "oix.EE-PPA.coordination", True),
    ("User:pl-sg", "READ", "TOPIC", "oix.EE-PPA.coordination", False),
    ("User:lt-vsat", "READ", "TOPIC", "oix.LT-VSAT.incidents", False),
    ("User:pl-sg", "READ", "TOPIC", "oix.quarantine", False),
    ("User:pl-sg", "DESCRIBE", "TOPIC", "oix.UA-DPSU.situation", True),
    ("User:ua-dpsu", "DESCRIBE", "TOPIC", "oix.LV-VRS.coordination", False),
    ("User:lt-vsat", "DESCRIBE", "TOPIC", "oix.LT-VSAT.situation", True),
    # Each party uses only its own consumer groups.
    ("User:lt-vsat", "READ", "GROUP", "oix.LT-VSAT.liaison", True),
    ("User:lt-vsat", "READ", "GROUP", "oix.LV-VRS.liaison", False),
    ("User:lt-vsat", "READ", "GROUP", "oix.audit", False),
    # The audit consumer reads everything and writes only the quarantine.
    ("User:oix-audit", "READ", "TOPIC", "oix.UA-DPSU.direct.PL-SG", True),
    ("User:oix-audit", "READ", "TOPIC", "oix.quarantine", True),
    ("User:oix-audit", "WRITE", "TOPIC", "oix.quarantine", True),
    ("User:oix-audit", "WRITE", "TOPIC", "oix.LT-VSAT.incidents", False),
    ("User:oix-audit", "READ", "GROUP", "oix.audit", True),
    ("User:oix-audit", "READ", "GROUP", "oix.LT-VSAT.liaison", False),
    ("User:oix-audit", "READ", "TOPIC", "other.topic", False),
    # Nothing else: no one creates, deletes or reconfigures; strangers get nothing.
    ("User:lt-vsat", "CREATE", "TOPIC", "oix.LT-VSAT.new", False),
    ("User:lt-vsat", "DELETE", "TOPIC", "oix.LT-VSAT.incidents", False),
    ("User:lt-vsat", "ALTER_CONFIGS", "TOPIC", "oix.LT-VSAT.incidents", False),
    ("User:oix-audit", "DELETE", "TOPIC", "oix.quarantine", False),
    ("User:mallory", "READ", "TOPIC", "oix.LT-VSAT.incidents", False),
    ("User:LT-VSAT", "WRITE", "TOPIC", "oix.LT-VSAT.incidents", False),
]


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
@pytest.mark.parametrize("row", TABLE, ids=lambda row: " ".join(map(str, row)))
def test_who_may_do_what(
    router: Router, rendering: str, row: tuple[str, str, str, str, bool]
) -> None:
    principal, operation, kind, name, expected = row
    grants = RENDERINGS[rendering](router)
    assert allowed(grants, principal, operation, kind, name) is expected


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_every_party_reads_exactly_its_releases_and_writes_exactly_its_own(
    router: Router, rendering: str
) -> None:
    """The whole matrix, with the expectation computed from the YAML's releases directly."""
    grants = RENDERINGS[rendering](router)
    raw = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    readable: dict[str, set[str]] = {party: set() for party in raw["parties"]}
    for release in raw["releases"]:
        for reader in release["to"]:
            readable[reader].update(f"oix.{release['from']}.{feed}" for feed in release["feeds"])
            readable[reader].add(f"oix.{release['from']}.direct.{reader}")
    topics = sorted(set().union(*readable.values()) | {"oix.quarantine"})
    for party in raw["parties"]:
        principal = f"User:{party.lower()}"
        for topic in topics:
            can_read = allowed(grants, principal, "READ", "TOPIC", topic)
            can_write = allowed(grants, principal, "WRITE", "TOPIC", topic)
            assert can_read is (topic in readable[party]), (party, topic)
            assert can_write is topic.startswith(f"oix.{party}."), (party, topic)
    assert len(grants) == len(render_acls(router)), "duplicate or lost bindings"


def test_both_renderings_say_the_same(router: Router) -> None:
    assert _kafka_acls(router) == _strimzi(router)


def test_a_removed_release_and_a_removed_party_are_revoked(router: Router) -> None:
    current = set(render_acls(router))
    raw = yaml.safe_load(AGREEMENT.read_text(encoding="utf-8"))
    del raw["parties"]["EE-PPA"]
    raw["releases"] = [r for r in raw["releases"] if r["from"] != "EE-PPA"]
    for release in raw["releases"]:
        release["to"] = [p for p in release["to"] if p != "EE-PPA"]
    # LV-VRS stops releasing its coordination feed to PL-SG.
    for release in raw["releases"]:
        if release["from"] == "LV-VRS" and release["feeds"] == ["coordination"]:
            release["to"].remove("PL-SG")
    changed = Router(parse_agreement(yaml.safe_dump(raw), "changed.yaml"), TopicNaming("oix"))
    add, remove = plan_acls(render_acls(changed), current)
    assert add == []
    removed = {(a.principal, a.operation, a.resource_type, a.name) for a in remove}
    assert ("User:pl-sg", "READ", "TOPIC", "oix.LV-VRS.coordination") in removed
    assert ("User:pl-sg", "READ", "TOPIC", "oix.LV-VRS.direct.PL-SG") not in removed
    assert {r for r in removed if r[0] == "User:ee-ppa"} == {
        (a.principal, a.operation, a.resource_type, a.name)
        for a in current
        if a.principal == "User:ee-ppa"
    }
    assert ("User:lt-vsat", "READ", "TOPIC", "oix.EE-PPA.incidents") in removed
    assert ("User:pl-sg", "READ", "TOPIC", "oix.EE-PPA.direct.PL-SG") in removed
    # Everything else stays as it was.
    kept = current - set(remove)
    assert kept == set(render_acls(changed))
