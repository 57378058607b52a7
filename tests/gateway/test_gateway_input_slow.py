"""Slow and idle clients cannot hold the gateway's connections.

Before, a client that connected and sent nothing, sent its request head a byte
at a time, or stalled in the middle of its body held its connection for good
(300 stalled uploads were still open after 62 s), and a connection stayed open
after its 401. Here the gateway's connection cap is small, more slow clients
than that connect, and a normal client must still get its report published.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from gateway_support import AGENCY, RunningGateway, bearer, incident, make_gateway_settings
from gateway_support import running_gateway as start_gateway
from polling import eventually

from services.bus import Exchange, Settings

pytestmark = pytest.mark.timeout(60)
CAP = 12
DEADLINE_S = 1.0


@pytest.fixture
async def guarded(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> RunningGateway:
    gateway = make_gateway_settings(
        tokens_file,
        max_connections=CAP,
        request_head_timeout=DEADLINE_S,
        body_timeout=DEADLINE_S,
        keep_alive_timeout=1,
    )
    async with start_gateway(settings, gateway, exchange) as running:
        yield running


async def _connect(gateway: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.server.port)


async def _until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the gateway sends until it closes the connection (fails if it does not)."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionResetError:
        return b""


async def _trickle(writer: asyncio.StreamWriter, head: bytes) -> None:
    """Send ``head`` a byte at a time (slowloris): each byte resets uvicorn's own timer."""
    with contextlib.suppress(ConnectionError):
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(DEADLINE_S / 5)


async def test_slow_clients_cannot_hold_the_connection_slots(
    guarded: RunningGateway, tokens: dict[str, str]
) -> None:
    body = orjson.dumps(incident())
    head = (
        f"POST /v1/reports HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tokens[AGENCY]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    stalled_bodies = [await _connect(guarded) for _ in range(6)]
    for _, writer in stalled_bodies:
        writer.write(head + body[:40])  # and then nothing more
    silent = [await _connect(guarded) for _ in range(4)]
    half_heads = [await _connect(guarded) for _ in range(3)]
    for _, writer in half_heads:
        writer.write(head[:30])
    tricklers = [await _connect(guarded) for _ in range(3)]
    trickling = [asyncio.create_task(_trickle(w, head * 50)) for _, w in tricklers]
    held = len(stalled_bodies) + len(silent) + len(half_heads) + len(tricklers)
    assert held > CAP

    async def publish() -> httpx.Response | None:
        # A fresh connection per try: past the cap uvicorn answers 503.
        async with httpx.AsyncClient(base_url=guarded.url, headers=bearer(tokens[AGENCY])) as http:
            answer = await http.post("/v1/reports", json=incident(message_id=str(uuid.uuid4())))
        return answer if answer.status_code == 201 else None

    # Served once the deadlines cut the slow ones off (about DEADLINE_S here), not never.
    await eventually(publish, "a normal client to get its report published", timeout=30)

    for reader, _ in stalled_bodies:
        answer = await _until_closed(reader, 5 * DEADLINE_S)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"application/problem+json" in answer
        assert b'"code":"timeout"' in answer
    for reader, _ in [*silent, *half_heads, *tricklers]:
        assert await _until_closed(reader, 5 * DEADLINE_S) == b""
    for task in trickling:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for _, writer in [*stalled_bodies, *silent, *half_heads, *tricklers]:
        writer.close()


async def test_a_refused_client_does_not_keep_its_connection(
    settings: Settings, exchange: Exchange, tokens_file: Path, tokens: dict[str, str]
) -> None:
    patient = make_gateway_settings(
        tokens_file, request_head_timeout=120, keep_alive_timeout=120, body_timeout=120
    )
    async with start_gateway(settings, patient, exchange) as running:
        reader, writer = await _connect(running)
        writer.write(
            f"GET /v1/reports/{uuid.uuid4()}/status HTTP/1.1\r\nHost: gw\r\n"
            "Authorization: Bearer nonsense\r\n\r\n".encode()
        )
        # Closed right after the answer, not after the 120 s keep-alive timeout.
        answer = await _until_closed(reader, 30)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"connection: close" in answer.lower()
