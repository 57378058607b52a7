"""A running gateway's resources: producer, store, pipeline and acknowledgement reader.

They start before the HTTP server (:mod:`._server`), so a bad agency, key,
token file or an unreachable broker stops the gateway with one clear error
before it listens; they stop after it, once the reports in flight are settled.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.bus import (
    ConfigError,
    Exchange,
    Settings,
    get_logger,
)
from services.gateway._acks import AcknowledgementReader
from services.gateway._metrics import Metrics
from services.gateway._pipeline import Pipeline
from services.gateway._resources import open_resources
from services.gateway._retention import KeyForgetter
from services.gateway._settings import (
    GatewaySettings,
    check_agency,
    tokens_path,
)
from services.gateway._store import Store
from services.gateway._tokens import TokenRegistry

log = get_logger(__name__)
READINESS_TIMEOUT = 2.0


class GatewayService:
    """Everything one gateway holds while it runs, for one agency."""

    def __init__(
        self,
        settings: Settings,
        gateway: GatewaySettings,
        exchange: Exchange | None = None,
        bootstrap: str | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.exchange = exchange or Exchange.from_settings(settings)
        self.bootstrap = bootstrap or settings.bootstrap
        self.agency = check_agency(self.exchange, gateway.agency)
        self.tokens = TokenRegistry(tokens_path(settings, gateway))
        if self.agency not in self.tokens.agencies():
            raise ConfigError(
                f"{self.tokens.path}: no token for {self.agency}, so no agency system could "
                f"publish; create one with `oix gateway token create {self.agency} --name "
                "<system>`",
            )
        self.metrics = Metrics()
        self.draining = False
        self._store: Store | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pipeline: Pipeline | None = None
        self._acks: AcknowledgementReader | None = None
        self._forgetter: KeyForgetter | None = None

    @property
    def pipeline(self) -> Pipeline:
        """The publish pipeline (once started)."""
        if self._pipeline is None:
            raise RuntimeError("the gateway service is not started")
        return self._pipeline

    async def start(self) -> None:
        """Open the store, start the producer and the acknowledgement reader.

        Raises:
            ConfigError: no broker configured, or the store cannot be opened.
            BrokerError: the broker cannot be reached.
        """
        opened = await open_resources(
            self.exchange,
            self.agency,
            settings=self.settings,
            gateway=self.gateway,
            metrics=self.metrics,
            bootstrap=self.bootstrap,
        )
        self._store, self._producer, self._pipeline = opened.store, opened.producer, opened.pipeline
        self._forgetter = KeyForgetter(self._store, self.gateway.idempotency_window)
        self._forgetter.start()
        if self.gateway.track_acknowledgements:
            assert self.bootstrap is not None  # open_resources refuses None without a producer
            self._acks = AcknowledgementReader(
                self.settings,
                gateway=self.gateway,
                exchange=self.exchange,
                agency=self.agency,
                store=self._store,
                metrics=self.metrics,
                bootstrap=self.bootstrap,
                metadata=self._producer.client.fetch_all_metadata,
            )
            await self._acks.start()
        log.info(
            "gateway started",
            agency=self.agency,
            store=str(self._store.path),
            expired_idempotency_keys=opened.forgotten,
        )

    async def stop(self) -> None:
        """Wait for reports in flight, then stop reading, flush the producer, close the store."""
        self.draining = True
        if self._pipeline is not None:
            await self._pipeline.close(self.gateway.shutdown_grace)
        if self._acks is not None:
            await self._acks.stop()
            self._acks = None
        if self._forgetter is not None:
            await self._forgetter.stop()
            self._forgetter = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        log.info("gateway stopped", agency=self.agency)

    async def broker_problem(self) -> str | None:
        """Why reports cannot be accepted now (broker unreachable or not verified), or None."""
        if self._producer is None or self._pipeline is None:
            return "the producer is not running"
        unverified = self._pipeline.broker_problem
        if unverified is not None:
            return f"the broker is not verified: {unverified}"
        try:
            async with asyncio.timeout(READINESS_TIMEOUT):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError) as exc:
            return f"the broker at {self.bootstrap} does not answer: {exc!r}"
        return None
