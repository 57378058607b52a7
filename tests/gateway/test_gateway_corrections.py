"""Corrections and cancellations follow their original: same key, same partition, after it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from gateway_support import PARTNER, example, incident, read_until

from services.bus import Exchange, Settings
from services.gateway import GatewaySettings, ReportRejectedError
from services.gateway.sdk import Publisher


def correction_of(message_id: str, **header: Any) -> dict[str, Any]:
    return example(
        "09-lv-incident-ladders-correction",
        message_id=str(uuid.uuid4()),
        links=[{"message_id": message_id, "relation": "SUPERSEDES"}],
        **header,
    )


async def test_a_correction_is_keyed_and_ordered_like_its_original(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    original = (await client.post("/v1/reports", json=incident())).json()
    # A new event id would give another key; the gateway keys it like the original anyway.
    corrected = correction_of(original["message_id"], event_id=str(uuid.uuid4()))
    answer = await client.post("/v1/reports", json=corrected)
    assert answer.status_code == 201, answer.text
    fixed = answer.json()
    assert fixed["key"] == original["key"]
    assert (fixed["topic"], fixed["partition"]) == (original["topic"], original["partition"])
    assert fixed["offset"] > original["offset"]
    landed = await read_until(
        bootstrap, exchange, [fixed["topic"]], [original["message_id"], fixed["message_id"]]
    )
    [record] = [r for r in landed if r.message_id == fixed["message_id"]]
    assert record.record.key == original["key"].encode()
    assert record.opened.trusted


async def test_superseding_an_unknown_message_is_refused(client: httpx.AsyncClient) -> None:
    unknown = str(uuid.uuid4())
    answer = await client.post("/v1/reports", json=correction_of(unknown))
    assert answer.status_code == 422, answer.text
    [issue] = answer.json()["issues"]
    assert issue["path"] == "header.links[0].message_id"
    assert unknown in issue["reason"]
    assert "only its originator may supersede" in issue["reason"]


async def test_superseding_or_cancelling_another_agencys_message_is_refused(
    client: httpx.AsyncClient,
    settings: Settings,
    gateway_settings: GatewaySettings,
    exchange: Exchange,
    bootstrap: str,
) -> None:
    async with Publisher(PARTNER, settings, gateway=gateway_settings, exchange=exchange) as lt:
        theirs = await lt.publish(example("06-lt-incident-wetsuits-neman"))
    answer = await client.post("/v1/reports", json=correction_of(theirs.message_id))
    assert answer.status_code == 422, answer.text
    assert answer.json()["issues"][0]["path"] == "header.links[0].message_id"
    cancel = {
        "type": "Cancellation",
        "header": {},
        "cancelled_message_id": theirs.message_id,
        "reason": "ENTERED_IN_ERROR",
    }
    refused = await client.post("/v1/reports", json=cancel)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issues"][0]["path"] == "cancelled_message_id"


async def test_a_correction_with_another_releasability_is_refused(
    client: httpx.AsyncClient,
) -> None:
    original = (await client.post("/v1/reports", json=incident())).json()
    narrower = correction_of(original["message_id"], releasable_to=[PARTNER])
    answer = await client.post("/v1/reports", json=narrower)
    assert answer.status_code == 422, answer.text
    [issue] = answer.json()["issues"]
    assert issue["path"] == "header.releasable_to"
    assert "cancel the original" in issue["reason"]


async def test_a_cancellation_goes_where_its_original_went(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    request = example("03-lv-assistance-request", message_id=str(uuid.uuid4()))
    original = (await client.post("/v1/reports", json=request)).json()
    assert original["topic"].endswith(f"direct.{PARTNER}")
    cancel = {
        "type": "Cancellation",
        "header": {},  # releasable_to left out: the original's
        "cancelled_message_id": original["message_id"],
        "reason": "WITHDRAWN",
    }
    answer = await client.post("/v1/reports", json=cancel)
    assert answer.status_code == 201, answer.text
    done = answer.json()
    assert [d["topic"] for d in done["deliveries"]] == [original["topic"]]
    assert (done["key"], done["partition"]) == (original["key"], original["partition"])
    landed = await read_until(bootstrap, exchange, [done["topic"]], [done["message_id"]])
    [record] = [r for r in landed if r.message_id == done["message_id"]]
    assert record.record_data["header"]["releasable_to"] == [PARTNER]

    wrong = {**cancel, "header": {"releasable_to": ["PL-SG"]}}
    refused = await client.post("/v1/reports", json=wrong)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issues"][0]["path"] == "header.releasable_to"

    unknown = {**cancel, "cancelled_message_id": str(uuid.uuid4())}
    refused = await client.post("/v1/reports", json=unknown)
    assert refused.status_code == 422, refused.text
    assert "only its originator may cancel" in refused.json()["issues"][0]["reason"]


async def test_the_sdk_refuses_the_same_way(
    settings: Settings, gateway_settings: GatewaySettings, exchange: Exchange
) -> None:
    async with Publisher("LV-VRS", settings, gateway=gateway_settings, exchange=exchange) as lv:
        with pytest.raises(ReportRejectedError) as refused:
            await lv.publish(correction_of(str(uuid.uuid4())))
    assert refused.value.status == 422
    assert refused.value.issues[0].path == "header.links[0].message_id"
