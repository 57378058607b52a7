"""GET /v1/reports/{id}/status: where a report went, and partners' Acknowledgements from the bus."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from gateway_support import PARTNER, RunningGateway, example, incident
from polling import eventually

from services.bus import Exchange, Report, Settings, parse_report, start_producer
from services.gateway import Delivery, GatewaySettings, PartnerAck
from services.gateway._store import Store
from services.gateway.sdk import Publisher


def acknowledgement(message_id: str, status: str, releasable_to: list[str]) -> dict[str, Any]:
    return {
        "type": "Acknowledgement",
        "header": {"releasable_to": releasable_to},
        "acknowledged_message_id": message_id,
        "status": status,
        "note": f"{status.lower()} by the duty officer",
    }


async def test_status_shows_where_it_went_and_who_acknowledged(  # noqa: PLR0917  # fixtures
    client: httpx.AsyncClient,
    gateway: RunningGateway,
    settings: Settings,
    gateway_settings: GatewaySettings,
    exchange: Exchange,
    bootstrap: str,
) -> None:
    request = (
        await client.post(
            "/v1/reports", json=example("03-lv-assistance-request", message_id=str(uuid.uuid4()))
        )
    ).json()
    report = (await client.post("/v1/reports", json=incident())).json()

    before = await client.get(f"/v1/reports/{report['message_id']}/status")
    assert before.status_code == 200, before.text
    status = before.json()
    assert status["deliveries"] == report["deliveries"]
    assert status["acknowledgements"] == []
    assert status["awaiting"] == ["LT-VSAT", "PL-SG", "EE-PPA", "UA-DPSU"]

    async with Publisher(PARTNER, settings, gateway=gateway_settings, exchange=exchange) as lt:
        # A forged acknowledgement first, on the same partition as the genuine one.
        forged = exchange.sealer(PARTNER).seal(
            _ack_model(request["message_id"], "ACTIONED", ["LV-VRS"])
        )
        tampered = forged.value[:-1] + bytes([forged.value[-1] ^ 1])
        producer = await start_producer(settings, bootstrap)
        try:
            await producer.send_and_wait(
                exchange.router.naming.direct(PARTNER, "LV-VRS"),
                tampered,
                key=request["message_id"].encode(),
                headers=forged.headers,
            )
        finally:
            await producer.stop()
        genuine = await lt.publish(acknowledgement(request["message_id"], "RECEIVED", ["LV-VRS"]))
    assert genuine.topic == exchange.router.naming.direct(PARTNER, "LV-VRS")
    async with Publisher("PL-SG", settings, gateway=gateway_settings, exchange=exchange) as pl:
        readers = ["LT-VSAT", "LV-VRS", "EE-PPA", "UA-DPSU"]
        on_feed = await pl.publish(acknowledgement(report["message_id"], "READ", readers))
    assert on_feed.topic == exchange.router.naming.feed("PL-SG", "coordination")

    async def acknowledged(message_id: str) -> dict[str, Any] | None:
        body = (await client.get(f"/v1/reports/{message_id}/status")).json()
        return body if body["acknowledgements"] else None

    request_status = await eventually(lambda: acknowledged(request["message_id"]))
    [ack] = request_status["acknowledgements"]
    assert (ack["party"], ack["status"], ack["ack_message_id"]) == (
        PARTNER,
        "RECEIVED",
        genuine.message_id,
    )
    assert (ack["topic"], ack["partition"], ack["offset"]) == (
        genuine.topic,
        genuine.partition,
        genuine.offset,
    )
    assert request_status["awaiting"] == []  # the forged ACTIONED one was never believed

    report_status = await eventually(lambda: acknowledged(report["message_id"]))
    assert [(a["party"], a["status"]) for a in report_status["acknowledgements"]] == [
        ("PL-SG", "READ")
    ]
    assert report_status["awaiting"] == ["LT-VSAT", "EE-PPA", "UA-DPSU"]
    metrics = (await client.get("/metrics")).text
    assert "oix_gateway_partner_acknowledgements_total 2.0" in metrics


def _ack_model(message_id: str, status: str, releasable_to: list[str]) -> Report:
    body = acknowledgement(message_id, status, releasable_to)
    body["header"] |= {"originator": PARTNER, "classification": "SENSITIVE", "tlp": "AMBER"}
    return parse_report(body)


async def test_status_of_unknown_or_malformed_ids(client: httpx.AsyncClient) -> None:
    unknown = await client.get(f"/v1/reports/{uuid.uuid4()}/status")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["code"] == "not_found"
    malformed = await client.get("/v1/reports/not-a-uuid/status")
    assert malformed.status_code == 422, malformed.text
    assert malformed.json()["issues"][0]["path"] == "message_id"


async def test_status_of_a_message_published_through_the_sdk(
    client: httpx.AsyncClient,
    settings: Settings,
    gateway_settings: GatewaySettings,
    exchange: Exchange,
) -> None:
    # Both doors share one store: what the SDK published, the HTTP gateway knows.
    async with Publisher("LV-VRS", settings, gateway=gateway_settings, exchange=exchange) as lv:
        accepted = await lv.publish(incident())
    answer = await client.get(f"/v1/reports/{accepted.message_id.upper()}/status")
    assert answer.status_code == 200, answer.text
    assert answer.json()["offset"] == accepted.offset


async def test_only_recipients_acknowledgements_count_with_claimed_and_observed_time(
    client: httpx.AsyncClient,
    gateway: RunningGateway,
    settings: Settings,
    gateway_settings: GatewaySettings,
    exchange: Exchange,
) -> None:
    # Issue 8: an EE-PPA ack showed as ACTIONED on a report released only to
    # LT-VSAT, and the ack's own created_at was shown as when it was acknowledged.
    report = (await client.post("/v1/reports", json=incident(releasable_to=["LT-VSAT"]))).json()
    message_id = report["message_id"]
    async with Publisher("EE-PPA", settings, gateway=gateway_settings, exchange=exchange) as ee:
        stranger = await ee.publish(acknowledgement(message_id, "ACTIONED", ["LV-VRS"]))
    claimed = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    async with Publisher(PARTNER, settings, gateway=gateway_settings, exchange=exchange) as lt:
        ack = acknowledgement(message_id, "RECEIVED", ["LV-VRS"])
        ack["header"]["created_at"] = claimed.isoformat()  # before the report: only a claim
        recipient = await lt.publish(ack)

    store = gateway.service.pipeline.store

    def read_past(published: Any) -> bool:
        position = store.read_positions().get((published.topic, published.partition))
        return position is not None and position > published.offset

    await eventually(lambda: read_past(stranger) and read_past(recipient), "both acks read")
    status = (await client.get(f"/v1/reports/{message_id}/status")).json()
    [only] = status["acknowledgements"]
    assert (only["party"], only["status"]) == (PARTNER, "RECEIVED")
    assert status["awaiting"] == []
    assert datetime.fromisoformat(only["claimed_at"]) == claimed
    observed = datetime.fromisoformat(only["observed_at"])
    assert observed >= datetime.fromisoformat(report["accepted_at"])
    assert observed <= datetime.now(UTC)
    assert stranger.message_id not in {a.ack_message_id for a in store.acknowledgements(message_id)}


def test_a_store_from_before_observed_times_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "LV-VRS.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE acknowledgements (
            ack_message_id TEXT PRIMARY KEY, acknowledged_message_id TEXT NOT NULL,
            party TEXT NOT NULL, status TEXT NOT NULL, note TEXT, created_at TEXT NOT NULL,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL
        );
        INSERT INTO acknowledgements VALUES ('a1', 'm1', 'LT-VSAT', 'READ', NULL,
            '2026-01-01T00:00:00+00:00', 't', 0, 7);
        """
    )
    old.commit()
    old.close()
    store = Store.open(path)
    try:
        [before] = store.acknowledgements("m1")
        assert before.observed_at is None
        seen = PartnerAck(
            "a2",
            "m1",
            "LT-VSAT",
            "ACTIONED",
            None,
            "2026-01-01T01:00:00+00:00",
            Delivery("t", 0, 8),
            observed_at="2026-01-02T00:00:00+00:00",
        )
        store.record_acknowledgements([seen], {("t", 0): 9})
        assert [a.observed_at for a in store.acknowledgements("m1")] == [
            None,
            "2026-01-02T00:00:00+00:00",
        ]
    finally:
        store.close()
    store = Store.open(path)  # and opens again, the column there
    store.close()
