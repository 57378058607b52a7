"""A broker that comes back wrong: no 201 until it is verified, lost reports are findings.

The embedded broker (tansu) keeps everything in memory; killed and started
again on its port, it has no topics, acknowledges writes to the topics it
lost and hands their coordinates out again once they are created (issue 8).
These tests kill it with SIGKILL, or delete and re-create a topic under a
connected gateway (what an operator or an unclean leader election does on
Kafka), and check what the gateway answers and what is in the log.
"""

from __future__ import annotations

import sqlite3
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from gateway_support import AGENCY, bearer, incident, make_gateway_settings, read_until
from gateway_support import running_gateway as gateway_on
from polling import eventually

from services.bus import EmbeddedBroker, Exchange, Settings, ensure_topics, free_port
from services.gateway import create_token
from services.gateway._store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.timeout(120)
PROBLEM = "application/problem+json"


async def _post(http: httpx.AsyncClient, report: dict[str, Any]) -> httpx.Response:
    answer = await http.post("/v1/reports", json=report)
    assert answer.status_code in {201, 503}, answer.text
    return answer


async def _accepted(http: httpx.AsyncClient, report: dict[str, Any]) -> httpx.Response | None:
    """Post once: the answer on 201, None on 503 (the client retries)."""
    answer = await _post(http, report)
    return answer if answer.status_code == 201 else None


async def _at_coordinates(
    bootstrap: str, exchange: Exchange, answers: list[httpx.Response]
) -> dict[tuple[str, int, int], str]:
    """The message id the log holds at each answer's coordinates (read back from the broker)."""
    ids = [a.json()["message_id"] for a in answers]
    landed = await read_until(bootstrap, exchange, {a.json()["topic"] for a in answers}, ids)
    held = {(r.record.topic, r.record.partition, r.record.offset): r.message_id for r in landed}
    return {
        (a.json()["topic"], a.json()["partition"], a.json()["offset"]): held.get(
            (a.json()["topic"], a.json()["partition"], a.json()["offset"]), "nothing"
        )
        for a in answers
    }


def _where(answer: httpx.Response) -> tuple[str, int, int]:
    body = answer.json()
    return (body["topic"], body["partition"], body["offset"])


@pytest.mark.slow
async def test_a_restarted_broker_gets_503_until_verified_and_old_ids_are_published_again(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port)
    await broker.start()
    # No periodic look: the gateway must notice the restart on the acknowledgement itself.
    gateway = make_gateway_settings(
        tokens_file, retry_after=2, broker_check_interval=3600, track_acknowledgements=False
    )
    try:
        async with (
            gateway_on(settings, gateway, exchange, broker.bootstrap) as running,
            httpx.AsyncClient(
                base_url=running.url, headers=bearer(tokens[AGENCY]), timeout=30.0
            ) as http,
        ):
            before = [incident() for _ in range(8)]
            first = [await _post(http, r) for r in before]
            assert {a.status_code for a in first} == {201}
            topic = first[0].json()["topic"]

            broker.kill()
            broker = EmbeddedBroker(port=port)
            await broker.start()
            # The restarted broker has no topics and acknowledges writes to them anyway.
            report = incident()
            refused = await _post(http, report)
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == PROBLEM
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["message_id"] == report["header"]["message_id"]
            # Retried as the 503 says, until the gateway verified the broker (the
            # topic re-created with the 4 partitions it had).
            after = await eventually(lambda: _accepted(http, report), timeout=30.0)
            assert (await http.get("/readyz")).status_code == 200
            assert after.json()["replayed"] is False
            assert await _partitions(broker.bootstrap, topic) == 4

            # A retry of a report accepted before the reset: its coordinates name a
            # log that no longer exists, so it is published again, with new ones.
            again = await _post(http, before[0])
            assert again.status_code == 201, again.text
            assert again.json()["replayed"] is False
            assert again.json()["message_id"] == before[0]["header"]["message_id"]
            more = [await _post(http, incident()) for _ in range(4)]
            assert {a.status_code for a in more} == {201}
            answers = [after, again, *more]
            held = await _at_coordinates(broker.bootstrap, exchange, answers)
            # Every 201 since the restart names the record that is there.
            assert held == {_where(a): a.json()["message_id"] for a in answers}
            # A second retry is a replay of the new answer.
            replay = await _post(http, before[0])
            assert replay.json()["replayed"] is True
            assert _where(replay) == _where(again)

            findings = (await http.get("/v1/findings")).json()
            assert findings["broker_epoch"] == 1
            # The killed broker took its log with it: said per partition written to,
            # naming the last report acknowledged there (none was reused).
            _log_lost_per_partition(findings["findings"], first)
            metrics = (await http.get("/metrics")).text
            assert "oix_gateway_broker_epoch 1.0" in metrics
            assert "oix_gateway_broker_verified 1.0" in metrics
            assert "oix_gateway_reports_republished_total 1.0" in metrics
    finally:
        await broker.stop()


