"""Records whose signed content cannot be read: stored, flagged, never shown as proven."""

from __future__ import annotations

from audit_support import incident, producer_for, running_consumer
from polling import eventually

from services.audit import AuditSettings, RecordQuery
from services.bus import H_KEY_ID, H_SIGNATURE, Exchange, Settings


async def test_a_claim_signed_by_another_party_is_neither_valid_nor_listed_as_proven(
    settings: Settings, exchange: Exchange, audit_settings: AuditSettings, sqlite_url: str
) -> None:
    # The record: header LT-VSAT, PL-SG's own key, a writer schema OIX does not know.
    report, topic = incident(exchange)
    sealed = exchange.sealer("LT-VSAT").seal(report)
    unknown = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + sealed.value[10:]
    pl = exchange.signer("PL-SG")
    forged = [
        (k, {H_SIGNATURE: pl.sign(unknown), H_KEY_ID: pl.key_id_bytes}.get(k, v))
        for k, v in sealed.headers
    ]
    producer = await producer_for(settings)
    try:
        await producer.send_and_wait(topic, unknown, key=sealed.key, headers=forged, partition=0)
        await producer.send_and_wait(
            topic, sealed.value, key=sealed.key, headers=sealed.headers, partition=0
        )
    finally:
        await producer.stop()

    async with running_consumer(settings, audit_settings, exchange, sqlite_url) as run:
        store = run.consumer.store

        async def both_stored() -> bool:
            return len(await store.query(RecordQuery(topic=topic))) == 2

        await eventually(both_stored, "both records stored")
        stored = await store.query(RecordQuery(topic=topic))
        proven = await store.query(RecordQuery(originator="LT-VSAT"))
        proven_valid = await store.query(
            RecordQuery(originator="LT-VSAT", signature_status="valid")
        )
        claimed = await store.query(RecordQuery(originator="LT-VSAT", unproven=True))
    forged_row, genuine_row = stored
    assert forged_row.signature_status == "invalid"
    assert "PL-SG's key" in forged_row.signature_detail
    assert forged_row.unknown_schema
    assert forged_row.schema_fingerprint == "0123456789abcdef"
    assert not forged_row.trusted
    assert genuine_row.trusted
    assert [r.kafka_offset for r in proven] == [genuine_row.kafka_offset]
    assert [r.kafka_offset for r in proven_valid] == [genuine_row.kafka_offset]
    assert sorted(r.kafka_offset for r in claimed) == [0, 1]
