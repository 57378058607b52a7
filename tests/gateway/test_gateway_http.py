"""POST /v1/reports on a real uvicorn server and the real broker: every answer, read back."""

from __future__ import annotations

import uuid

import httpx
from gateway_support import AGENCY, PARTNER, RunningGateway, bearer, example, incident, read_until

from services.bus import H_TRACEPARENT, REPORT_MODELS, Exchange, SignatureStatus, parse_report

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_report_is_accepted_only_once_it_is_on_the_topic_signed(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    body = incident()
    answer = await client.post(
        "/v1/reports",
        json=body,
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    assert answer.status_code == 201, answer.text
    accepted = answer.json()
    message_id = body["header"]["message_id"]
    assert accepted["message_id"] == message_id
    assert accepted["topic"] == exchange.router.naming.feed(AGENCY, "incidents")
    assert accepted["deliveries"] == [
        {
            "topic": accepted["topic"],
            "partition": accepted["partition"],
            "offset": accepted["offset"],
        }
    ]
    assert accepted["trace_id"] == TRACE_ID
    assert accepted["replayed"] is False

    landed = await read_until(bootstrap, exchange, [accepted["topic"]], [message_id])
    [record] = [r for r in landed if r.message_id == message_id]
    assert record.opened.verification.status is SignatureStatus.VALID, record.opened.problem
    assert (record.record.partition, record.record.offset) == (
        accepted["partition"],
        accepted["offset"],
    )
    assert record.record.key == accepted["key"].encode()
    traceparent = record.opened.text_header(H_TRACEPARENT)
    assert traceparent is not None
    assert traceparent.split("-")[1] == TRACE_ID
    assert traceparent.split("-")[2] != "00f067aa0ba902b7"  # the gateway's own span
    model = record.opened.decoded.to_model()  # type: ignore[union-attr]
    sent = parse_report({**body, "header": {**body["header"], "originator": AGENCY}})
    assert model.model_dump(exclude={"header"}) == sent.model_dump(exclude={"header"})


async def test_the_gateway_fills_the_header_fields_left_out(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    left_out = ("originator", "message_id", "classification", "tlp", "handling", "priority")
    body = example("02-lv-incident-ladders", **dict.fromkeys(left_out))
    answer = await client.post("/v1/reports", json=body)
    assert answer.status_code == 201, answer.text
    message_id = answer.json()["message_id"]
    landed = await read_until(bootstrap, exchange, [answer.json()["topic"]], [message_id])
    [record] = [r for r in landed if r.message_id == message_id]
    header = record.record_data["header"]
    defaults = exchange.agreement.defaults
    assert header["originator"] == AGENCY
    assert header["classification"] == defaults.classification
    assert header["tlp"] == defaults.tlp
    assert header["handling"] == list(defaults.handling)
    assert header["priority"] == defaults.priority
    assert header["retention_days"] == defaults.retention_days
    assert header["created_at"] is not None


async def test_a_narrow_releasability_goes_on_a_bilateral_channel(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    body = incident(releasable_to=["PL-SG", PARTNER])
    answer = await client.post("/v1/reports", json=body)
    assert answer.status_code == 201, answer.text
    topics = [d["topic"] for d in answer.json()["deliveries"]]
    naming = exchange.router.naming
    assert topics == [naming.direct(AGENCY, PARTNER), naming.direct(AGENCY, "PL-SG")]
    landed = await read_until(bootstrap, exchange, topics, [body["header"]["message_id"]])
    assert sorted(r.record.topic for r in landed) == sorted(topics)
    assert all(r.opened.trusted for r in landed)


async def test_missing_or_unknown_token_is_401(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        missing = await anonymous.post("/v1/reports", json=incident())
        wrong = await anonymous.post(
            "/v1/reports", json=incident(), headers=bearer("oixgw_not-a-real-token")
        )
        basic = await anonymous.post(
            "/v1/reports", json=incident(), headers={"Authorization": "Basic dXNlcjpwYXNz"}
        )
        status = await anonymous.get(f"/v1/reports/{uuid.uuid4()}/status")
    for answer in (missing, wrong, basic, status):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "unauthorized"


async def test_another_agencys_token_or_originator_is_403(
    gateway: RunningGateway, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer(tokens[PARTNER])) as lt:
        foreign_token = await lt.post("/v1/reports", json=incident())
    assert foreign_token.status_code == 403, foreign_token.text
    assert PARTNER in foreign_token.json()["detail"]

    claims_other = await client.post("/v1/reports", json=incident(originator=PARTNER))
    assert claims_other.status_code == 403, claims_other.text
    problem = claims_other.json()
    assert problem["issues"] == [
        {"path": "header.originator", "reason": f"must be {AGENCY} (or left out)"}
    ]
    assert "never signs for another agency" in problem["detail"]


async def test_422_names_every_failing_field(client: httpx.AsyncClient) -> None:
    body = incident(releasable_to=["lt-vsat"], tlp="BLUE")
    body["persons"] = {"total": 2, "men": 3}
    del body["location"]
    answer = await client.post("/v1/reports", json=body)
    assert answer.status_code == 422, answer.text
    issues = {i["path"]: i["reason"] for i in answer.json()["issues"]}
    assert set(issues) >= {"header.releasable_to[0]", "header.tlp", "location", "persons"}
    assert "exceeds total" in issues["persons"]
    assert issues["location"] == "Field required"


async def test_releasability_the_agreement_refuses_is_422(client: httpx.AsyncClient) -> None:
    # Latvia's coordination feed is not released to Ukraine.
    body = example("03-lv-assistance-request", releasable_to=["UA-DPSU"])
    answer = await client.post("/v1/reports", json=body)
    assert answer.status_code == 422, answer.text
    [issue] = answer.json()["issues"]
    assert issue["path"] == "header.releasable_to"
    assert "UA-DPSU" in issue["reason"]


async def test_malformed_bodies_are_400(client: httpx.AsyncClient) -> None:
    json_type = {"content-type": "application/json"}
    cases = {
        b'{"type": "IncidentReport",': "not valid JSON",
        b"[1, 2]": "not an array",
        b'"IncidentReport"': "not a string",
        b'{"header": {}}': "no 'type' field",
        b'{"type": "Rumour"}': "unknown report type 'Rumour'",
        b'{"type": ["IncidentReport"]}': "unknown report type",
        b"\xff\xfe": "not valid JSON",
    }
    for body, reason in cases.items():
        answer = await client.post("/v1/reports", content=body, headers=json_type)
        assert answer.status_code == 400, (body, answer.text)
        assert reason.removeprefix("not an ").removeprefix("not a ") in answer.json()["detail"], (
            body,
            answer.text,
        )


async def test_wrong_media_type_is_415(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/v1/reports", content=b"type=IncidentReport", headers={"content-type": "text/plain"}
    )
    assert answer.status_code == 415, answer.text


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    body = incident()
    body["narrative"] = "x" * (1024 * 1024)
    answer = await client.post("/v1/reports", json=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "too_large"

    async def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b"x" * 65536

    streamed = await client.post(
        "/v1/reports", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text


async def test_every_openapi_example_publishes(
    client: httpx.AsyncClient, exchange: Exchange, bootstrap: str
) -> None:
    spec = (await client.get("/openapi.json")).json()
    content = spec["paths"]["/v1/reports"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    assert set(examples) == set(REPORT_MODELS)
    accepted = {}
    for name, entry in examples.items():
        answer = await client.post("/v1/reports", json=entry["value"])
        if name == "Cancellation":
            # It names a message this agency never published: refused, with the reason.
            assert answer.status_code == 422, answer.text
            assert answer.json()["issues"][0]["path"] == "cancelled_message_id"
        else:
            assert answer.status_code == 201, (name, answer.text)
            accepted[answer.json()["message_id"]] = answer.json()["topic"]
    landed = await read_until(bootstrap, exchange, set(accepted.values()), accepted)
    assert {r.message_id for r in landed} >= set(accepted)
    assert all(r.opened.trusted for r in landed)


async def test_docs_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert (await client.get("/healthz")).json() == {"status": "ok", "agency": AGENCY}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["problems"] == []

    assert (await client.post("/v1/reports", json=incident())).status_code == 201
    assert (await client.post("/v1/reports", json={"type": "Rumour"})).status_code == 400
    assert (await client.post("/v1/reports", json=incident(tlp="BLUE"))).status_code == 422
    metrics = (await client.get("/metrics")).text
    assert 'oix_gateway_reports_accepted_total{report_type="IncidentReport"} 1.0' in metrics
    assert 'oix_gateway_reports_rejected_total{reason="malformed"} 1.0' in metrics
    assert 'oix_gateway_reports_rejected_total{reason="invalid"} 1.0' in metrics
    assert "oix_gateway_broker_ack_seconds_count 1.0" in metrics
    assert 'oix_gateway_broker_ack_seconds_bucket{le="10.0"} 1.0' in metrics


async def test_unknown_routes_answer_problem_json(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v2/nothing")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
