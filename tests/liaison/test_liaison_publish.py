"""Acknowledge and answer through the agencies' real gateways, and see it on the other side.

Latvia's gateway publishes a request for assistance to Lithuania; Lithuania's
officer acknowledges and answers it in Lithuania's liaison service, which
publishes through Lithuania's gateway; Latvia's gateway status shows the
acknowledgement, and Latvia's liaison service shows the answer linked to
its request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from liaison_support import (
    liaison_settings,
    report,
    running_gateway,
    running_liaison,
    signed_in,
)
from polling import eventually
from pydantic import SecretStr

from services.bus import Exchange, Settings
from services.gateway import create_token

LT, LV = "LT-VSAT", "LV-VRS"


async def test_an_acknowledgement_and_an_answer_go_back_through_the_gateway(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.yaml"
    lv_token = create_token(tokens, LV, "lv-system")
    lt_token = create_token(tokens, LT, "lt-liaison")
    request = report("03-lv-assistance-request").model_dump(mode="json")
    request["type"] = "AssistanceRequest"
    for field in ("message_id", "created_at", "event_id"):
        request["header"].pop(field)
    async with (
        running_gateway(settings, exchange, LV, tokens) as lv_gateway,
        running_gateway(settings, exchange, LT, tokens) as lt_gateway,
    ):
        lt_settings = liaison_settings(
            tmp_path, LT, gateway_url=lt_gateway.url, gateway_token=SecretStr(lt_token)
        )
        lv_settings = liaison_settings(tmp_path, LV)
        async with (
            running_liaison(settings, lt_settings, exchange) as lt,
            running_liaison(settings, lv_settings, exchange) as lv,
            signed_in(lt.url, tmp_path / "officers.yaml", LT, "lina") as lt_officer,
            signed_in(lv.url, tmp_path / "officers.yaml", LV, "liga") as lv_officer,
            httpx.AsyncClient(
                base_url=lv_gateway.url, headers={"Authorization": f"Bearer {lv_token}"}
            ) as lv_system,
        ):
            published = await lv_system.post("/v1/reports", json=request)
            assert published.status_code == 201, published.text
            request_id = published.json()["message_id"]

            async def request_arrived() -> list[dict]:
                found = (await lt_officer.get("/v1/requests")).json()
                return [e for e in found if e["first_message_id"] == request_id]

            [open_request] = await eventually(request_arrived, "the request at Lithuania")
            assert open_request["request"]["kind"] == "assistance"
            assert open_request["request"]["overdue"] is False
            detail = (await lt_officer.get(f"/v1/events/{LV}/{open_request['event_id']}")).json()
            assert detail["can_acknowledge"] == {"allowed": True, "reason": None}
            assert detail["can_answer"] == {"allowed": True, "reason": None}

            acked = await lt_officer.post(
                f"/v1/reports/{LV}/{request_id}/acknowledgements",
                json={"status": "READ", "note": "On the commander's desk."},
            )
            assert acked.status_code == 201, acked.text
            ack_id = acked.json()["message_id"]

            async def acknowledged_at_latvia() -> list[dict]:
                status = (await lv_system.get(f"/v1/reports/{request_id}/status")).json()
                return status["acknowledgements"]

            [ack] = await eventually(acknowledged_at_latvia, "Latvia's gateway to show the ack")
            assert (ack["party"], ack["status"], ack["ack_message_id"]) == (LT, "READ", ack_id)

            refused = await lt_officer.post(
                f"/v1/reports/{LV}/{request_id}/answers",
                json={"decision": "ACCEPT", "officers_offered": 0},
            )
            assert refused.status_code == 422, refused.text
            assert any("decision" in i["path"] for i in refused.json()["issues"]), refused.text
            answered = await lt_officer.post(
                f"/v1/reports/{LV}/{request_id}/answers",
                json={
                    "decision": "PARTIAL",
                    "officers_offered": 8,
                    "specialities": [{"speciality": "BORDER_GUARD", "count": 8}],
                    "available_from": request["needed_from"],
                    "note": "Eight border guards; no cynologists to spare.",
                },
            )
            assert answered.status_code == 201, answered.text
            answer_id = answered.json()["message_id"]
            after = (await lt_officer.get("/v1/requests", params={"state": "answered"})).json()
            assert [e["first_message_id"] for e in after] == [request_id]
            assert (await lt_officer.get("/v1/requests")).json() == []
            detail = (await lt_officer.get(f"/v1/events/{LV}/{open_request['event_id']}")).json()
            assert [a["message_id"] for a in detail["answers"]] == [answer_id]
            assert [(a["direction"], a["status"]) for a in detail["acknowledgements"]] == [
                ("sent", "READ")
            ]

            async def answer_at_latvia() -> dict:
                replies = (await lv_officer.get(f"/v1/replies/{request_id}")).json()
                return replies if replies["responses"] and replies["acknowledgements"] else {}

            replies = await eventually(answer_at_latvia, "Latvia's liaison to show the answer")
            [response] = replies["responses"]
            assert (response["message_id"], response["report_type"]) == (
                answer_id,
                "AssistanceResponse",
            )
            assert [a["status"] for a in replies["acknowledgements"]] == ["READ"]
            answer_event = (await lv_officer.get(f"/v1/events/{LT}/{response['event_id']}")).json()
            [answer_report] = answer_event["reports"]
            assert {"relation": "RESPONDS_TO", "message_id": request_id, "known": False} in (
                answer_report["links"]
            )
            assert answer_report["content"]["decision"] == "PARTIAL"
