"""Reports through the real broker into liaison services: releasability, events, alerts.

The gateway's SDK publishes (routing and signing as in production); raw
producers write what no gateway would (a forged signature, a misrouted
record, a resend of the same message).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from liaison_support import (
    liaison_settings,
    lt_incident,
    produce_raw,
    publish,
    publishers,
    report,
    running_liaison,
    signed_in,
)
from polling import eventually

from services.bus import (
    Cancellation,
    Exchange,
    LinkRelation,
    MessageLink,
    Report,
    Settings,
    SituationReport,
)

LT, LV, PL = "LT-VSAT", "LV-VRS", "PL-SG"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]


async def _items(client: httpx.AsyncClient, path: str, **params: str) -> list[dict]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_report_released_to_latvia_only_never_reaches_poland(
    settings: Settings, exchange: Exchange, tmp_path: Path, pg_url: str
) -> None:
    # One PostgreSQL database holds both agencies' stores: scoping is the store's, not the file's.
    lv_settings = liaison_settings(tmp_path, LV, database_url=pg_url)
    pl_settings = liaison_settings(tmp_path, PL, database_url=pg_url)
    secret = lt_incident([LV], purpose="LATVIA ONLY wetsuits")
    shared = lt_incident(ALL_READERS)
    async with (
        running_liaison(settings, lv_settings, exchange) as lv,
        running_liaison(settings, pl_settings, exchange) as pl,
        publishers(settings, exchange, [LT]) as pub,
        signed_in(lv.url, tmp_path / "officers.yaml", LV) as lv_client,
        signed_in(pl.url, tmp_path / "officers.yaml", PL, name="piotr") as pl_client,
    ):
        hidden = await publish(pub[LT], secret)
        await publish(pub[LT], shared)
        assert hidden.deliveries[0].topic.endswith(".LT-VSAT.direct.LV-VRS")
        secret_id, shared_id = str(secret.header.message_id), str(shared.header.message_id)

        async def seen(client: httpx.AsyncClient, wanted: set[str]) -> bool:
            return wanted <= {r["message_id"] for r in await _items(client, "/v1/reports")}

        await eventually(lambda: seen(lv_client, {secret_id, shared_id}), "LV sees both")
        await eventually(lambda: seen(pl_client, {shared_id}), "PL sees the shared one")
        event_id = str(secret.header.event_id)
        guesses = [
            f"/v1/events/{LT}/{event_id}",
            f"/v1/reports/{LT}/{secret_id}",
        ]
        for path in guesses:
            assert (await pl_client.get(path)).status_code == 404, path
            assert (await lv_client.get(path)).status_code == 200, path
        for params in (
            {},
            {"partner": LT},
            {"partner": f"{LT},{LV}"},
            {"q": "wetsuit"},
            {"type": "IncidentReport", "mode": "ACTUAL"},
        ):
            for path in ("/v1/reports", "/v1/events"):
                found = await _items(pl_client, path, **params)
                assert secret_id not in {
                    r.get("message_id") or r["current_message_id"] for r in found
                }
        replies = (await pl_client.get(f"/v1/replies/{secret_id}")).json()
        assert replies["acknowledgements"] == replies["responses"] == []
        alerts = await _items(pl_client, "/v1/alerts")
        assert all(a["message_id"] != secret_id for a in alerts)
        # The whole change log of PL's stream, from the start, never names it.
        async with pl_client.stream("GET", "/v1/stream", params={"after": "0"}) as stream:
            text = ""
            async for chunk in stream.aiter_text():
                text += chunk
                if shared_id in text:
                    break
        assert secret_id not in text
        # A session works only at its own agency's service.
        pl_token = pl_client.headers["Authorization"]
        async with httpx.AsyncClient(base_url=lv.url, headers={"Authorization": pl_token}) as cross:
            assert (await cross.get(f"/v1/events/{LT}/{event_id}")).status_code == 403
            assert (await cross.get("/v1/reports")).status_code == 403


def _lt_situation(**header: Any) -> Report:
    """Latvia's example situation report as Lithuania's, on Lithuania's border sections.

    The gateway refuses a section the agreement does not list for the originator.
    """
    found = report(
        "01-lv-situation-164-attempts", originator=LT, releasable_to=ALL_READERS, **header
    )
    assert isinstance(found, SituationReport)
    ours = ("LT-BY-VILNIUS", "LT-BY-DRUSKININKAI")
    sections = [
        s.model_copy(update={"border_section": code})
        for s, code in zip(found.sections, ours, strict=True)
    ]
    return found.model_copy(update={"sections": sections})


async def test_corrections_updates_cancellations_duplicates_and_exercises_form_events(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    lv_settings = liaison_settings(tmp_path, LV)
    original = lt_incident(ALL_READERS)
    event_id = original.header.event_id
    # The correction: the same report, nine persons instead of two, superseding it.
    correction = original.model_copy(
        update={
            "header": original.header.model_copy(
                update={
                    "message_id": uuid.uuid4(),
                    "event_version": 2,
                    "links": [
                        MessageLink(
                            message_id=original.header.message_id,
                            relation=LinkRelation.SUPERSEDES,
                        )
                    ],
                }
            ),
            "persons": original.persons.model_copy(update={"total": 9}),
        }
    )
    update = lt_incident(
        ALL_READERS,
        event_id=event_id,
        event_version=3,
        links=[MessageLink(message_id=correction.header.message_id, relation=LinkRelation.UPDATES)],
    )
    doomed = lt_incident(ALL_READERS)
    drill = lt_incident(ALL_READERS, mode="EXERCISE")
    sitrep = _lt_situation()
    sitrep_drill = _lt_situation(mode="EXERCISE")
    async with (
        running_liaison(settings, lv_settings, exchange) as lv,
        publishers(settings, exchange, [LT]) as pub,
        signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
    ):
        first = await publish(pub[LT], original)
        for item in (correction, update, doomed, drill, sitrep, sitrep_drill):
            await publish(pub[LT], item)
        cancellation = Cancellation.model_validate(
            {
                "header": {
                    "originator": LT,
                    "classification": "SENSITIVE",
                    "tlp": "AMBER",
                    "releasable_to": ALL_READERS,
                },
                "cancelled_message_id": str(doomed.header.message_id),
                "reason": "ENTERED_IN_ERROR",
            }
        )
        await publish(pub[LT], cancellation)
        # The original again, byte for byte, as a resend would write it.
        await produce_raw(
            settings.bootstrap or "", first.topic, [exchange.sealer(LT).seal(original)]
        )
        ids = {
            str(r.header.message_id)
            for r in (
                original,
                correction,
                update,
                doomed,
                drill,
                sitrep,
                sitrep_drill,
                cancellation,
            )
        }

        async def all_stored() -> bool:
            found = {r["message_id"] for r in await _items(client, "/v1/reports", limit="100")}
            return ids <= found

        await eventually(all_stored, "every report to be stored")

        # The resend arrives after the cancellation (same partition, later offset).
        async def resend_read() -> bool:
            text = (await client.get("/metrics")).text
            return 'oix_liaison_messages_total{status="duplicate"} 1.0' in text

        await eventually(resend_read, "the resend to be read and dropped")
        detail = (await client.get(f"/v1/events/{LT}/{event_id}")).json()
        event = detail["event"]
        assert (event["reports"], event["versions"]) == (3, 2)
        assert event["current_message_id"] == str(update.header.message_id)
        versions = detail["reports"]
        assert [r["message_id"] for r in versions] == [
            str(original.header.message_id),
            str(correction.header.message_id),
            str(update.header.message_id),
        ]
        assert versions[0]["superseded_by"] == str(correction.header.message_id)
        assert versions[1]["changes"] == [{"path": "persons.total", "before": 2, "after": 9}]
        assert versions[0]["signature"] == {"status": "valid", "key_id": "LT-VSAT-2026-1"}
        withdrawn = (await client.get(f"/v1/events/{LT}/{doomed.header.event_id}")).json()
        assert withdrawn["event"]["status"] == "withdrawn"
        assert [r["report_type"] for r in withdrawn["reports"]] == [
            "IncidentReport",
            "Cancellation",
        ]
        assert withdrawn["reports"][0]["cancelled_by"] == str(cancellation.header.message_id)
        drills = await _items(client, "/v1/events", mode="EXERCISE")
        assert {e["event_id"] for e in drills} == {
            str(drill.header.event_id),
            str(sitrep_drill.header.event_id),
        }
        assert all(e["exercise"] for e in drills)
        summary = (await client.get("/v1/summary/daily", params={"partner": LT})).json()
        by_day = {s["day"]: s for s in summary}
        sit_day = sitrep.period_start.date().isoformat()
        assert by_day[sit_day]["situation"]["attempts"] == sum(
            s.attempts_prevented for s in sitrep.sections
        )
        assert by_day[sit_day]["situation"]["reports"] == 1
        assert by_day[sit_day]["exercise_reports_excluded"] >= 1
        incident_day = by_day[original.detected_at.date().isoformat()]
        # The current version of the event (the update) counts; the superseded ones, the
        # withdrawn event and the drill do not.
        assert incident_day["incidents"]["reports"] == 2  # the correction and the update
        assert incident_day["exercise_reports_excluded"] >= 1


async def test_untrusted_and_misrouted_records_are_alerts_never_reports(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    lv_settings = liaison_settings(tmp_path, LV)
    topic = exchange.naming.feed(LT, "incidents")
    forged = exchange.sealer(LT).seal(lt_incident(ALL_READERS))
    forged.headers = [
        (name, bytes(64) if name == "oix-signature" else value) for name, value in forged.headers
    ]
    # Signed by Lithuania, released to Poland only, but written to the feed Latvia reads.
    misrouted = exchange.sealer(LT).seal(lt_incident([PL]))
    marker = lt_incident(ALL_READERS)
    async with (
        running_liaison(settings, lv_settings, exchange) as lv,
        signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
    ):
        await produce_raw(
            settings.bootstrap or "",
            topic,
            [forged, misrouted, exchange.sealer(LT).seal(marker)],
        )

        async def alerted() -> list[dict]:
            alerts = await _items(client, "/v1/alerts")
            return alerts if len(alerts) >= 2 else []

        alerts = await eventually(alerted, "two alerts")
        kinds = {a["kind"]: a for a in alerts}
        assert kinds["untrusted"]["signature_status"] == "invalid"
        assert kinds["untrusted"]["message_id"] == forged.message_id
        assert kinds["not_released"]["message_id"] == misrouted.message_id
        assert "not released to this agency" in kinds["not_released"]["detail"]
        await eventually(lambda: _has(client, str(marker.header.message_id)), "the trusted report")
        shown = {r["message_id"] for r in await _items(client, "/v1/reports")}
        assert shown == {str(marker.header.message_id)}
        for message_id in (forged.message_id, misrouted.message_id):
            assert (await client.get(f"/v1/reports/{LT}/{message_id}")).status_code == 404
        metrics = (await client.get("/metrics")).text
        assert "oix_liaison_policy_violations_total 1.0" in metrics
        assert 'oix_liaison_messages_total{status="untrusted"} 1.0' in metrics

        async def caught_up() -> bool:
            # Refreshed at most once a second, from the fetch loop: it still comes.
            text = (await client.get("/metrics")).text
            lags = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("oix_liaison_partition_lag{")
            ]
            return bool(lags) and all(lag == 0 for lag in lags)

        await eventually(caught_up, "every followed partition's lag gauge at 0")


async def _has(client: httpx.AsyncClient, message_id: str) -> bool:
    return message_id in {r["message_id"] for r in await _items(client, "/v1/reports")}
