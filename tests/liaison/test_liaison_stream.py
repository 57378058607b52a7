"""The live stream resumes with Last-Event-ID missing nothing; the console's cookie session."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from liaison_support import (
    PASSWORD,
    liaison_settings,
    lt_incident,
    publish,
    publishers,
    running_liaison,
    signed_in,
)
from polling import eventually

from services.bus import Cancellation, Exchange, LinkRelation, MessageLink, Settings
from services.liaison import add_officer

LT, LV = "LT-VSAT", "LV-VRS"
ALL_READERS = ["LV-VRS", "PL-SG", "EE-PPA", "UA-DPSU"]


async def _read(
    client: httpx.AsyncClient, count: int, last_id: str | None
) -> list[tuple[str, dict]]:
    """``count`` report messages of the stream (after ``last_id``), then disconnect."""
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    got: list[tuple[str, dict]] = []
    async with aconnect_sse(client, "GET", "/v1/stream", headers=headers) as source:
        assert source.response.status_code == 200
        async for message in source.aiter_sse():
            if message.event == "report":
                got.append((message.id, orjson.loads(message.data)))
                if len(got) == count:
                    break
    return got


@pytest.mark.parametrize("keep", [4096, 3, 0], ids=["pushed", "mostly-read", "read"])
async def test_a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing(
    settings: Settings, exchange: Exchange, tmp_path: Path, keep: int
) -> None:
    # keep: the committed changes the service hands to its streams (the rest is read).
    reports = [lt_incident(ALL_READERS) for _ in range(12)]
    lv_settings = liaison_settings(tmp_path, LV, stream_keep=keep)
    async with (
        running_liaison(settings, lv_settings, exchange) as lv,
        publishers(settings, exchange, [LT]) as pub,
        signed_in(lv.url, tmp_path / "officers.yaml", LV) as client,
    ):
        for item in reports[:4]:
            await publish(pub[LT], item)
        first = await _read(client, 4, "0")
        # While nobody listens, more arrive.
        for item in reports[4:]:
            await publish(pub[LT], item)

        async def all_stored() -> bool:
            page = (await client.get("/v1/reports", params={"limit": "50"})).json()
            return len(page["items"]) == len(reports)

        await eventually(all_stored, "every report stored")
        rest = await _read(client, 8, first[-1][0])
    seen = [data["report"]["message_id"] for _, data in first + rest]
    assert sorted(seen) == sorted(str(r.header.message_id) for r in reports)
    assert len(set(seen)) == len(seen)
    ids = [int(i) for i, _ in first + rest]
    assert ids == sorted(ids)
    assert all(data["event"]["title"] for _, data in first + rest)
    assert all(int(i) == data["seq"] for i, data in first + rest)


async def test_the_console_session_is_an_httponly_strict_cookie_with_a_csrf_token(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    add_officer(tmp_path / "officers.yaml", LV, "anna", PASSWORD)
    async with (
        running_liaison(settings, liaison_settings(tmp_path, LV), exchange) as lv,
        httpx.AsyncClient(base_url=lv.url) as browser,
    ):
        wrong = await browser.post("/v1/session", json={"name": "anna", "password": "guess"})
        assert wrong.status_code == 401
        assert wrong.headers["content-type"] == "application/problem+json"
        signed = await browser.post("/v1/session", json={"name": "anna", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        csrf = signed.json()["csrf_token"]
        assert (await browser.get("/v1/session")).json()["csrf_token"] == csrf
        assert (await browser.get("/v1/events")).status_code == 200
        # A state-changing request without the CSRF token is refused, with it it goes on.
        retry = "/v1/webhooks/deliveries/0b6e2a1c-3f1d-4c52-9a51-6f3e2c1d0a03/retry"
        assert (await browser.post(retry)).status_code == 403
        assert (await browser.post(retry, headers={"X-CSRF-Token": csrf})).status_code == 404
        token = browser.cookies["oix_liaison_session"]
        signed_out = await browser.delete("/v1/session", headers={"X-CSRF-Token": csrf})
        assert signed_out.status_code == 204
        # The session ended in the store, not only in this browser.
        async with httpx.AsyncClient(
            base_url=lv.url, cookies={"oix_liaison_session": token}
        ) as old:
            assert (await old.get("/v1/events")).status_code == 401


async def test_the_consoles_files_are_served_from_the_static_directory(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<title>OIX console</title>", encoding="utf-8")
    lv_settings = liaison_settings(tmp_path, LV, static_dir=static)
    async with (
        running_liaison(settings, lv_settings, exchange) as lv,
        httpx.AsyncClient(base_url=lv.url) as browser,
    ):
        home = await browser.get("/", follow_redirects=True)
        assert home.status_code == 200
        assert home.url.path == "/console/"
        assert "OIX console" in home.text
        assert (await browser.get("/console/missing.js")).status_code == 404


def _same_anywhere(data: dict[str, Any]) -> dict[str, Any]:
    """A stream message without what differs between two stores of the same reports."""
    data = {k: v for k, v in data.items() if k not in {"seq", "at"}}
    if "report" in data:
        data["report"] = {
            k: v for k, v in data["report"].items() if k not in {"seq", "received_at"}
        }
    if "event" in data:
        data["event"] = {k: v for k, v in data["event"].items() if k != "seq"}
    return data


async def _follow(
    client: httpx.AsyncClient,
    into: dict[str, dict[str, Any]],
    connected: asyncio.Event | None = None,
) -> None:
    """Collect the live stream's messages by message id (until cancelled).

    ``connected`` is set once the stream answered: a stream without ``Last-Event-ID``
    begins at the store's present, so what was committed before is not on it.
    """
    async with aconnect_sse(client, "GET", "/v1/stream") as source:
        if connected is not None:
            connected.set()
        async for message in source.aiter_sse():
            if message.data:  # not the retry advice
                data = orjson.loads(message.data)
                into[data["report"]["message_id"]] = _same_anywhere(data)


async def test_pushed_changes_are_what_a_stream_reading_the_store_sends(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    """The same reports into two services: one streams what its writes hand over, one reads."""
    original = lt_incident(ALL_READERS)
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
    doomed = lt_incident(ALL_READERS)
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
    sent = [original, correction, doomed, cancellation, lt_incident(ALL_READERS)]
    pushed_dir, read_dir = tmp_path / "pushed", tmp_path / "read"
    pushed_settings = liaison_settings(
        pushed_dir, LV, group_id=f"{LV}.pushed", database_url=f"sqlite:///{pushed_dir / 'l.db'}"
    )
    read_settings = liaison_settings(
        read_dir,
        LV,
        group_id=f"{LV}.read",
        database_url=f"sqlite:///{read_dir / 'l.db'}",
        stream_keep=0,
    )
    pushed_seen: dict[str, dict[str, Any]] = {}
    read_seen: dict[str, dict[str, Any]] = {}
    async with (
        running_liaison(settings, pushed_settings, exchange) as pushed,
        running_liaison(settings, read_settings, exchange) as read,
        publishers(settings, exchange, [LT]) as pub,
        signed_in(pushed.url, pushed_dir / "officers.yaml", LV) as pushed_client,
        signed_in(read.url, read_dir / "officers.yaml", LV) as read_client,
    ):
        await eventually(pushed.service.consumer.positioned.is_set, "pushed positioned")
        await eventually(read.service.consumer.positioned.is_set, "read positioned")
        connected = [asyncio.Event(), asyncio.Event()]
        followers = [
            asyncio.create_task(_follow(pushed_client, pushed_seen, connected[0])),
            asyncio.create_task(_follow(read_client, read_seen, connected[1])),
        ]
        try:
            # Under load a stream can answer after the first report is committed.
            await eventually(lambda: all(c.is_set() for c in connected), "both streams open")
            # One at a time, as a live client sees them: each sent when it is committed.
            for item in sent:
                await publish(pub[LT], item)
                key = str(item.header.message_id)
                await eventually(
                    lambda key=key: key in pushed_seen and key in read_seen,  # type: ignore[misc]
                    f"{key} on both streams",
                )
        finally:
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
    assert sorted(pushed_seen) == sorted(str(r.header.message_id) for r in sent)
    assert pushed_seen == read_seen
    assert {data["kind"] for data in pushed_seen.values()} == {"report", "withdrawn"}
