"""The broker side of retention: ``verify`` warns when the broker keeps records too long."""

from __future__ import annotations

import pytest
from audit_support import incident, publish, sealed_incidents

from services.audit._broker_retention import read_topic_retention, retention_warnings
from services.bus import Exchange, Settings

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


def test_warns_for_a_topic_kept_longer_than_the_agreement_allows_or_forever() -> None:
    warnings = retention_warnings(
        {"oix.A.x": 730 * DAY_MS, "oix.B.x": 731 * DAY_MS, "oix.C.x": -1, "oix.D.x": 7 * DAY_MS},
        730,
    )
    assert warnings == [
        (
            "oix.B.x: the broker keeps records 731 days (retention.ms=63158400000); the "
            "agreement allows 730 days (`oix topics` provisions the agreed retention)"
        ),
        (
            "oix.C.x: the broker keeps records forever (retention.ms=-1); the agreement allows "
            "730 days (`oix topics` provisions the agreed retention)"
        ),
    ]


def test_says_when_the_broker_does_not_report_its_retention() -> None:
    (warning,) = retention_warnings({"oix.A.x": None, "oix.B.x": 1}, 730)
    assert warning.startswith("1 topic(s) whose retention.ms the broker does not report (oix.A.x)")


async def test_reads_what_the_real_broker_reports(settings: Settings, exchange: Exchange) -> None:
    _, topic = incident(exchange)
    await publish(settings, topic, sealed_incidents(exchange, 1, keys=1), partition=0)
    assert settings.bootstrap is not None
    found = await read_topic_retention(settings, settings.bootstrap, [topic])
    assert list(found) == [topic]
    # The local broker (tansu) answers DescribeConfigs with no entries; a Kafka broker
    # reports its retention.ms. Either way the answer is one the warnings cover.
    value = found[topic]
    assert value is None or value >= -1
    assert retention_warnings(found, 730) != [] or (value is not None and value <= 730 * DAY_MS)
