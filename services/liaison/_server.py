"""A liaison service's HTTP server: uvicorn serving the app of a started :class:`LiaisonService`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.bus import Exchange, Settings, frozen_heap, get_logger
from services.host.serving import HttpServer
from services.liaison._console import console_app
from services.liaison._service import LiaisonService
from services.liaison._settings import LiaisonSettings

log = get_logger(__name__)


class LiaisonServer(HttpServer):
    """The HTTP front door of a started :class:`LiaisonService`, served by uvicorn."""

    def __init__(
        self, service: LiaisonService, host: str | None = None, port: int | None = None
    ) -> None:
        self.service = service
        super().__init__(
            host if host is not None else service.liaison.host,
            port if port is not None else service.liaison.port,
            variables="OIX_LIAISON",
            backlog=512,
        )

    async def start(self) -> None:
        """Serve HTTP in the background (the socket already accepts connections)."""
        await self.serve(
            console_app(self.service),
            f"liaison {self.service.agency}",
            timeout_graceful_shutdown=5,
        )

    async def stop(self) -> None:
        """Stop accepting, end the live streams, answer the requests in progress."""
        self.service.draining = True
        await super().stop()


async def run_liaison(
    settings: Settings,
    liaison: LiaisonSettings,
    stop: asyncio.Event,
    *,
    exchange: Exchange | None = None,
    bootstrap: str | None = None,
    migrate_first: bool = False,
    on_ready: Callable[[LiaisonServer], None] | None = None,
) -> None:
    """Run one liaison service until ``stop`` is set, then shut it down gracefully.

    Once started, it moves every object alive then out of the garbage
    collector's sight until it stops (:func:`~services.bus.frozen_heap`).
    """
    service = LiaisonService(settings, liaison, exchange, bootstrap, migrate_first=migrate_first)
    await service.start()
    try:
        server = LiaisonServer(service)
        await server.start()
        # Modules, schemas, the agreement and the app live as long as the process; a full
        # collection walking them all paused the event loop for 60-250 ms at 500 reports/s:
        # most of the live stream's p99 (bench/liaison.py, docs/liaison.md "Measured").
        with frozen_heap():
            if on_ready is not None:
                on_ready(server)
            log.info("liaison service listening", url=server.url, agency=service.agency)
            await server.serve_until(stop)
    finally:
        await service.stop()
