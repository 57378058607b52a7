"""``oix audit run`` and the audit consumer inside ``oix up``: store, metrics endpoint, consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from services.audit._consumer import AuditConsumer
from services.audit._metrics import AuditMetrics, Health, MetricsServer
from services.audit._migrate import migrate
from services.audit._retention import run_purge_schedule
from services.audit._settings import AuditSettings
from services.audit._store import AuditStore
from services.bus import Exchange, Settings, cancel_and_wait, get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Running:
    """Where a started audit service can be reached."""

    store: str
    metrics_url: str | None
    group_id: str


async def run_audit(
    settings: Settings,
    audit: AuditSettings,
    bootstrap: str,
    stop: asyncio.Event,
    *,
    exchange: Exchange | None = None,
    migrate_first: bool = False,
    on_ready: Callable[[Running], None] | None = None,
) -> int:
    """Run the audit consumer until ``stop`` is set; returns how many records it stored.

    ``migrate_first`` brings the store's schema up to date before starting
    (the embedded SQLite store of ``oix up``); otherwise a store that is not
    migrated stops the start with the command to run.
    """
    url = audit.resolved_url(settings)
    if migrate_first:
        await migrate(url)
    store = await AuditStore.open(url)
    metrics = AuditMetrics()
    health = Health()
    server: MetricsServer | None = None
    try:
        if audit.metrics_port is not None:
            server = MetricsServer(metrics, health, audit.metrics_host, audit.metrics_port)
            await server.start()
        exchange = exchange or Exchange.from_settings(settings)
        service = AuditConsumer(
            settings,
            audit,
            exchange,
            bootstrap,
            store=store,
            metrics=metrics,
            health=health,
        )
        if on_ready is not None:
            on_ready(
                Running(
                    store.display_url,
                    f"{server.url}/metrics" if server is not None else None,
                    service.group_id,
                ),
            )
        purging: asyncio.Task[None] | None = None
        if audit.purge_interval_s > 0:
            purging = asyncio.create_task(
                run_purge_schedule(
                    store,
                    exchange.agreement.defaults.retention_days,
                    audit.purge_interval_s,
                    stop,
                ),
                name="audit-purge",
            )
        try:
            await service.run(stop)
        finally:
            if purging is not None:
                await cancel_and_wait(purging)
        return service.stored
    finally:
        if server is not None:
            await server.stop()
        await store.close()
