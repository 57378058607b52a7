"""What a valid report may still not claim: times far from now, border sections not its own.

Before, an incident detected in 2199 or 1900 was accepted (201), and so was
one on another agency's border section.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from gateway_support import (
    AGENCY,
    PARTNER,
    RunningGateway,
    bearer,
    example,
    incident,
    make_gateway_settings,
)
from gateway_support import running_gateway as start_gateway
from polling import eventually

from services.bus import REPORT_MODELS, Exchange, Settings
from services.gateway import GatewaySettings
from services.gateway._claims import claim_check
from services.gateway.sdk import Publisher

pytestmark = pytest.mark.timeout(60)


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def _issues(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    return {i["path"]: i["reason"] for i in answer.json()["issues"]}


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("detected_at", "2199-01-01T00:00:00Z", "in the future"),
        ("detected_at", "1900-01-01T00:00:00Z", "ago"),
        ("occurred_at", "1900-01-01T00:00:00Z", "ago"),
        ("created_at", "2199-01-01T00:00:00Z", "in the future"),
        ("created_at", "1900-01-01T00:00:00Z", "ago"),
    ],
)
async def test_a_time_far_from_now_is_refused_naming_the_field(
    client: httpx.AsyncClient, field: str, value: str, said: str
) -> None:
    report = incident()
    if field == "created_at":
        report["header"]["created_at"] = value
        path = "header.created_at"
    else:
        report[field] = value
        if field == "detected_at":
            report["occurred_at"] = value  # the model wants occurred_at <= detected_at
        path = field
    issues = _issues(await client.post("/v1/reports", json=report))
    assert path in issues, issues
    assert said in issues[path]


async def test_a_time_just_ahead_is_clock_skew_a_validity_may_lie_months_ahead(
    client: httpx.AsyncClient,
) -> None:
    skewed = incident(created_at=_at(timedelta(minutes=2)))
    assert (await client.post("/v1/reports", json=skewed)).status_code == 201
    future_fact = incident(created_at=_at(timedelta(minutes=30)))
    assert "header.created_at" in _issues(await client.post("/v1/reports", json=future_fact))

    warning = _early_warning()
    warning["expected_until"] = _at(timedelta(days=200))
    answer = await client.post("/v1/reports", json=warning)
    assert answer.status_code == 201, answer.text
    warning = _early_warning()
    warning["expected_until"] = "2199-01-01T00:00:00Z"
    issues = _issues(await client.post("/v1/reports", json=warning))
    assert "ahead" in issues["expected_until"]


def _early_warning() -> dict[str, Any]:
    warning = example("07-ua-early-warning-redirect", originator=AGENCY)
    warning["header"]["releasable_to"] = ["LT-VSAT", "PL-SG", "EE-PPA", "UA-DPSU"]
    return warning


async def test_the_time_window_is_configurable(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    gateway = make_gateway_settings(tokens_file, max_time_past=timedelta(hours=1))
    three_hours_ago = _at(timedelta(hours=-3))
    report = incident()
    report["detected_at"] = report["occurred_at"] = three_hours_ago
    async with (
        start_gateway(settings, gateway, exchange) as running,
        httpx.AsyncClient(base_url=running.url, headers=bearer(tokens[AGENCY])) as http,
    ):
        issues = _issues(await http.post("/v1/reports", json=report))
    assert set(issues) == {"detected_at", "occurred_at"}
    assert "more than 60 minutes ago" in issues["detected_at"]


async def test_a_border_section_of_another_party_is_refused(client: httpx.AsyncClient) -> None:
    report = incident()
    report["location"]["border_section"] = "LT-BY-DRUSKININKAI"  # Lithuania's
    issues = _issues(await client.post("/v1/reports", json=report))
    reason = issues["location.border_section"]
    assert "not a border section of LV-VRS" in reason
    assert "LV-BY-LATGALE" in reason  # says which ones it may name

    unknown = incident()
    unknown["location"]["border_section"] = "XX-NOWHERE"
    assert "location.border_section" in _issues(await client.post("/v1/reports", json=unknown))

    situation = example("01-lv-situation-164-attempts")
    situation["sections"][1]["border_section"] = "EE-RU-NARVA"
    issues = _issues(await client.post("/v1/reports", json=situation))
    assert list(issues) == ["sections[1].border_section"]


async def test_sections_on_a_partners_border_where_the_report_is_about_it(
    client: httpx.AsyncClient,
) -> None:
    warning = _early_warning()
    warning["affected_sections"] = ["LV-BY-LATGALE", "PL-BY-PODLASKIE"]  # any party's
    assert (await client.post("/v1/reports", json=warning)).status_code == 201
    warning = _early_warning()
    warning["affected_sections"] = ["LV-BY-LATGALE", "XX-NOWHERE"]
    assert list(_issues(await client.post("/v1/reports", json=warning))) == ["affected_sections[1]"]


def test_every_time_field_of_every_report_type_is_checked(exchange: Exchange) -> None:
    # The JSON schema says which fields are times, independently of how the check finds them.
    claims = claim_check(exchange.agreement, GatewaySettings())
    for name, model in REPORT_MODELS.items():
        schema = model.model_json_schema()
        expected = {
            field
            for field, spec in schema["properties"].items()
            if "date-time" in orjson.dumps(spec).decode()
        }
        found = set(claims._times_of(model.model_construct()))  # the list itself is the point
        assert found == expected, name


async def test_a_message_id_another_party_used_is_refused(
    client: httpx.AsyncClient,
    gateway: RunningGateway,
    settings: Settings,
    gateway_settings: GatewaySettings,
    exchange: Exchange,
) -> None:
    # Issue 8: LT-VSAT could publish under LV-VRS's message id (and the other
    # way round), leaving two different messages under one id on the bus.
    taken = str(uuid.uuid4())
    async with Publisher(PARTNER, settings, gateway=gateway_settings, exchange=exchange) as lt:
        await lt.publish(example("06-lt-incident-wetsuits-neman", message_id=taken))
    store = gateway.service.pipeline.store
    await eventually(lambda: store.foreign_originators([taken]), "LV-VRS's gateway to see it")

    answer = await client.post("/v1/reports", json=incident(message_id=taken))
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["code"] == "message_id_taken"
    assert problem["issues"] == [{"path": "header.message_id", "reason": "already used by LT-VSAT"}]

    fresh = incident()
    batch = await client.post("/v1/reports:batch", json=[fresh, incident(message_id=taken)])
    assert [r["status"] for r in batch.json()["results"]] == [201, 409]
