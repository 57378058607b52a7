"""Helpers for gateway tests: a real gateway on loopback, and reading back what it wrote."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from kafka_support import assign_from_start

from services.bus import H_MESSAGE_ID, Exchange, Opened, Settings, freshen, load_examples
from services.gateway import GatewayServer, GatewayService, GatewaySettings

AGENCY = "LV-VRS"
PARTNER = "LT-VSAT"


@dataclass
class RunningGateway:
    service: GatewayService
    server: GatewayServer

    @property
    def url(self) -> str:
        return self.server.url


@asynccontextmanager
async def running_gateway(
    settings: Settings,
    gateway: GatewaySettings,
    exchange: Exchange,
    bootstrap: str | None = None,
) -> AsyncIterator[RunningGateway]:
    """A started gateway service behind a real uvicorn server on a free loopback port."""
    service = GatewayService(settings, gateway, exchange, bootstrap)
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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Landed:
    """A record read back from the broker, opened (decoded and verified)."""

    record: ConsumerRecord[bytes, bytes]
    opened: Opened

    @property
    def message_id(self) -> str:
        assert self.opened.decoded is not None
        return str(self.opened.decoded.message_id)

    @property
    def record_data(self) -> dict[str, Any]:
        assert self.opened.decoded is not None
        return self.opened.decoded.record


async def read_until(
    bootstrap: str,
    exchange: Exchange,
    topics: Iterable[str],
    message_ids: Iterable[str],
    timeout: float = 30.0,
) -> list[Landed]:
    """Read ``topics`` from the start until every message id in ``message_ids`` was seen.

    Returns every record read by then (the caller asserts on them); records on a
    partition before the last awaited one are all there, which lets a test
    prove that something was *not* written by awaiting a later record.
    """
    names = sorted(set(topics))
    wanted = set(message_ids)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        metadata_max_age_ms=300,
    )
    await consumer.start()
    landed: list[Landed] = []
    try:
        deadline = time.monotonic() + timeout
        await assign_from_start(consumer, names, deadline)
        seen: set[str] = set()
        while not wanted <= seen and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    opened = exchange.opener.open(record.value, record.headers)
                    landed.append(Landed(record, opened))
                    seen.add(dict(record.headers).get(H_MESSAGE_ID, b"").decode())
    finally:
        await consumer.stop()
    return landed


def make_gateway_settings(tokens_file: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "agency": AGENCY,
        "host": "127.0.0.1",
        "port": 0,
        "tokens_file": tokens_file,
        "publish_timeout": 3.0,
        "retry_after": 1,
        "shutdown_grace": 5.0,
        "ack_refresh_interval": 0.2,
        "ack_fetch_max_wait_ms": 50,
        "idempotency_window": timedelta(hours=1),
    }
    values.update(overrides)
    return GatewaySettings(**values)


_EXAMPLES = {e.name: e.report for e in load_examples()}


def example(name: str, **header: Any) -> dict[str, Any]:
    """An example report as an agency system would send it: fresh, no id, no created_at.

    ``header`` entries replace header fields (None removes one).
    """
    report = freshen([_EXAMPLES[name]])[0]
    body = report.model_dump(mode="json")
    body["type"] = report.report_type
    head = body["header"]
    for name_ in ("message_id", "created_at", "event_id"):
        head.pop(name_)
    head["links"] = []
    for key, value in header.items():
        if value is None:
            head.pop(key, None)
        else:
            head[key] = copy.deepcopy(value)
    return body


def incident(**header: Any) -> dict[str, Any]:
    """Latvia's incident report (feed topic), with a fresh message id unless given."""
    header.setdefault("message_id", str(uuid.uuid4()))
    return example("02-lv-incident-ladders", **header)
