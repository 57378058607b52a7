"""What both front doors stand on: the agency's store, a producer and the pipeline over them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.bus import BrokerError, ConfigError, Exchange, Settings, start_producer
from services.gateway._metrics import Metrics
from services.gateway._pipeline import Pipeline
from services.gateway._settings import GatewaySettings, store_path
from services.gateway._store import Store


@dataclass(frozen=True, slots=True)
class Resources:
    """A started pipeline with the store and producer it writes through."""

    store: Store
    producer: AIOKafkaProducer
    pipeline: Pipeline
    forgotten: int
    """Idempotency keys older than the window, dropped at opening."""


async def open_resources(
    exchange: Exchange,
    agency: str,
    *,
    settings: Settings,
    gateway: GatewaySettings,
    metrics: Metrics,
    bootstrap: str | None,
    producer: AIOKafkaProducer | None = None,
) -> Resources:
    """Open the store, start a producer (unless one is given) and the pipeline.

    Raises:
        ConfigError: no broker is configured and no producer given.
        BrokerError: the broker cannot be reached.
    """
    if producer is None and bootstrap is None:
        raise ConfigError(
            "no broker: set OIX_BOOTSTRAP (or run inside `oix up`, or pass bootstrap= to the SDK)",
        )
    store = Store.open(store_path(settings, agency))
    try:
        forgotten = store.forget_keys_before(datetime.now(UTC) - gateway.idempotency_window)
        if producer is None:
            assert bootstrap is not None  # checked above
            try:
                producer = await start_producer(settings, bootstrap)
            except KafkaError as exc:
                raise BrokerError(f"cannot reach the broker at {bootstrap}: {exc!r}") from exc
    except BaseException:
        store.close()
        raise
    pipeline = Pipeline(
        exchange,
        agency,
        producer=producer,
        store=store,
        metrics=metrics,
        gateway=gateway,
        settings=settings,
        bootstrap=bootstrap,
    )
    await pipeline.start()
    return Resources(store, producer, pipeline, forgotten)
