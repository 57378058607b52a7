"""The producer's idempotence setting against the real broker.

Apache Kafka grants the idempotent producer; the embedded broker refuses it.
`auto` must still give a working acks=all producer there and say so once, and
`on` must refuse to start rather than quietly lose the guarantee.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from services.bus import BrokerError, Settings, start_producer
from services.bus._kafka import _NO_IDEMPOTENCE

WARNING = "idempotent producer not available on this broker"


@pytest.fixture
def refusing_broker(broker_kind: str, bootstrap: str) -> str:
    if broker_kind != "tansu":
        pytest.skip("only the embedded broker refuses the idempotent producer")
    return bootstrap


async def test_on_refuses_to_start_without_idempotence(
    settings: Settings, refusing_broker: str
) -> None:
    strict = settings.model_copy(update={"kafka_idempotence": "on"})
    with pytest.raises(BrokerError, match="refused the idempotent producer"):
        await start_producer(strict, refusing_broker)


async def test_auto_falls_back_to_a_working_acks_all_producer(
    settings: Settings, refusing_broker: str, topic_prefix: str
) -> None:
    producer = await start_producer(settings, refusing_broker)
    try:
        # aiokafka keeps a transaction manager only for an idempotent producer
        assert producer._txn_manager is None
        metadata = await producer.send_and_wait(f"{topic_prefix}.probe", b"value", key=b"k")
        assert metadata.offset == 0
    finally:
        await producer.stop()
    assert refusing_broker in _NO_IDEMPOTENCE


def test_auto_warns_once_per_broker_however_many_producers(refusing_broker: str) -> None:
    # A process of its own: logging is configured once per process.
    script = textwrap.dedent(
        f"""
        import asyncio
        from services.bus import Settings, configure_logging, start_producer

        async def main():
            configure_logging("json", "DEBUG")
            for _ in range(3):
                producer = await start_producer(Settings(), {refusing_broker!r})
                await producer.stop()

        asyncio.run(main())
        """,
    )
    done = subprocess.run(  # our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    levels = [line["level"] for line in lines if str(line.get("event", "")).startswith(WARNING)]
    assert levels == ["warning", "debug", "debug"], done.stdout + done.stderr
