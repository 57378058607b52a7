"""A running liaison service: store, consumer, webhook deliverer, gateway client, sessions.

They start before the HTTP server (:mod:`._server`), so a bad agency, an
unmigrated store or an unreadable officers file stops the service with one
clear error before it listens; they stop after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from services.bus import ConfigError, Exchange, Settings, get_logger
from services.liaison._auth import OfficerRegistry
from services.liaison._consumer import LiaisonConsumer
from services.liaison._endpoints import Endpoint, read_endpoints
from services.liaison._metrics import LiaisonMetrics
from services.liaison._migrate import migrate
from services.liaison._publish import GatewayClient
from services.liaison._retention import run_retention
from services.liaison._settings import LiaisonSettings
from services.liaison._signal import ChangeSignal
from services.liaison._store import LiaisonStore, Written
from services.liaison._views import Views
from services.liaison._webhooks import Deliverer, Router

log = get_logger(__name__)


class LiaisonService:
    """Everything one liaison service holds while it runs, for one agency."""

    def __init__(
        self,
        settings: Settings,
        liaison: LiaisonSettings,
        exchange: Exchange | None = None,
        bootstrap: str | None = None,
        *,
        migrate_first: bool = False,
    ) -> None:
        self.settings = settings
        self.liaison = liaison
        self.exchange = exchange or Exchange.from_settings(settings)
        self.agency = liaison.required_agency(self.exchange)
        broker = bootstrap or settings.bootstrap
        if broker is None:
            raise ConfigError("no broker: set OIX_BOOTSTRAP (or run `oix up`)")
        self.bootstrap = broker
        self.migrate_first = migrate_first
        self.url = liaison.resolved_url(settings, self.agency)
        self.officers = OfficerRegistry(liaison.officers_path(settings))
        self.endpoints: list[Endpoint] = [
            e for e in read_endpoints(liaison.webhooks_path(settings)) if e.agency == self.agency
        ]
        token = liaison.gateway_secret()
        if liaison.gateway_url and not token:
            raise ConfigError(
                "OIX_LIAISON_GATEWAY_URL is set but no token: set OIX_LIAISON_GATEWAY_TOKEN or "
                "OIX_LIAISON_GATEWAY_TOKEN_FILE (a token of the agency's gateway)"
            )
        self.gateway = (
            GatewayClient(liaison.gateway_url, token, liaison.gateway_timeout)
            if liaison.gateway_url and token
            else None
        )
        self.metrics = LiaisonMetrics()
        self.signal = ChangeSignal(liaison.stream_keep)
        """Told of every commit: the live streams wait on it."""
        self.queued = ChangeSignal(0)
        """Told when webhook deliveries were queued or a dead letter put back: the deliverer
        waits on it (not on every commit)."""
        self.draining = False
        self._store: LiaisonStore | None = None
        self._consumer: LiaisonConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def store(self) -> LiaisonStore:
        """The store (once started)."""
        if self._store is None:
            raise RuntimeError("the liaison service is not started")
        return self._store

    @property
    def views(self) -> Views:
        """The officers' queries of the store."""
        return Views(self.store)

    @property
    def consumer(self) -> LiaisonConsumer:
        """The subscriber (once started)."""
        if self._consumer is None:
            raise RuntimeError("the liaison service is not started")
        return self._consumer

    @property
    def group_id(self) -> str:
        """The agency's consumer group."""
        return self.liaison.resolved_group(self.settings, self.agency)

    async def start(self) -> None:
        """Open the store, then start consuming, delivering webhooks and the retention round.

        Raises:
            SchemaVersionError: the store is not migrated (and ``migrate_first`` is off).
            StoreUnavailableError: the store cannot be reached.
        """
        if self.migrate_first:
            await migrate(self.url)
        self._store = await LiaisonStore.open(self.url)
        self._consumer = LiaisonConsumer(
            self.settings,
            self.liaison,
            self.exchange,
            self.agency,
            self.bootstrap,
            store=self._store,
            metrics=self.metrics,
            deliveries=Router(self.agency, self.endpoints),
            on_committed=self._committed,
        )
        self._stop.clear()
        deliverer = Deliverer(
            self._store,
            self.agency,
            self.endpoints,
            metrics=self.metrics,
            signal=self.signal,
            wake=self.queued,
            max_attempts=self.liaison.webhook_max_attempts,
            backoff_ms=self.liaison.webhook_backoff_ms,
            max_backoff_ms=self.liaison.webhook_max_backoff_ms,
            timeout_s=self.liaison.webhook_timeout_s,
        )
        self._spawn(self._consumer.run(self._stop), "consumer")
        self._spawn(deliverer.run(self._stop), "webhooks")
        self._spawn(run_retention(self._store, self.agency, self.metrics, self._stop), "retention")
        log.info(
            "liaison service started",
            agency=self.agency,
            store=self._store.display_url,
            group=self.group_id,
            webhooks=len(self.endpoints),
            gateway=self.gateway.url if self.gateway else None,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"liaison {self.agency} {name}")
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "a part of the liaison service failed", part=task.get_name(), error=repr(error)
            )

    def _committed(self, written: Written) -> None:
        if written.stored or written.alerts or written.deliveries:
            self.signal.changed(written.changes)
        if written.deliveries:
            self.queued.changed()

    @property
    def failure(self) -> BaseException | None:
        """The error a background part stopped with, if one did."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def stop(self) -> None:
        """Drain the consumer, stop the deliverer, close the store."""
        self.draining = True
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.liaison.drain_timeout_s + 5)
        self._tasks.clear()
        if self.gateway is not None:
            await self.gateway.close()
        if self._store is not None:
            await self._store.close()
            self._store = None
        log.info("liaison service stopped", agency=self.agency)
