"""The one read the console adds to the API: messages by id, scoped like every other read."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from liaison_support import (
    liaison_settings,
    lt_incident,
    publish,
    publishers,
    running_liaison,
    signed_in,
)
from polling import eventually

from services.bus import Exchange, Settings

LT, LV, PL = "LT-VSAT", "LV-VRS", "PL-SG"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]


async def test_messages_by_id_show_only_what_the_agency_may_see(
    settings: Settings, exchange: Exchange, tmp_path: Path, pg_url: str
) -> None:
    # One PostgreSQL database holds both agencies' stores: the read's scoping is what keeps
    # Latvia's rows from Poland, not separate files.
    secret = lt_incident([LV])
    shared = lt_incident(ALL_READERS)
    ids = f"{secret.header.message_id},{shared.header.message_id},{uuid.uuid4()}"
    async with (
        running_liaison(
            settings, liaison_settings(tmp_path, LV, database_url=pg_url), exchange
        ) as lv,
        running_liaison(
            settings, liaison_settings(tmp_path, PL, database_url=pg_url), exchange
        ) as pl,
        publishers(settings, exchange, [LT]) as pub,
        signed_in(lv.url, tmp_path / "officers.yaml", LV) as lv_client,
        signed_in(pl.url, tmp_path / "officers.yaml", PL, name="piotr") as pl_client,
    ):
        await publish(pub[LT], secret)
        await publish(pub[LT], shared)

        async def found(client: httpx.AsyncClient, count: int) -> list[dict]:
            response = await client.get("/v1/console/messages", params={"ids": ids})
            assert response.status_code == 200, response.text
            items: list[dict] = response.json()
            return items if len(items) == count else []

        at_latvia = await eventually(lambda: found(lv_client, 2), "both at Latvia")
        assert {m["message_id"] for m in at_latvia} == {
            str(secret.header.message_id),
            str(shared.header.message_id),
        }
        for item in at_latvia:
            assert item["originator"] == LT
            assert item["signature"] == {"status": "valid", "key_id": "LT-VSAT-2026-1"}
        at_poland = await eventually(lambda: found(pl_client, 1), "the shared one at Poland")
        assert [m["message_id"] for m in at_poland] == [str(shared.header.message_id)]
        assert at_poland[0]["event_id"] == str(shared.header.event_id)

        bad = await lv_client.get("/v1/console/messages", params={"ids": "not-a-uuid"})
        assert bad.status_code == 422
        assert bad.json()["issues"] == [
            {"path": "ids (query)", "reason": "'not-a-uuid' is not a UUID"}
        ]
        many = ",".join(str(uuid.uuid4()) for _ in range(101))
        too_many = await lv_client.get("/v1/console/messages", params={"ids": many})
        assert too_many.status_code == 422
        assert too_many.json()["issues"][0]["reason"] == "at most 100"
        unsigned = await lv_client.get(
            "/v1/console/messages", params={"ids": ids}, headers={"Authorization": ""}
        )
        assert unsigned.status_code == 401
