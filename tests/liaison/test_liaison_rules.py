"""The liaison's pure rules: releasability, handling, due times, lateness, diffs, signatures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from services.bus import ConfigError, Settings, TopicNaming, load_agreement
from services.host import PUBLISHING, Offers, PublishingPath
from services.liaison import due_at, release_problem, signature, webhook_refusal
from services.liaison._auth import OfficerRegistry, add_officer
from services.liaison._feed import since_time
from services.liaison._handling import is_late
from services.liaison._models import EventSummary, ReportSummary
from services.liaison._store import Row
from services.liaison._views import (
    changes_between,
    event_fields,
    event_summary,
    report_fields,
    report_summary,
)

AGREEMENT = load_agreement(Settings().agreement)
NAMING = TopicNaming("oix")
H = 3_600_000


def _problem(
    topic: str,
    originator: str = "LT-VSAT",
    report_type: str = "IncidentReport",
    releasable_to: tuple[str, ...] = ("LV-VRS",),
) -> str:
    return release_problem(
        AGREEMENT,
        agency="LV-VRS",
        topic=NAMING.parse(topic),
        originator=originator,
        report_type=report_type,
        releasable_to=releasable_to,
    )


def test_a_report_must_name_the_agency_and_come_on_a_topic_that_may_carry_it_there() -> None:
    assert _problem("oix.LT-VSAT.incidents") == ""
    assert _problem("oix.LT-VSAT.direct.LV-VRS") == ""
    assert _problem("oix.LT-VSAT.coordination", report_type="Cancellation") == ""
    assert "not released to this agency" in _problem(
        "oix.LT-VSAT.incidents", releasable_to=("PL-SG",)
    )
    assert "signed by LT-VSAT" in _problem("oix.PL-SG.incidents")
    assert "bilateral channel to PL-SG" in _problem("oix.LT-VSAT.direct.PL-SG")
    assert "not carried by feed" in _problem("oix.LT-VSAT.situation")
    assert "does not have" in _problem("oix.LT-VSAT.gossip")
    assert "not a feed" in _problem("oix.quarantine")
    assert "not a feed" in _problem("elsewhere.LT-VSAT.incidents")
    # UA's coordination feed is released to LV; LV's is not released to UA.
    assert (
        _problem("oix.UA-DPSU.coordination", originator="UA-DPSU", report_type="AssistanceRequest")
        == ""
    )
    no_feed = release_problem(
        AGREEMENT,
        agency="UA-DPSU",
        topic=NAMING.parse("oix.LV-VRS.coordination"),
        originator="LV-VRS",
        report_type="AssistanceRequest",
        releasable_to=("UA-DPSU",),
    )
    assert "does not release LV-VRS's 'coordination' feed to UA-DPSU" in no_feed


@pytest.mark.parametrize(
    ("owner", "tlp", "handling", "allowed"),
    [
        ("LV-VRS", "AMBER", [], True),
        ("LV-VRS", "AMBER_STRICT", [], True),
        ("LV-VRS", "RED", [], False),
        ("LV-VRS/ops", "GREEN", ["NO_ONWARD"], False),
        ("LV-VP", "AMBER", [], False),
        ("LV-VP", "GREEN", [], True),
        ("LV-VP", "CLEAR", ["NO_ONWARD"], False),
        ("PL-SG", "GREEN", ["NO_ONWARD"], True),
        ("LV-VRS", "GREEN", ["NO_ONWARD", "PURPOSE_ONLY"], True),
    ],
)
def test_what_a_webhook_may_forward(
    owner: str, tlp: str, handling: list[str], allowed: bool
) -> None:
    refusal = webhook_refusal(
        agency="LV-VRS", owner=owner, tlp=tlp, handling=handling, releasable_to=["LV-VRS", "PL-SG"]
    )
    assert (refusal == "") is allowed, refusal


def test_due_times_follow_the_priority_or_the_requests_own_deadline() -> None:
    assert due_at("FLASH", 0, None, deadline_is_answer=False) == 8 * H
    assert due_at("IMMEDIATE", 0, None, deadline_is_answer=False) == 8 * H
    assert due_at("PRIORITY", 0, None, deadline_is_answer=False) == 72 * H
    assert due_at("ROUTINE", 0, None, deadline_is_answer=False) == 168 * H
    # A request for information's due_at wins; help needed sooner than the answer time wins.
    assert due_at("ROUTINE", 0, 500 * H, deadline_is_answer=True) == 500 * H
    assert due_at("ROUTINE", 0, 2 * H, deadline_is_answer=False) == 2 * H
    assert due_at("IMMEDIATE", 0, 500 * H, deadline_is_answer=False) == 8 * H


def test_an_incident_reported_more_than_a_day_after_detection_is_late() -> None:
    assert not is_late(24 * H, 0)
    assert is_late(24 * H + 1, 0)
    assert not is_late(24 * H + 1, None)


def test_changes_between_versions_name_the_fields_that_differ() -> None:
    before = {
        "header": {"message_id": "a", "impact": "LOW"},
        "persons": {"total": 7},
        "narrative": "x",
    }
    after = {
        "header": {"message_id": "b", "impact": "HIGH"},
        "persons": {"total": 9},
        "narrative": "x",
    }
    assert [(c.path, c.before, c.after) for c in changes_between(before, after)] == [
        ("header.impact", "LOW", "HIGH"),
        ("persons.total", 7, 9),
    ]


def test_the_webhook_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Against an independent implementation: PyCA cryptography's HMAC.
    mac = HMAC(b"s3cret-s3cret-s3cret", hashes.SHA256())
    mac.update(b"1767225600." + b'{"a":1}')
    assert (
        signature("s3cret-s3cret-s3cret", "1767225600", b'{"a":1}') == f"v1={mac.finalize().hex()}"
    )


def test_feed_since_takes_durations_and_times() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert since_time("2h", now) == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert since_time("1d", now) == datetime(2026, 4, 30, 12, 0, tzinfo=UTC)
    assert since_time("2026-04-01T00:00:00", now) == datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--since"):
        since_time("yesterday", now)


async def test_an_offer_is_awaited_until_it_is_published_or_the_wait_ends() -> None:
    offers = Offers()
    assert await offers.wait(PUBLISHING, "LV-VRS", 0.05) is None
    waiting = asyncio.create_task(offers.wait(PUBLISHING, "LV-VRS", 5))
    await asyncio.sleep(0.01)
    offers.publish(PUBLISHING, "LT-VSAT", PublishingPath("LT-VSAT", "http://lt", "t1"))
    offers.publish(PUBLISHING, "LV-VRS", PublishingPath("LV-VRS", "http://lv", "t2"))
    assert await waiting == PublishingPath("LV-VRS", "http://lv", "t2")


_EVENT = {
    "originator": "LT-VSAT",
    "event_id": "e-1",
    "report_type": "AssistanceRequest",
    "title": "Request for assistance",
    "status": "active",
    "withdrawn_reason": None,
    "mode": "EXERCISE",
    "impact": None,
    "tlp": "AMBER",
    "priority": "URGENT",
    "border_section": ",LT-BY-1,LT-BY-2,",
    "releasable_to": "LV-VRS,PL-SG",
    "reports": 2,
    "versions": 1,
    "first_message_id": "m-1",
    "current_message_id": "m-2",
    "first_reported_at": 1_764_600_000_123,
    "last_reported_at": 1_764_600_060_456,
    "detected_at": None,
    "late": 1,
    "request_kind": "assistance",
    "due_at": 1_764_628_800_000,
    "answered_at": None,
    "seq": 7,
}
_MESSAGE = {
    "originator": "LT-VSAT",
    "message_id": "m-2",
    "event_id": "e-1",
    "report_type": "IncidentReport",
    "title": "Illegal crossing attempt",
    "created_at": 1_764_600_060_456,
    "received_at": 1_764_600_061_000,
    "mode": "ACTUAL",
    "tlp": "GREEN",
    "impact": "LOW",
    "priority": "ROUTINE",
    "classification": "SENSITIVE",
    "handling": "PURPOSE_ONLY,NO_COURT",
    "releasable_to": "LV-VRS",
    "border_section": None,
    "signature_status": "valid",
    "key_id": "LT-VSAT-2026-1",
    "superseded_by": None,
    "cancelled_by": "m-3",
    "seq": 8,
}


@pytest.mark.parametrize(
    "changed",
    [{}, {"request_kind": None}, {"answered_at": 1_764_600_100_000}, {"late": 0, "mode": "ACTUAL"}],
)
def test_the_live_streams_plain_event_is_the_apis_model_to_the_byte(changed: dict) -> None:
    # The stream sends event_fields as they are; the API validates the same through the model.
    row = Row({**_EVENT, **changed})
    plain = event_fields(row, at=1_764_700_000_000)
    assert orjson.dumps(plain) == orjson.dumps(event_summary(row, 1_764_700_000_000).model_dump())
    assert set(plain) == set(EventSummary.model_fields)


@pytest.mark.parametrize("changed", [{}, {"key_id": None, "border_section": ",A,", "handling": ""}])
def test_the_live_streams_plain_report_is_the_apis_model_to_the_byte(changed: dict) -> None:
    row = Row({**_MESSAGE, **changed})
    plain = report_fields(row)
    assert orjson.dumps(plain) == orjson.dumps(report_summary(row).model_dump())
    assert set(plain) == set(ReportSummary.model_fields)


async def test_an_officer_signs_in_only_with_their_agency_name_and_password(tmp_path: Path) -> None:
    path = tmp_path / "officers.yaml"
    add_officer(path, "LV-VRS", "ana", "correct horse battery")
    registry = OfficerRegistry(path)
    assert await registry.verify("LV-VRS", "ana", "correct horse battery")
    assert not await registry.verify("LV-VRS", "ana", "wrong horse battery")
    # An unknown name is checked against a dummy hash (the same cost), and refused.
    assert not await registry.verify("LV-VRS", "nobody", "correct horse battery")
    assert not await registry.verify("LV-VRS", "nobody", "no such officer")  # the dummy's own
    assert not await registry.verify("LT-VSAT", "ana", "correct horse battery")