async def test_coordinates_acknowledged_twice_are_a_finding_and_the_lost_report_published_again(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    assert settings.bootstrap is not None
    gateway = make_gateway_settings(
        tokens_file, broker_check_interval=3600, track_acknowledgements=False
    )
    async with (
        gateway_on(settings, gateway, exchange) as running,
        httpx.AsyncClient(
            base_url=running.url, headers=bearer(tokens[AGENCY]), timeout=30.0
        ) as http,
    ):
        lost_report = incident()
        lost = await _post(http, lost_report)
        assert lost.status_code == 201
        topic, partition, offset = _where(lost)
        # The log is replaced under the gateway's open connection: deleted and
        # created again, as an operator (or an unclean leader election) does.
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await eventually(lambda: _gone(admin, topic))
            await admin.create_topics([NewTopic(topic, 4, 1)])
        finally:
            await admin.close()
        # Same event, same key, same partition: offset 0 again.
        taker = incident(event_id=lost.json()["key"])
        took = await _post(http, taker)
        assert took.status_code == 201, took.text
        assert _where(took) == (topic, partition, offset)

        body = (await http.get("/v1/findings")).json()
        assert len(body["findings"]) == 1, body
        finding = body["findings"][0]
        assert finding["kind"] == "coordinates_reused"
        assert finding["lost_message_id"] == lost.json()["message_id"]
        assert finding["by_message_id"] == took.json()["message_id"]
        assert (finding["topic"], finding["partition"], finding["offset"]) == (
            topic,
            partition,
            offset,
        )
        assert lost.json()["message_id"] in finding["detail"]
        assert (
            'oix_gateway_findings_total{kind="coordinates_reused"} 1.0'
            in (await http.get("/metrics")).text
        )
        assert (await http.get("/v1/findings")).status_code == 200
        assert (await http.get("/v1/findings", headers={"Authorization": ""})).status_code == 401

        # The client retries the lost report: published again, at new coordinates.
        retried = await eventually(lambda: _accepted(http, lost_report), timeout=30.0)
        assert retried.json()["replayed"] is False
        assert _where(retried) != (topic, partition, offset)
        held = await _at_coordinates(settings.bootstrap, exchange, [took, retried])
        assert held == {
            _where(took): took.json()["message_id"],
            _where(retried): lost.json()["message_id"],
        }
        store_path = running.service.pipeline.store.path
    # Persisted: the finding is in the store after the gateway stopped.
    store = Store.open(store_path)
    try:
        kept = store.findings()
    finally:
        store.close()
    assert [(f.lost_message_id, f.by_message_id) for f in kept] == [
        (lost.json()["message_id"], took.json()["message_id"])
    ]


def _log_lost_per_partition(findings: list[dict[str, Any]], first: list[httpx.Response]) -> None:
    lost = {(f["topic"], f["partition"]): f for f in findings}
    assert {f["kind"] for f in lost.values()} == {"log_lost"}
    last: dict[tuple[str, int], tuple[int, str]] = {}
    for answer in first:
        t, p, o = _where(answer)
        if o >= last.get((t, p), (-1, ""))[0]:
            last[(t, p)] = (o, answer.json()["message_id"])
    assert set(lost) == set(last)
    for where, (offset, message_id) in last.items():
        assert (lost[where]["offset"], lost[where]["lost_message_id"]) == (offset, message_id)
        assert lost[where]["broker_epoch"] == 0


async def _gone(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described[0]["partitions"])


_SCHEMA_1 = """
CREATE TABLE published (
    message_id TEXT PRIMARY KEY, report_type TEXT NOT NULL, event_id TEXT NOT NULL,
    kafka_key TEXT NOT NULL, deliveries TEXT NOT NULL, releasable_to TEXT NOT NULL,
    fingerprint TEXT NOT NULL, trace_id TEXT, accepted_at REAL NOT NULL
);
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY, message_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL
);
PRAGMA user_version=1;
"""


def test_a_store_of_schema_1_is_upgraded_and_its_coordinates_indexed(tmp_path: Path) -> None:
    path = tmp_path / "gateway" / "LV-VRS.db"
    path.parent.mkdir(mode=0o700)
    message_id = str(uuid.uuid4())
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_1)
        db.execute(
            "INSERT INTO published VALUES (?, 'IncidentReport', ?, 'k', ?, '[\"LT-VSAT\"]', "
            "'f', NULL, 1796000000.0)",
            (message_id, str(uuid.uuid4()), '[["t.feed", 2, 41]]'),
        )
    store = Store.open(path)
    try:
        published = store.published(message_id)
        assert published is not None
        assert published.broker_epoch == 0
        assert published.lost is False
        assert store.last_offsets(0) == {("t.feed", 2): 41}
        assert store.findings() == []
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_new_token_file_is_made_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "secrets" / "tokens.yaml"
    create_token(path, AGENCY, "lv-system")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700


@pytest.mark.slow
async def test_without_re_creation_a_lost_topic_is_named_until_it_is_provisioned(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port)
    await broker.start()
    gateway = make_gateway_settings(
        tokens_file,
        broker_check_interval=3600,
        recreate_topics=False,
        track_acknowledgements=False,
    )
    own = settings.model_copy(update={"bootstrap": broker.bootstrap})
    try:
        async with (
            gateway_on(own, gateway, exchange, broker.bootstrap) as running,
            httpx.AsyncClient(
                base_url=running.url, headers=bearer(tokens[AGENCY]), timeout=30.0
            ) as http,
        ):
            first = await _post(http, incident())
            assert first.status_code == 201
            topic = first.json()["topic"]
            broker.kill()
            broker = EmbeddedBroker(port=port)
            await broker.start()
            report = incident()
            assert (await _post(http, report)).status_code == 503

            async def names_the_topic() -> bool:
                ready = await http.get("/readyz")
                return ready.status_code == 503 and "oix provision" in ready.text

            await eventually(names_the_topic, "/readyz to name the missing topic")
            refused = await _post(http, report)
            assert refused.status_code == 503
            assert topic in refused.json()["detail"]
            assert "oix provision" in refused.json()["detail"]
            await ensure_topics(own, broker.bootstrap, [topic], 4)
            accepted = await eventually(lambda: _accepted(http, report), timeout=30.0)
            held = await _at_coordinates(broker.bootstrap, exchange, [accepted])
            assert held == {_where(accepted): report["header"]["message_id"]}
    finally:
        await broker.stop()
