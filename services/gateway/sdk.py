"""The Python SDK: an agency system that holds its agency's key publishes without HTTP.

It is the gateway's own pipeline behind a second front door: the same
validation, header defaults, idempotency, routing of corrections and
cancellations, signing and acks=all wait, and the same store (so a retry, a
correction or a cancellation knows what either door published)::

    async with Publisher("LV-VRS") as pub:
        accepted = await pub.publish(report)          # after the broker's ack
        print(accepted.topic, accepted.partition, accepted.offset)
        outcomes = await pub.publish_many(reports)    # Accepted or GatewayError each
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer

from services.bus import Exchange, Report, Settings
from services.gateway._admission import Submission
from services.gateway._metrics import Metrics
from services.gateway._pipeline import Pipeline, Status
from services.gateway._resources import open_resources
from services.gateway._results import Accepted, Outcome
from services.gateway._settings import GatewaySettings, check_agency
from services.gateway._store import Store

__all__ = ["Accepted", "Outcome", "Publisher", "Status"]


class Publisher:
    """Publishes one agency's reports; an async context manager.

    Args:
        agency: the agency code; its private key must be in the keys directory.
        settings: shared settings (broker, agreement, keys, data directory);
            read from ``OIX_*`` when not given.
        gateway: timeouts and the idempotency window; read from ``OIX_GATEWAY_*``
            when not given.
        exchange: an already loaded agreement and codec, to share between publishers.
        bootstrap: the broker, when it is not ``settings.bootstrap``.
        producer: a started producer to share; the publisher then does not stop it.
    """

    def __init__(
        self,
        agency: str,
        settings: Settings | None = None,
        *,
        gateway: GatewaySettings | None = None,
        exchange: Exchange | None = None,
        bootstrap: str | None = None,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.gateway = (gateway or GatewaySettings()).model_copy(update={"agency": agency})
        self.exchange = exchange or Exchange.from_settings(self.settings)
        self.agency = check_agency(self.exchange, agency)
        self.bootstrap = bootstrap or self.settings.bootstrap
        self.metrics = Metrics()
        self._shared_producer = producer
        self._producer: AIOKafkaProducer | None = None
        self._store: Store | None = None
        self._pipeline: Pipeline | None = None

    async def start(self) -> None:
        """Open the store and start (or adopt) the producer.

        Raises:
            ConfigError: no broker is configured.
            BrokerError: the broker cannot be reached.
        """
        opened = await open_resources(
            self.exchange,
            self.agency,
            settings=self.settings,
            gateway=self.gateway,
            metrics=self.metrics,
            bootstrap=self.bootstrap,
            producer=self._shared_producer,
        )
        self._store, self._producer, self._pipeline = opened.store, opened.producer, opened.pipeline

    async def close(self) -> None:
        """Wait for reports in flight, stop the producer (unless shared), close the store."""
        if self._pipeline is not None:
            await self._pipeline.close(self.gateway.shutdown_grace)
            self._pipeline = None
        if self._producer is not None and self._shared_producer is None:
            await self._producer.stop()
        self._producer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _running(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the publisher is not started: use `async with Publisher(...)`")
        return self._pipeline

    async def publish(
        self,
        report: Report | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Accepted:
        """Publish one report (a model, or a JSON-like mapping with a ``type``).

        Returns after the broker acknowledged it (acks=all), with its coordinates.

        Raises:
            GatewayError: refused, with the reason and the HTTP status it maps to;
                a :class:`~services.gateway.BrokerUnavailableError` may still be
                written: publish it again (same message id) to learn the outcome.
        """
        return await self._running.publish(Submission(report, idempotency_key, traceparent))

    async def publish_many(self, reports: Iterable[Report | Mapping[str, Any]]) -> list[Outcome]:
        """Publish many reports; one :class:`Accepted` or :class:`GatewayError` each, in order."""
        return await self._running.publish_many([Submission(r) for r in reports])

    def status(self, message_id: str) -> Status:
        """Where a message went and the acknowledgements a running gateway recorded for it."""
        return self._running.status(message_id)
