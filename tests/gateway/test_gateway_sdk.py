"""The SDK Publisher: the gateway's pipeline without HTTP, read back from the real broker."""

from __future__ import annotations

import pytest
from gateway_support import AGENCY, example, incident, read_until

from services.bus import ConfigError, Exchange, Settings, freshen, load_examples, parse_report
from services.gateway import (
    Accepted,
    ForbiddenError,
    GatewayError,
    GatewaySettings,
    ShuttingDownError,
    Submission,
)
from services.gateway.sdk import Publisher


async def test_publish_returns_coordinates_after_the_ack(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange, bootstrap: str
) -> None:
    report = next(
        r
        for r in freshen([e.report for e in load_examples()])
        if r.header.originator == AGENCY and r.report_type == "IncidentReport"
    )
    async with Publisher(AGENCY, settings, gateway=gateway_settings, exchange=exchange) as pub:
        accepted = await pub.publish(report)
        again = await pub.publish(report)
    assert accepted.message_id == str(report.header.message_id)
    assert again.replayed
    assert (again.partition, again.offset) == (accepted.partition, accepted.offset)
    landed = await read_until(bootstrap, exchange, [accepted.topic], [accepted.message_id])
    [record] = [r for r in landed if r.message_id == accepted.message_id]
    assert (record.record.partition, record.record.offset) == (accepted.partition, accepted.offset)
    assert record.opened.trusted
    decoded = record.opened.decoded.to_model()  # type: ignore[union-attr]
    assert decoded.model_dump(exclude={"header"}) == report.model_dump(exclude={"header"})


async def test_publish_many_gives_one_outcome_per_report(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange, bootstrap: str
) -> None:
    good = [incident() for _ in range(5)]
    batch = [good[0], {"type": "Rumour"}, *good[1:3], incident(tlp="BLUE"), *good[3:]]
    async with Publisher(AGENCY, settings, gateway=gateway_settings, exchange=exchange) as pub:
        outcomes = await pub.publish_many(batch)
    kinds = [o.status if isinstance(o, GatewayError) else 201 for o in outcomes]
    assert kinds == [201, 400, 201, 201, 422, 201, 201]
    ids = [o.message_id for o in outcomes if isinstance(o, Accepted)]
    assert ids == [g["header"]["message_id"] for g in good]
    topic = exchange.router.naming.feed(AGENCY, "incidents")
    landed = await read_until(bootstrap, exchange, [topic], ids)
    assert {r.message_id for r in landed} == set(ids)


async def test_the_sdk_never_signs_for_another_agency(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange
) -> None:
    lt_report = parse_report(example("06-lt-incident-wetsuits-neman", originator="LT-VSAT"))
    async with Publisher(AGENCY, settings, gateway=gateway_settings, exchange=exchange) as pub:
        with pytest.raises(ForbiddenError, match="never signs for another agency"):
            await pub.publish(lt_report)


async def test_a_closed_publisher_takes_nothing(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange
) -> None:
    pub = Publisher(AGENCY, settings, gateway=gateway_settings, exchange=exchange)
    with pytest.raises(RuntimeError, match="not started"):
        await pub.publish(incident())
    await pub.start()
    pipeline = pub._running
    await pub.close()
    with pytest.raises(ShuttingDownError) as refused:
        await pipeline.publish(Submission(incident()))
    assert refused.value.status == 503
    assert refused.value.retry_after == gateway_settings.retry_after


def test_a_publisher_for_an_unknown_agency_is_a_config_error(
    settings: Settings, exchange: Exchange
) -> None:
    with pytest.raises(ConfigError, match="not a party to the agreement"):
        Publisher("XX-NOBODY", settings, exchange=exchange)


async def test_publish_many_replays_and_refuses_known_ids_across_groups(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange
) -> None:
    # More than a group, so the batched lookup of known ids spans several groups.
    first = [incident() for _ in range(300)]
    reused = {**first[70], "narrative": "another report under the same id"}
    fresh = [incident() for _ in range(300)]
    async with Publisher(AGENCY, settings, gateway=gateway_settings, exchange=exchange) as pub:
        before = await pub.publish_many(first)
        assert all(isinstance(o, Accepted) and not o.replayed for o in before)
        again = [*fresh[:40], first[3], fresh[40], fresh[40], *fresh[41:], reused, first[299]]
        outcomes = await pub.publish_many(again)
    by_id = {o.message_id: o for o in before if isinstance(o, Accepted)}
    replay, twice, duplicate = outcomes[40], outcomes[41], outcomes[42]
    assert isinstance(replay, Accepted)
    assert replay.replayed
    assert replay.offset == by_id[replay.message_id].offset
    assert isinstance(twice, Accepted)
    assert not twice.replayed
    assert isinstance(duplicate, Accepted)
    assert duplicate.replayed
    assert duplicate.offset == twice.offset
    conflict, last = outcomes[-2], outcomes[-1]
    assert isinstance(conflict, GatewayError)
    assert conflict.status == 409
    assert isinstance(last, Accepted)
    assert last.replayed
    assert all(isinstance(o, Accepted) and not o.replayed for o in outcomes[:40])
