"""Hostile input on every body-parsing path: deep nesting, huge strings, never a 500.

A report nested deeper than orjson can write (255 levels) used to crash the
request fingerprint with ``500 text/plain``, and in a batch took the whole
answer down while the good reports were already on the bus.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from gateway_support import AGENCY, RunningGateway, incident, read_until

from services.bus import Exchange

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"deeper": value}
    return value


def with_deep(report: dict[str, Any], depth: int, *path: str) -> bytes:
    """``report`` as JSON with ``nested(depth)`` at ``path``.

    Written by hand: orjson (and the standard library) cannot write it, which is the point.
    """
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = "@@deep@@"
    return orjson.dumps(report).replace(b'"@@deep@@"', _json_text(nested(depth)).encode())


def _json_text(value: Any) -> str:
    opening: list[str] = []
    closing: list[str] = []
    while not isinstance(value, str):
        if isinstance(value, dict):
            opening.append('{"deeper":')
            closing.append("}")
            value = value["deeper"]
        else:
            opening.append("[")
            closing.append("]")
            value = value[0]
    return "".join(opening) + f'"{value}"' + "".join(reversed(closing))


async def post_json(client: httpx.AsyncClient, url: str, content: bytes, **headers: str) -> Any:
    return await client.post(
        url, content=content, headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize("depth", [256, 600, 1000])
async def test_a_deep_report_with_a_message_id_is_refused_naming_the_field(
    client: httpx.AsyncClient, depth: int
) -> None:
    answer = await post_json(client, "/v1/reports", with_deep(incident(), depth, "description"))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["code"] == "malformed"
    [issue] = body["issues"]
    assert issue["path"].startswith("description"), issue
    assert ".deeper[0]" in issue["path"], issue
    assert "levels deep" in issue["reason"]


async def test_a_deep_report_with_an_idempotency_key_is_refused(
    client: httpx.AsyncClient,
) -> None:
    report = incident()
    del report["header"]["message_id"]
    answer = await post_json(
        client, "/v1/reports", with_deep(report, 400, "extra"), **{"Idempotency-Key": "k-1"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["issues"][0]["path"].startswith("extra")


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
async def test_a_batch_answers_per_item_when_one_is_too_deep(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str, media_type: str
) -> None:
    good = [incident(), incident()]
    lines = [
        orjson.dumps(good[0]),
        orjson.dumps(good[1]),
        with_deep(incident(), 700, "description"),
    ]
    if media_type == "application/json":
        content = b"[" + b",".join(lines) + b"]"
    else:
        content = b"\n".join(lines)
    answer = await client.post(
        "/v1/reports:batch", content=content, headers={"content-type": media_type}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == [201, 201, 400]
    assert body["results"][2]["problem"]["issues"][0]["path"].startswith("description")
    ids = [r["header"]["message_id"] for r in good]
    topic = exchange.router.naming.feed(AGENCY, "incidents")
    landed = await read_until(bootstrap, exchange, [topic], ids)
    assert {r.message_id for r in landed} >= set(ids)


@pytest.mark.parametrize(
    ("where", "expected"),
    [("type", 400), ("originator", 403), ("content-type", 415), ("status path", 422)],
)
async def test_a_huge_client_string_is_not_echoed_whole(
    client: httpx.AsyncClient, where: str, expected: int
) -> None:
    huge = "X" * 600_000
    report = incident()
    if where == "type":
        report["type"] = huge
        answer = await client.post("/v1/reports", json=report)
    elif where == "originator":
        report["header"]["originator"] = huge
        answer = await client.post("/v1/reports", json=report)
    elif where == "content-type":
        answer = await client.post(
            "/v1/reports", content=b"{}", headers={"content-type": f"text/{huge[:10_000]}"}
        )
    else:
        answer = await client.get(f"/v1/reports/{huge[:10_000]}/status")
    assert answer.status_code == expected, answer.text[:500]
    assert answer.headers["content-type"] == PROBLEM
    assert len(answer.content) < 4000, len(answer.content)
    assert "more characters" in answer.text


@pytest.mark.parametrize(("path", "expected"), [(("type",), 400), (("header", "originator"), 403)])
async def test_a_deep_type_or_originator_is_named_not_repeated(
    client: httpx.AsyncClient, path: tuple[str, ...], expected: int
) -> None:
    # repr() of a value nested ~1000 deep would exhaust Python's recursion limit.
    answer = await post_json(client, "/v1/reports", with_deep(incident(), 1000, *path))
    assert answer.status_code == expected, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "an array" in answer.json()["detail"]


async def test_an_unforeseen_failure_is_a_problem_for_that_report_alone(
    client: httpx.AsyncClient,
    gateway: RunningGateway,
    exchange: Exchange,
    bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fault injection: a bug that raises while one report is checked.
    claims = gateway.service.pipeline._admission._claims  # the fault's place
    assert claims is not None
    check = claims.check

    def buggy(report: Any, now: Any = None) -> None:
        if getattr(report, "narrative", "") == "poison":
            raise RuntimeError("a bug")
        check(report, now)

    monkeypatch.setattr(claims, "check", buggy)
    poison = incident()
    poison["narrative"] = "poison"
    single = await client.post("/v1/reports", json=poison)
    assert single.status_code == 500, single.text
    assert single.headers["content-type"] == PROBLEM
    assert single.json()["code"] == "internal"

    good = [incident(), incident()]
    poison = {**poison, "header": {**poison["header"], "message_id": str(uuid.uuid4())}}
    batch = await client.post("/v1/reports:batch", json=[good[0], poison, good[1]])
    assert batch.status_code == 200, batch.text
    assert [r["status"] for r in batch.json()["results"]] == [201, 500, 201]
    ids = [r["header"]["message_id"] for r in good]
    topic = exchange.router.naming.feed(AGENCY, "incidents")
    landed = await read_until(bootstrap, exchange, [topic], ids)
    assert {r.message_id for r in landed} >= set(ids)
