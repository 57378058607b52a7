"""The gateways inside ``oix up``, and the demo publishing through the SDK."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from gateway_support import AGENCY, bearer, incident, read_until

from services.bus import Exchange, Settings, load_examples
from services.demo import Published, run_demo
from services.gateway import run_in_up
from services.host import UpContext


async def test_oix_up_starts_a_gateway_per_agency_with_a_token_printed_once(
    settings: Settings, exchange: Exchange, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OIX_GATEWAY_PORT", "0")  # free ports, not 8080 and up
    ctx = UpContext(settings, exchange, bootstrap)
    announced: list[str] = []
    ready = asyncio.Event()

    def on_ready(name: str, endpoints: list[str]) -> None:
        assert name == "gateway"
        announced.extend(endpoints)
        ready.set()

    running = asyncio.create_task(run_in_up(ctx, on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        text = "\n".join(announced)
        urls = dict(re.findall(r"^(\S+)\s+(http://\S+)/docs$", text, re.MULTILINE))
        tokens = dict(re.findall(r"^(\S+)\s+token (oixgw_\S+)$", text, re.MULTILINE))
        assert set(tokens) == set(urls)
        assert all(len(line) < 70 for line in announced)  # 80 columns with the service name
        gateways = {agency: (urls[agency], tokens[agency]) for agency in urls}
        assert set(gateways) == set(exchange.agreement.parties)
        lv_url, lv_token = gateways[AGENCY]
        async with httpx.AsyncClient(headers=bearer(lv_token)) as http:
            accepted = await http.post(f"{lv_url}/v1/reports", json=incident())
            wrong_gateway = await http.post(f"{gateways['PL-SG'][0]}/v1/reports", json=incident())
        assert accepted.status_code == 201, accepted.text
        assert wrong_gateway.status_code == 403, wrong_gateway.text
    finally:
        ctx.stop.set()
        await asyncio.wait_for(running, 30)


async def test_the_demo_publishes_every_example_through_the_sdk(
    settings: Settings, exchange: Exchange, bootstrap: str
) -> None:
    published: list[Published] = []
    count = await run_demo(
        settings, exchange, bootstrap, rounds=1, interval=0, on_published=published.append
    )
    assert count == len(published) == len(load_examples())
    cancellation = next(p for p in published if p.report.report_type == "Cancellation")
    cancelled = next(
        p
        for p in published
        if str(p.report.header.message_id) == str(cancellation.report.cancelled_message_id)  # type: ignore[attr-defined]
    )
    assert cancellation.topics == cancelled.topics
    assert cancellation.partition == cancelled.partition
    ids = [str(p.report.header.message_id) for p in published]
    landed = await read_until(bootstrap, exchange, {t for p in published for t in p.topics}, ids)
    assert {r.message_id for r in landed} >= set(ids)
    assert all(r.opened.trusted for r in landed)
