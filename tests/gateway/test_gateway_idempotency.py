"""A retry (same message id or Idempotency-Key) gets the first answer and writes nothing, also
after a gateway restart; a reused id or key for something else is a 409."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from gateway_support import (
    AGENCY,
    Landed,
    bearer,
    incident,
    make_gateway_settings,
    read_until,
    running_gateway,
)

from services.bus import Exchange, Settings


def copies(landed: list[Landed], message_id: str) -> int:
    return sum(1 for r in landed if r.message_id == message_id)


def same_partition_marker(report: dict) -> dict:
    """Another report with the same event id: the same key, so the same partition, after it."""
    return incident(event_id=report["header"]["message_id"])


async def test_a_retry_with_the_same_message_id_writes_once(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    report = incident()
    first = await client.post("/v1/reports", json=report)
    again = await client.post("/v1/reports", json=report)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == {**first.json(), "replayed": True}

    marker = same_partition_marker(report)
    marked = (await client.post("/v1/reports", json=marker)).json()
    assert marked["partition"] == first.json()["partition"]
    landed = await read_until(
        bootstrap, exchange, [marked["topic"]], [marker["header"]["message_id"]]
    )
    assert copies(landed, report["header"]["message_id"]) == 1


async def test_concurrent_retries_get_one_answer(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    report = incident()
    answers = await asyncio.gather(*(client.post("/v1/reports", json=report) for _ in range(8)))
    assert {a.status_code for a in answers} == {201}
    coordinates = {(a.json()["partition"], a.json()["offset"]) for a in answers}
    assert len(coordinates) == 1
    assert sum(not a.json()["replayed"] for a in answers) == 1

    marker = same_partition_marker(report)
    marked = (await client.post("/v1/reports", json=marker)).json()
    landed = await read_until(
        bootstrap, exchange, [marked["topic"]], [marker["header"]["message_id"]]
    )
    assert copies(landed, report["header"]["message_id"]) == 1


async def test_a_message_id_reused_for_another_report_is_409(client: httpx.AsyncClient) -> None:
    report = incident()
    assert (await client.post("/v1/reports", json=report)).status_code == 201
    changed = {**report, "narrative": "something else entirely"}
    answer = await client.post("/v1/reports", json=changed)
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["message_id"] == report["header"]["message_id"]
    assert problem["issues"][0]["path"] == "header.message_id"


async def test_idempotency_key_without_message_id(client: httpx.AsyncClient) -> None:
    report = incident(message_id=None)  # the gateway gives it one
    key = {"Idempotency-Key": f"lv-sys-{uuid.uuid4()}"}
    first = await client.post("/v1/reports", json=report, headers=key)
    again = await client.post("/v1/reports", json=report, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["replayed"] is True

    other = await client.post("/v1/reports", json=incident(message_id=None), headers=key)
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["detail"]

    bad_key = await client.post("/v1/reports", json=report, headers={"Idempotency-Key": "a b"})
    assert bad_key.status_code == 422, bad_key.text
    assert "Idempotency-Key" in bad_key.json()["issues"][0]["path"]


async def test_a_retry_after_a_gateway_restart_writes_once(
    settings: Settings,
    exchange: Exchange,
    bootstrap: str,
    tokens_file: Path,
    tokens: dict[str, str],
) -> None:
    gateway = make_gateway_settings(tokens_file)
    report = incident(message_id=None)
    key = {"Idempotency-Key": "restart-test-1"}
    by_id = incident()
    async with (
        running_gateway(settings, gateway, exchange) as first_run,
        httpx.AsyncClient(base_url=first_run.url, headers=bearer(tokens[AGENCY])) as http,
    ):
        first = (await http.post("/v1/reports", json=report, headers=key)).json()
        first_by_id = (await http.post("/v1/reports", json=by_id)).json()
    # A new gateway process on the same data directory: only the store remembers.
    async with (
        running_gateway(settings, gateway, exchange) as second_run,
        httpx.AsyncClient(base_url=second_run.url, headers=bearer(tokens[AGENCY])) as http,
    ):
        again = await http.post("/v1/reports", json=report, headers=key)
        again_by_id = await http.post("/v1/reports", json=by_id)
        marker = same_partition_marker(by_id)
        marked = (await http.post("/v1/reports", json=marker)).json()
    assert again.status_code == again_by_id.status_code == 201
    assert again.json() == {**first, "replayed": True}
    assert again_by_id.json() == {**first_by_id, "replayed": True}
    landed = await read_until(
        bootstrap,
        exchange,
        [marked["topic"]],
        [first["message_id"], marker["header"]["message_id"]],
    )
    assert copies(landed, first["message_id"]) == 1
    assert copies(landed, by_id["header"]["message_id"]) == 1


async def test_outside_the_window_a_known_message_id_is_not_written_again(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    gateway = make_gateway_settings(tokens_file, idempotency_window=timedelta(0))
    report = incident()
    async with (
        running_gateway(settings, gateway, exchange) as running,
        httpx.AsyncClient(base_url=running.url, headers=bearer(tokens[AGENCY])) as http,
    ):
        assert (await http.post("/v1/reports", json=report)).status_code == 201
        late = await http.post("/v1/reports", json=report)
    assert late.status_code == 409, late.text
    assert "before the idempotency window" in late.json()["detail"]
