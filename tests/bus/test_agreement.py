"""The agreement: each kind of mistake gives a clear message; routing and ACLs derive from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.bus import (
    AgreementError,
    Router,
    RoutingError,
    TopicKind,
    TopicNaming,
    load_agreement,
    parse_agreement,
    render_acls,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "agreement.example.yaml"
TEXT = EXAMPLE.read_text()


def _mutated(change: object) -> str:
    data = yaml.safe_load(TEXT)
    change(data)  # type: ignore[operator]
    return yaml.safe_dump(data)


def test_the_example_agreement_loads() -> None:
    agreement = load_agreement(EXAMPLE)
    assert set(agreement.parties) == {"LT-VSAT", "LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"}
    assert agreement.readers("LV-VRS", "coordination") == {"LT-VSAT", "PL-SG", "EE-PPA"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["releases"][0]["to"].append("LV-XXX"),
            r"releases\.0\.to: unknown party 'LV-XXX'",
        ),
        (
            lambda d: d["releases"][1]["feeds"].append("rumours"),
            r"releases\.1\.feeds: unknown feed 'rumours'",
        ),
        (
            lambda d: d["parties"]["LT-VSAT"]["keys"][0].update(public_key="not base64!"),
            r"parties\.LT-VSAT\.keys\.0\.public_key: .*not valid base64",
        ),
        (
            lambda d: d["parties"]["LT-VSAT"]["keys"][0].update(public_key="AAAA"),
            r"parties\.LT-VSAT\.keys\.0\.public_key: .*32 bytes, this one is 3",
        ),
        (
            lambda d: d["parties"]["PL-SG"]["keys"][0].update(id="LT-VSAT-2026-1"),
            r"parties\.PL-SG\.keys: key id 'LT-VSAT-2026-1' is already used by LT-VSAT",
        ),
        (
            lambda d: d["feeds"]["situation"]["report_types"].append("IncidentReport"),
            r"feeds\.situation\.report_types: IncidentReport is already in feed 'incidents'",
        ),
        (
            lambda d: d["feeds"]["incidents"]["report_types"].append("Gossip"),
            r"feeds\.incidents\.report_types: .*unknown report type 'Gossip'",
        ),
        (
            lambda d: d["feeds"]["incidents"]["report_types"].append("Cancellation"),
            r"feeds\.incidents\.report_types: Cancellation is in no feed: it goes wherever",
        ),
        (
            lambda d: d["feeds"].update(direct={"report_types": ["SituationReport"]}),
            r"feeds\.direct: the name 'direct' is reserved",
        ),
        (
            lambda d: d["parties"]["EE-PPA"].update(country="XE"),
            r"parties\.EE-PPA\.country: .*'XE' is not an ISO 3166-1",
        ),
        (
            lambda d: d["parties"].update({"lt-vsat": d["parties"]["LT-VSAT"]}),
            r"parties\.lt-vsat\.\[key\]: .*pattern",
        ),
        (lambda d: d.pop("exchange"), r"exchange: Field required"),
        (
            lambda d: d["releases"][2].update(to=["LV-VRS"]),
            r"releases\.2\.to: LV-VRS cannot release to itself",
        ),
        (lambda d: d.update(extra=1), r"extra: Extra inputs are not permitted"),
    ],
    ids=[
        "unknown-reader",
        "unknown-feed",
        "bad-base64-key",
        "short-key",
        "duplicate-key-id",
        "type-in-two-feeds",
        "unknown-type",
        "cancellation-in-feed",
        "reserved-feed-name",
        "bad-country",
        "bad-agency-code",
        "missing-section",
        "release-to-self",
        "unknown-field",
    ],
)
def test_each_mistake_names_file_path_and_reason(change: object, expected: str) -> None:
    with pytest.raises(AgreementError, match=rf"^agreement\.yaml: {expected}"):
        parse_agreement(_mutated(change), "agreement.yaml")


def test_yaml_syntax_errors_give_line_and_column() -> None:
    with pytest.raises(
        AgreementError, match=r"^a\.yaml: line 4, column 1: not valid YAML: expected ','"
    ):
        parse_agreement("exchange:\n  id: x\n  title: [unclosed\n", "a.yaml")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AgreementError, match=r"nope\.yaml: cannot read the agreement"):
        load_agreement(tmp_path / "nope.yaml")


@pytest.fixture
def router() -> Router:
    return Router(load_agreement(EXAMPLE), TopicNaming("oix"))


def test_a_report_released_to_every_feed_reader_goes_to_the_feed(router: Router) -> None:
    topics = router.topics_for(
        "IncidentReport", "LV-VRS", ["LT-VSAT", "PL-SG", "EE-PPA", "UA-DPSU"]
    )
    assert topics == ["oix.LV-VRS.incidents"]


def test_a_narrower_release_goes_to_bilateral_channels_only(router: Router) -> None:
    topics = router.topics_for("IncidentReport", "LV-VRS", ["PL-SG", "LT-VSAT"])
    assert topics == ["oix.LV-VRS.direct.LT-VSAT", "oix.LV-VRS.direct.PL-SG"]


def test_releasing_beyond_the_agreement_is_refused(router: Router) -> None:
    with pytest.raises(
        RoutingError, match=r"does not release LV-VRS's 'coordination' feed to UA-DPSU"
    ):
        router.topics_for("AssistanceRequest", "LV-VRS", ["LT-VSAT", "UA-DPSU"])


def test_releasing_to_nobody_is_refused(router: Router) -> None:
    with pytest.raises(RoutingError, match="nobody could read"):
        router.topics_for("IncidentReport", "LV-VRS", ["LV-VRS"])


def test_an_unknown_originator_is_refused(router: Router) -> None:
    with pytest.raises(RoutingError, match="FI-RAJA is not a party"):
        router.topics_for("IncidentReport", "FI-RAJA", ["LV-VRS"])


def test_cancellations_are_not_routed_on_their_own(router: Router) -> None:
    with pytest.raises(RoutingError, match="wherever the message it refers to went"):
        router.topics_for("Cancellation", "LV-VRS", ["LT-VSAT"])


def test_topic_names_parse_back(router: Router) -> None:
    naming = router.naming
    assert naming.parse("oix.LV-VRS.incidents").kind is TopicKind.FEED  # type: ignore[union-attr]
    direct = naming.parse("oix.LV-VRS.direct.LT-VSAT")
    assert direct is not None
    assert (direct.originator, direct.recipient) == ("LV-VRS", "LT-VSAT")
    assert naming.parse("oix.quarantine").kind is TopicKind.QUARANTINE  # type: ignore[union-attr]
    assert naming.parse("other.topic") is None


def test_every_topic_readable_by_a_party_comes_from_a_release(router: Router) -> None:
    readable = router.readable_by("UA-DPSU")
    assert "oix.LT-VSAT.incidents" in readable
    assert "oix.LV-VRS.coordination" not in readable  # LV does not release coordination to UA
    assert "oix.LV-VRS.direct.UA-DPSU" in readable
    assert "oix.EE-PPA.direct.UA-DPSU" not in readable  # EE releases nothing to UA
    assert all(t in router.all_topics() for t in readable)


def test_acls_let_each_party_write_only_its_own_topics(router: Router) -> None:
    acls = render_acls(router)
    writes = {(a.principal, a.name, a.pattern_type) for a in acls if a.operation == "WRITE"}
    assert ("User:lv-vrs", "oix.LV-VRS.", "PREFIXED") in writes
    assert not any(p == "User:lv-vrs" and n.startswith("oix.LT-VSAT") for p, n, _ in writes)
    reads = {
        (a.principal, a.name) for a in acls if a.operation == "READ" and a.resource_type == "TOPIC"
    }
    assert ("User:ua-dpsu", "oix.LV-VRS.coordination") not in reads
    assert ("User:ua-dpsu", "oix.LV-VRS.incidents") in reads
    assert "--resource-pattern-type prefixed" in acls[0].command()
