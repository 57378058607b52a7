"""The liaison services inside ``oix up``: one per agency, publishing through its gateway,
with a login printed once; the demo's traffic shows up live; ``oix feed`` finds them by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from polling import eventually

from services import gateway, liaison
from services.bus import Exchange, Settings
from services.demo import run_demo
from services.host import UpContext

REPO = Path(__file__).resolve().parents[2]


async def test_oix_up_runs_a_liaison_per_agency_and_oix_feed_finds_it(
    settings: Settings, exchange: Exchange, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OIX_GATEWAY_PORT", "0")
    monkeypatch.setenv("OIX_LIAISON_PORT", "0")
    monkeypatch.setenv("OIX_LIAISON_OPEN_PROCESSES", "0")
    monkeypatch.setenv("OIX_LIAISON_SESSION_TIMEOUT_MS", "2000")
    monkeypatch.setenv("OIX_LIAISON_HEARTBEAT_INTERVAL_MS", "500")
    monkeypatch.setenv("OIX_LIAISON_REBALANCE_TIMEOUT_MS", "2000")
    ctx = UpContext(settings, exchange, bootstrap)
    lines: dict[str, list[str]] = {}
    both = asyncio.Event()

    def ready(name: str, endpoints: list[str]) -> None:
        lines[name] = endpoints
        if len(lines) == 2:
            both.set()

    tasks = [
        asyncio.create_task(gateway.run_in_up(ctx, ready)),
        asyncio.create_task(liaison.run_in_up(ctx, ready)),
    ]
    try:
        await asyncio.wait_for(both.wait(), 60)
        text = "\n".join(lines["liaison"])
        urls = dict(re.findall(r"^(\S+)\s+(http://\S+)/docs$", text, re.MULTILINE))
        logins = dict(re.findall(r"^(\S+)\s+login (\S+ \S+)$", text, re.MULTILINE))
        assert set(urls) == set(logins) == set(exchange.agreement.parties)
        assert all(len(line) < 70 for line in lines["liaison"])
        name, password = logins["LV-VRS"].split()
        await run_demo(settings, exchange, bootstrap, rounds=1, interval=0)
        async with httpx.AsyncClient(base_url=urls["LV-VRS"]) as client:
            token = await client.post("/v1/tokens", json={"name": name, "password": password})
            assert token.status_code == 201, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['token']}"

            async def demo_arrived() -> list[dict]:
                page = (await client.get("/v1/events", params={"partner": "LT-VSAT"})).json()
                return page["items"]

            events = await eventually(demo_arrived, "the demo's Lithuanian reports at LV")
            assert (await client.get("/v1/session")).json()["agency"] == "LV-VRS"
            detail = (await client.get(f"/v1/events/LT-VSAT/{events[0]['event_id']}")).json()
            # The gateway offered its publishing path: this service can acknowledge.
            assert detail["can_acknowledge"]["allowed"], detail["can_acknowledge"]
        env = {
            **os.environ,
            "OIX_DATA_DIR": str(settings.data_dir),
            "OIX_TOPIC_PREFIX": settings.topic_prefix,
            "OIX_LOG_LEVEL": "WARNING",
        }
        cli = [sys.executable, "-m", "services.cli", "feed", "--as", "LV-VRS", "--since", "30d"]
        piped = await asyncio.to_thread(
            subprocess.run, cli, env=env, cwd=REPO, capture_output=True, text=True, check=True
        )
        reports = [json.loads(line) for line in piped.stdout.splitlines()]
        assert {r["originator"] for r in reports} >= {"LT-VSAT", "PL-SG", "UA-DPSU"}
        assert "LV-VRS" not in {r["originator"] for r in reports}
        assert all(r["signature"]["status"] == "valid" for r in reports)
        readable = await asyncio.to_thread(
            subprocess.run,
            [*cli, "--no-json", "--from", "PL-SG"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        shown = readable.stdout.splitlines()
        assert shown
        assert all(" PL-SG " in line for line in shown), shown
    finally:
        ctx.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
