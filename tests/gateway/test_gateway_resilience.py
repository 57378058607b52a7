"""The broker frozen, killed and restarted under a running gateway; a graceful shutdown.

These tests run their own embedded broker on a fixed port (not the session's
broker) so they can stop it. The embedded broker (tansu) keeps everything in
memory: a restart is a full reset, topics and data gone. So what was accepted
before the kill is checked on the first broker before killing it, and what is
accepted after the restart is checked on the second.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
from gateway_support import (
    AGENCY,
    PARTNER,
    bearer,
    incident,
    make_gateway_settings,
    read_until,
    running_gateway,
)
from polling import eventually

from services.bus import EmbeddedBroker, Exchange, Settings, free_port
from services.gateway import GatewaySettings
from services.gateway.sdk import Publisher

pytestmark = pytest.mark.slow


def _pid(broker: EmbeddedBroker) -> int:
    assert broker._process is not None
    return broker._process.pid


async def _acknowledge(
    settings: Settings,
    gateway: GatewaySettings,
    exchange: Exchange,
    bootstrap: str,
    message_id: str,
    *statuses: str,
) -> None:
    async with Publisher(
        PARTNER, settings, gateway=gateway, exchange=exchange, bootstrap=bootstrap
    ) as lt:
        for status in statuses:
            await lt.publish(
                {
                    "type": "Acknowledgement",
                    "header": {"releasable_to": [AGENCY]},
                    "acknowledged_message_id": message_id,
                    "status": status,
                },
            )


async def _ack_statuses(http: httpx.AsyncClient, message_id: str) -> list[str]:
    body = (await http.get(f"/v1/reports/{message_id}/status")).json()
    return sorted(a["status"] for a in body["acknowledgements"])


async def test_broker_killed_and_restarted(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    port = free_port()
    first_broker = EmbeddedBroker(port=port)
    await first_broker.start()
    gateway = make_gateway_settings(tokens_file, publish_timeout=1.5, retry_after=2)
    bootstrap = first_broker.bootstrap
    second_broker = EmbeddedBroker(port=port)
    try:
        async with (
            running_gateway(settings, gateway, exchange, bootstrap) as running,
            httpx.AsyncClient(
                base_url=running.url, headers=bearer(tokens[AGENCY]), timeout=30.0
            ) as http,
        ):
            # Before: accepted means on the topic, signed.
            before = [incident() for _ in range(10)]
            answers = [await http.post("/v1/reports", json=r) for r in before]
            assert {a.status_code for a in answers} == {201}
            topic = answers[0].json()["topic"]
            landed = await read_until(
                bootstrap, exchange, [topic], [r["header"]["message_id"] for r in before]
            )
            assert {r.message_id for r in landed} == {r["header"]["message_id"] for r in before}
            assert all(r.opened.trusted for r in landed)
            # Two acknowledgements: the gateway reads up to offset 2 of that partition.
            acked = before[0]["header"]["message_id"]
            await _acknowledge(settings, gateway, exchange, bootstrap, acked, "RECEIVED", "READ")
            await eventually(lambda: _has_status(http, acked, "READ"))
            assert await _ack_statuses(http, acked) == ["READ", "RECEIVED"]

            first_broker.kill()
            # During the outage: a bounded wait, then 503 with Retry-After; never a 2xx.
            during = [incident() for _ in range(6)]
            refused = await asyncio.gather(*(http.post("/v1/reports", json=r) for r in during))
            for report, answer in zip(during, refused, strict=True):
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "2"
                assert answer.json()["message_id"] == report["header"]["message_id"]
            batch = await http.post("/v1/reports:batch", json=[incident(), incident()])
            assert batch.status_code == 200
            assert {r["status"] for r in batch.json()["results"]} == {503}
            assert batch.headers["retry-after"] == "2"
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert "does not answer" in not_ready.json()["problems"][0]

            # A fresh broker on the same port: an empty log, offsets from 0 again.
            await second_broker.start()
            await eventually(lambda: _ready(http), timeout=30.0)
            # Retried with the same message ids, as the 503 said, until accepted.
            for report in during:
                await eventually(lambda report=report: _accepted(http, report), timeout=30.0)
            after = [incident() for _ in range(10)]
            for report in after:
                await eventually(lambda report=report: _accepted(http, report), timeout=30.0)
            ids = [r["header"]["message_id"] for r in during + after]
            landed = await read_until(bootstrap, exchange, [topic], ids)
            on_topic = {r.message_id for r in landed}
            assert set(ids) <= on_topic
            assert all(r.opened.trusted for r in landed)

            # The gateway read up to offset 2 on a partition that now holds one
            # record: it must notice the log went backwards and read it again.
            await _acknowledge(settings, gateway, exchange, bootstrap, acked, "ACTIONED")
            await eventually(lambda: _has_status(http, acked, "ACTIONED"), timeout=30.0)
    finally:
        await second_broker.stop()
        await first_broker.stop()


async def _accepted(http: httpx.AsyncClient, report: dict) -> bool:
    """Post once: True on 201; False on 503 (the client retries); anything else fails."""
    answer = await http.post("/v1/reports", json=report)
    assert answer.status_code in {201, 503}, answer.text
    return answer.status_code == 201


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _has_status(http: httpx.AsyncClient, message_id: str, status: str) -> bool:
    return status in await _ack_statuses(http, message_id)


async def test_shutdown_answers_and_writes_what_is_in_flight(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    gateway = make_gateway_settings(tokens_file, publish_timeout=20.0, shutdown_grace=20.0)
    async with EmbeddedBroker() as broker:
        running_context = running_gateway(settings, gateway, exchange, broker.bootstrap)
        running = await running_context.__aenter__()
        try:
            async with httpx.AsyncClient(
                base_url=running.url, headers=bearer(tokens[AGENCY]), timeout=60.0
            ) as http:
                warm = await http.post("/v1/reports", json=incident())
                assert warm.status_code == 201
                topic = warm.json()["topic"]
                # A frozen broker keeps the batch in flight for as long as the test needs.
                os.kill(_pid(broker), signal.SIGSTOP)
                try:
                    batch = [incident() for _ in range(50)]
                    posting = asyncio.create_task(http.post("/v1/reports:batch", json=batch))
                    await eventually(lambda: running.service.pipeline.in_flight == len(batch))
                    stopping = asyncio.create_task(running.server.stop())
                    await eventually(lambda: _refuses_connections(running.url))
                finally:
                    os.kill(_pid(broker), signal.SIGCONT)
                answer = await posting
                await stopping
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == len(batch)
        finally:
            await running_context.__aexit__(None, None, None)
        ids = [r["header"]["message_id"] for r in batch]
        landed = await read_until(broker.bootstrap, exchange, [topic], ids)
        assert set(ids) <= {r.message_id for r in landed}


async def _refuses_connections(url: str) -> bool:
    """No new request is served: refused, or (accepted just before) closed unanswered."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=1.0) as fresh:
            await fresh.get("/healthz")
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return True
    return False
