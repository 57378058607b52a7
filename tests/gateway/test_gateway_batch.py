"""POST /v1/reports:batch: JSON array or NDJSON, an answer per report, none held back."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
from gateway_support import (
    AGENCY,
    bearer,
    example,
    incident,
    make_gateway_settings,
    read_until,
    running_gateway,
)

from services.bus import Exchange, Settings


async def test_valid_reports_are_published_beside_invalid_ones(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    good = [incident() for _ in range(3)]
    bad_type = {"type": "Rumour"}
    bad_fields = incident(tlp="BLUE")
    foreign = incident(originator="PL-SG")
    batch = [good[0], bad_type, good[1], bad_fields, foreign, good[2]]
    answer = await client.post("/v1/reports:batch", json=batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (3, 3)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [(0, 201), (1, 400), (2, 201), (3, 422), (4, 403), (5, 201)]
    assert body["results"][3]["problem"]["issues"][0]["path"] == "header.tlp"
    assert "Retry-After" not in answer.headers

    ids = [r["header"]["message_id"] for r in good]
    assert [body["results"][i]["accepted"]["message_id"] for i in (0, 2, 5)] == ids
    topic = exchange.router.naming.feed(AGENCY, "incidents")
    landed = await read_until(bootstrap, exchange, [topic], ids)
    assert sorted(r.message_id for r in landed) == sorted(ids)
    assert all(r.opened.trusted for r in landed)
    for result in body["results"]:
        if result["status"] == 201:
            [record] = [r for r in landed if r.message_id == result["accepted"]["message_id"]]
            assert (record.record.partition, record.record.offset) == (
                result["accepted"]["partition"],
                result["accepted"]["offset"],
            )


async def test_ndjson_with_a_broken_line(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    good = [incident(), incident()]
    lines = [orjson.dumps(good[0]), b"{not json", b"", orjson.dumps(good[1])]
    answer = await client.post(
        "/v1/reports:batch",
        content=b"\n".join(lines) + b"\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 201]
    assert "line 2 is not valid JSON" in results[1]["problem"]["detail"]
    ids = [g["header"]["message_id"] for g in good]
    landed = await read_until(bootstrap, exchange, [results[0]["accepted"]["topic"]], ids)
    assert {r.message_id for r in landed} >= set(ids)


async def test_a_batch_may_correct_and_cancel_what_it_publishes(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    original = incident()
    original_id = original["header"]["message_id"]
    correction = example(
        "09-lv-incident-ladders-correction",
        message_id=str(uuid.uuid4()),
        links=[{"message_id": original_id, "relation": "SUPERSEDES"}],
    )
    request = example("03-lv-assistance-request", message_id=str(uuid.uuid4()))
    cancellation = {
        "type": "Cancellation",
        "header": {"message_id": str(uuid.uuid4())},
        "cancelled_message_id": request["header"]["message_id"],
        "reason": "WITHDRAWN",
    }
    answer = await client.post(
        "/v1/reports:batch", json=[original, request, correction, cancellation]
    )
    assert answer.status_code == 200, answer.text
    results = [r["accepted"] for r in answer.json()["results"]]
    assert all(results), answer.text
    first, asked, corrected, cancelled = results
    assert corrected["key"] == first["key"]
    assert (corrected["topic"], corrected["partition"]) == (first["topic"], first["partition"])
    assert corrected["offset"] > first["offset"]
    assert cancelled["key"] == asked["key"]
    assert cancelled["deliveries"][0]["topic"] == asked["topic"]
    assert cancelled["partition"] == asked["partition"]
    assert cancelled["offset"] > asked["offset"]
    ids = [r["message_id"] for r in results]
    landed = await read_until(bootstrap, exchange, {first["topic"], asked["topic"]}, ids)
    assert all(r.opened.trusted for r in landed)


async def test_refused_batches(client: httpx.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    empty = await client.post("/v1/reports:batch", json=[])
    assert empty.status_code == 400, empty.text
    not_array = await client.post("/v1/reports:batch", json=incident())
    assert not_array.status_code == 400, not_array.text
    broken = await client.post("/v1/reports:batch", content=b"[{", headers=json_type)
    assert broken.status_code == 400, broken.text
    keyed = await client.post(
        "/v1/reports:batch", json=[incident()], headers={"Idempotency-Key": "k-1"}
    )
    assert keyed.status_code == 400, keyed.text
    assert "message_id" in keyed.json()["detail"]
    media = await client.post(
        "/v1/reports:batch", content=b"x", headers={"content-type": "text/csv"}
    )
    assert media.status_code == 415, media.text


async def test_too_many_reports_is_413(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    gateway = make_gateway_settings(tokens_file, max_batch_items=2, max_batch_bytes=4096)
    async with (
        running_gateway(settings, gateway, exchange) as running,
        httpx.AsyncClient(base_url=running.url, headers=bearer(tokens[AGENCY])) as http,
    ):
        many = await http.post("/v1/reports:batch", json=[{"type": "x"}] * 3)
        padded = incident()
        padded["narrative"] = "x" * 4096
        large = await http.post("/v1/reports:batch", json=[padded])
    assert many.status_code == 413, many.text
    assert "at most 2" in many.json()["detail"]
    assert large.status_code == 413, large.text
