"""Webhooks against a real local HTTP receiver: signed, at least once, deduplicated by id,
dead-lettered when the receiver never answers 2xx, retried by an officer, and never carrying
what the report's TLP or handling code keeps from the receiving system.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import uvicorn
from liaison_support import (
    liaison_settings,
    lt_incident,
    publish,
    publishers,
    running_liaison,
    signed_in,
)
from polling import eventually
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.bus import Exchange, Settings, free_port
from services.liaison import add_endpoint

LT, LV = "LT-VSAT", "LV-VRS"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]


@dataclass
class Receiver:
    """An agency system: fails the first ``failures`` attempts of each delivery."""

    secret: str = ""
    failures: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, dict] = field(default_factory=dict)
    bad_signatures: int = 0

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        delivery = request.headers["OIX-Webhook-Id"]
        # The verification recipe of docs/liaison.md.
        timestamp = request.headers["OIX-Webhook-Timestamp"]
        expected = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        if (
            not hmac.compare_digest(
                request.headers["OIX-Webhook-Signature"], f"v1={expected.hexdigest()}"
            )
            or abs(time.time() - int(timestamp)) > 300
        ):
            self.bad_signatures += 1
            return Response(status_code=401)
        self.attempts[delivery] = self.attempts.get(delivery, 0) + 1
        if self.attempts[delivery] <= self.failures:
            return Response(status_code=503)
        self.accepted.setdefault(delivery, orjson.loads(body))  # dedupe by id
        return Response(status_code=204)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.receive, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the receiver to listen")
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        await task


async def test_deliveries_are_signed_retried_and_deduplicated_and_follow_tlp_and_handling(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    own, police = Receiver(failures=2), Receiver(failures=0)
    amber = lt_incident(ALL_READERS)
    red = lt_incident(ALL_READERS, tlp="RED")
    no_onward = lt_incident(ALL_READERS, tlp="GREEN", handling=["NO_ONWARD"])
    green = lt_incident(ALL_READERS, tlp="GREEN", handling=["PURPOSE_ONLY"])
    async with serving(own) as own_url, serving(police) as police_url:
        hooks = tmp_path / "webhooks.yaml"
        own.secret = add_endpoint(hooks, LV, "ops", own_url, owner=None, report_types=[])
        police.secret = add_endpoint(
            hooks, LV, "police", police_url, owner="LV-VP", report_types=[]
        )
        async with (
            running_liaison(settings, liaison_settings(tmp_path, LV), exchange) as lv,
            publishers(settings, exchange, [LT]) as pub,
            signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
        ):
            for item in (amber, red, no_onward, green):
                await publish(pub[LT], item)
            wanted = {str(r.header.message_id) for r in (amber, no_onward, green)}

            def own_done() -> bool:
                return {b["message_id"] for b in own.accepted.values()} == wanted

            await eventually(own_done, lambda: f"own system to get {wanted}: {own.accepted}")
            await eventually(lambda: police.accepted, "the police system to get one")
            endpoints = {e["name"]: e for e in (await client.get("/v1/webhooks")).json()}
            await eventually(lambda: _delivered(client, 4), "four deliveries recorded as delivered")
    assert own.bad_signatures == police.bad_signatures == 0
    assert sorted(own.attempts.values()) == [3, 3, 3]  # two failures, then delivered, once
    assert len(own.accepted) == 3
    [only] = police.accepted.values()
    assert only["message_id"] == str(green.header.message_id)  # not AMBER, RED or NO_ONWARD
    assert only["report"]["header"]["tlp"] == "GREEN"
    assert only["exercise"] is False
    assert set(endpoints) == {"ops", "police"}
    assert "secret" not in endpoints["ops"]


async def _delivered(client, count: int) -> bool:
    deliveries = (
        await client.get("/v1/webhooks/deliveries", params={"status": "delivered"})
    ).json()
    return len(deliveries) == count


async def test_a_receiver_that_never_succeeds_ends_in_the_dead_letter_list_and_can_be_retried(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    receiver = Receiver(failures=10**6)
    item = lt_incident(ALL_READERS)
    async with serving(receiver) as url:
        receiver.secret = add_endpoint(
            tmp_path / "webhooks.yaml", LV, "ops", url, owner=None, report_types=[]
        )
        lv_settings = liaison_settings(tmp_path, LV, webhook_max_attempts=3)
        async with (
            running_liaison(settings, lv_settings, exchange) as lv,
            publishers(settings, exchange, [LT]) as pub,
            signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
        ):
            await publish(pub[LT], item)

            async def dead() -> list[dict]:
                return (
                    await client.get("/v1/webhooks/deliveries", params={"status": "dead"})
                ).json()

            [letter] = await eventually(dead, "a dead letter")
            assert letter["attempts"] == 3
            assert letter["message_id"] == str(item.header.message_id)
            assert letter["last_error"] == "HTTP 503"
            alerts = (await client.get("/v1/alerts")).json()["items"]
            assert [a["kind"] for a in alerts] == ["webhook_dead_letter"]
            receiver.failures = 0
            retried = await client.post(f"/v1/webhooks/deliveries/{letter['delivery_id']}/retry")
            assert retried.status_code == 202
            await eventually(lambda: receiver.accepted, "the retried delivery")
            assert (
                await client.get("/v1/webhooks/deliveries", params={"status": "dead"})
            ).json() == []
    assert receiver.attempts[letter["delivery_id"]] == 4
