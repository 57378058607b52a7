"""Helpers of the liaison tests: running services, officers, publishing, raw records, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.bus import (
    Exchange,
    IncidentReport,
    Report,
    SealedReport,
    Settings,
    freshen,
    load_agreement,
    load_examples,
)
from services.gateway import Accepted, GatewayServer, GatewayService, GatewaySettings, Publisher
from services.liaison import LiaisonServer, LiaisonService, LiaisonSettings, add_officer

PG_ADMIN = os.environ.get("OIX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "correct horse battery staple"
EXAMPLES = {e.name: e.report for e in load_examples()}
SECTIONS = {
    code: party.border_sections
    for code, party in load_agreement(
        Path(__file__).resolve().parents[2] / "deploy" / "agreement.example.yaml"
    ).parties.items()
}
"""Each party's border sections in the example agreement (the gateway checks a report's)."""


def liaison_settings(tmp: Path, agency: str, **overrides: Any) -> LiaisonSettings:
    """Liaison settings for tests: quick group joins and batches, records opened in-process."""
    values: dict[str, Any] = {
        "agency": agency,
        "host": "127.0.0.1",
        "port": 0,
        "officers_file": tmp / "officers.yaml",
        "webhooks_file": tmp / "webhooks.yaml",
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "rebalance_timeout_ms": 2000,
        "metadata_max_age_ms": 500,
        "fetch_max_wait_ms": 20,
        "batch_max_ms": 5,
        "commit_interval_ms": 200,
        "reset_confirm_ms": 1000,
        "retry_max_backoff_ms": 500,
        "open_processes": 0,
        "stream_poll_ms": 200,
        "webhook_backoff_ms": 50,
        "webhook_max_backoff_ms": 200,
        "webhook_timeout_s": 2.0,
        "drain_timeout_s": 5.0,
    }
    values.update(overrides)
    return LiaisonSettings(**values)


@dataclass
class RunningLiaison:
    service: LiaisonService
    server: LiaisonServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def agency(self) -> str:
        return self.service.agency


@asynccontextmanager
async def running_liaison(
    settings: Settings, liaison: LiaisonSettings, exchange: Exchange
) -> AsyncIterator[RunningLiaison]:
    """A liaison service on a free loopback port, its store migrated, its group joined."""
    service = LiaisonService(settings, liaison, exchange, migrate_first=True)
    await service.start()
    try:
        server = LiaisonServer(service, host="127.0.0.1", port=0)
        await server.start()
        try:
            yield RunningLiaison(service, server)
        finally:
            await server.stop()
    finally:
        await service.stop()


@dataclass
class RunningGateway:
    service: GatewayService
    server: GatewayServer

    @property
    def url(self) -> str:
        return self.server.url


@asynccontextmanager
async def running_gateway(
    settings: Settings, exchange: Exchange, agency: str, tokens_file: Path
) -> AsyncIterator[RunningGateway]:
    """A gateway of ``agency`` on a free port (its token must be in ``tokens_file``)."""
    gateway = GatewaySettings(
        agency=agency,
        host="127.0.0.1",
        port=0,
        tokens_file=tokens_file,
        publish_timeout=5.0,
        shutdown_grace=2.0,
        ack_refresh_interval=0.2,
        ack_fetch_max_wait_ms=50,
    )
    service = GatewayService(settings, gateway, exchange)
    await service.start()
    try:
        server = GatewayServer(service, host="127.0.0.1", port=0)
        await server.start()
        try:
            yield RunningGateway(service, server)
        finally:
            await server.stop()
    finally:
        await service.stop()


@asynccontextmanager
async def signed_in(
    url: str, officers_file: Path, agency: str, name: str = "anna"
) -> AsyncIterator[httpx.AsyncClient]:
    """An officer of ``agency`` (added to the file), signed in with a bearer token."""
    add_officer(officers_file, agency, name, PASSWORD)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        response = await client.post("/v1/tokens", json={"name": name, "password": PASSWORD})
        assert response.status_code == 201, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        yield client


def report(name: str, **header: Any) -> Report:
    """An example report, fresh (new ids, present times), its header changed as given."""
    fresh = freshen([EXAMPLES[name]])[0]
    data = fresh.model_dump()
    data["header"].update(header)
    data["header"]["links"] = header.get("links", [])
    if header.get("originator", fresh.header.originator) != fresh.header.originator:
        _sections_of(data, SECTIONS[header["originator"]])
    return type(fresh).model_validate(data)


def _sections_of(data: dict[str, Any], ours: list[str]) -> None:
    """Put a report another party wrote on its new originator's own border sections."""
    if isinstance(data.get("location"), dict) and data["location"].get("border_section"):
        data["location"]["border_section"] = ours[0]
    for section, code in zip(data.get("sections") or [], ours, strict=False):
        section["border_section"] = code


def lt_incident(releasable_to: Sequence[str], **header: Any) -> IncidentReport:
    """Lithuania's incident report released to ``releasable_to``."""
    found = report("06-lt-incident-wetsuits-neman", releasable_to=list(releasable_to), **header)
    assert isinstance(found, IncidentReport)
    return found


@asynccontextmanager
async def publishers(
    settings: Settings, exchange: Exchange, parties: Iterable[str]
) -> AsyncIterator[dict[str, Publisher]]:
    """The SDK publisher of each party: the gateway's own pipeline (routing, signing)."""
    found: dict[str, Publisher] = {}
    try:
        for party in parties:
            found[party] = Publisher(party, settings, exchange=exchange)
            await found[party].start()
        yield found
    finally:
        for publisher in found.values():
            await publisher.close()


async def publish(publisher: Publisher, report: Report) -> Accepted:
    accepted = await publisher.publish(report)
    assert isinstance(accepted, Accepted)
    return accepted


async def produce_raw(
    bootstrap: str,
    topic: str,
    records: Sequence[SealedReport | tuple[bytes, list[tuple[str, bytes]]]],
    partitions: Sequence[int] | None = None,
) -> None:
    """Write records as they are (forged, replayed, misrouted): no gateway to stop them.

    ``partitions``: where each goes, in turn (by default, by key).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        for index, item in enumerate(records):
            if isinstance(item, SealedReport):
                value, headers, key = item.value, item.headers, item.key
            else:
                (value, headers), key = item, b"raw"
            partition = None if not partitions else partitions[index % len(partitions)]
            await (await producer.send(topic, value, key=key, headers=headers, partition=partition))
    finally:
        await producer.stop()


async def pg_admin(statement: str) -> None:
    try:
        connection = await asyncpg.connect(PG_ADMIN)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is needed for this test: {exc}")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def pg_database_url(database: str) -> str:
    rest = PG_ADMIN.split("://", 1)[1]
    credentials, _, location = rest.rpartition("@")
    return f"postgresql://{credentials}@{location.split('/', 1)[0]}/{database}"


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (its postgresql:// URL), dropped afterwards."""
    name = f"oix_liaison_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield pg_database_url(name)
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
