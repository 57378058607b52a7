"""A Kafka client whose start is interrupted is stopped, not left for the collector.

A service stopping while the broker restarts can cancel a client in the middle of
its start. An unstopped client keeps its connections, and its ResourceWarning,
raised whenever the collector gets to it, failed an unrelated later test in CI.
The broker here is a listener that accepts and never answers, so the start is
certainly in progress when it is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.bus import Settings, consumer, start_consumer, start_producer


@pytest.fixture
async def silent_broker() -> AsyncIterator[tuple[str, asyncio.Event]]:
    accepted = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_a_consumer_cancelled_while_starting_is_stopped(
    settings: Settings, silent_broker: tuple[str, asyncio.Event]
) -> None:
    bootstrap, accepted = silent_broker
    client = consumer(settings, bootstrap)
    starting = asyncio.create_task(start_consumer(client, settings, bootstrap))
    await asyncio.wait_for(accepted.wait(), 30)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert client._closed  # aiokafka's own flag, the one its __del__ checks


@pytest.mark.parametrize("idempotence", ["auto", "off"])
async def test_a_producer_cancelled_while_starting_is_stopped(
    settings: Settings, silent_broker: tuple[str, asyncio.Event], idempotence: str
) -> None:
    bootstrap, accepted = silent_broker
    own = settings.model_copy(update={"kafka_idempotence": idempotence})
    starting = asyncio.create_task(start_producer(own, bootstrap))
    await asyncio.wait_for(accepted.wait(), 30)
    # The producer is local to start_producer: find it through the task's frame.
    producer = starting.get_coro().cr_frame.f_locals["producer"]
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert producer._closed  # see above
