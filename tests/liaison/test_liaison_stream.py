"""The live stream resumes with Last-Event-ID missing nothing; the console's cookie session."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
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

from services.bus import Exchange, Settings
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


async def test_a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing(
    settings: Settings, exchange: Exchange, tmp_path: Path
) -> None:
    reports = [lt_incident(ALL_READERS) for _ in range(12)]
    async with (
        running_liaison(settings, liaison_settings(tmp_path, LV), exchange) as lv,
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
