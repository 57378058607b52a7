"""Every report type through encode, sign, produce on the real broker, consume, verify, decode."""

from __future__ import annotations

from kafka_support import read_topics

from services.bus import (
    H_TRACEPARENT,
    REPORT_MODELS,
    Cancellation,
    Exchange,
    Settings,
    SignatureStatus,
    freshen,
    load_examples,
    start_producer,
)


async def test_every_example_round_trips_through_the_broker(
    settings: Settings, exchange: Exchange, bootstrap: str
) -> None:
    reports = freshen([e.report for e in load_examples()])
    assert {r.report_type for r in reports} == set(REPORT_MODELS)
    producer = await start_producer(settings, bootstrap)
    sent: dict[str, list[str]] = {}
    try:
        for report in reports:
            if isinstance(report, Cancellation):
                topics = sent[str(report.cancelled_message_id)]
            else:
                topics = exchange.router.topics_for(
                    report.report_type, report.header.originator, report.header.releasable_to
                )
            sealed = exchange.sealer(report.header.originator).seal(report)
            for topic in topics:
                await producer.send_and_wait(
                    topic, sealed.value, key=sealed.key, headers=sealed.headers
                )
            sent[sealed.message_id] = topics
    finally:
        await producer.stop()

    all_topics = sorted({t for ts in sent.values() for t in ts})
    records = await read_topics(bootstrap, all_topics, expected=len(reports))
    assert len(records) == len(reports)
    by_id = {str(r.header.message_id): r for r in reports}
    for record in records:
        opened = exchange.opener.open(record.value, record.headers)
        assert opened.verification.status is SignatureStatus.VALID, opened.problem
        assert opened.decoded is not None
        original = by_id.pop(str(opened.decoded.message_id))
        assert opened.decoded.to_model() == original
        assert record.key == original.subject.encode()
        assert opened.text_header(H_TRACEPARENT)
        assert record.topic in sent[str(original.header.message_id)]
    assert by_id == {}
