"""A gateway's HTTP server: uvicorn serving the app of a started :class:`GatewayService`.

Resources start before the HTTP server, so a bad agency, key, token file or an
unreachable broker stops the gateway with one clear error before it listens.
Shutdown goes the other way: stop listening and answer the requests in
progress, then wait for reports still in flight, then flush and close the
producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.bus import Exchange, Settings, frozen_heap, get_logger
from services.gateway._connections import guarded_protocol
from services.gateway._http import create_app
from services.gateway._service import GatewayService
from services.gateway._settings import GatewaySettings
from services.host.serving import HttpServer

log = get_logger(__name__)


class GatewayServer(HttpServer):
    """The HTTP front door of a started :class:`GatewayService`, served by uvicorn."""

    def __init__(
        self, service: GatewayService, host: str | None = None, port: int | None = None
    ) -> None:
        self.service = service
        super().__init__(
            host if host is not None else service.gateway.host,
            port if port is not None else service.gateway.port,
            variables="OIX_GATEWAY",
        )

    async def start(self) -> None:
        """Serve HTTP in the background (the socket already accepts connections)."""
        gateway = self.service.gateway
        await self.serve(
            create_app(self.service),
            f"gateway {self.service.agency}",
            timeout_graceful_shutdown=int(gateway.shutdown_grace) or None,
            # What a client may hold (see ._connections): idle and slow clients are
            # cut off, and past the cap new requests get 503.
            http=guarded_protocol(gateway),
            timeout_keep_alive=gateway.keep_alive_timeout,
            limit_concurrency=gateway.max_connections,
        )

    async def stop(self) -> None:
        """Stop accepting, answer the requests in progress, then return."""
        self.service.draining = True
        await super().stop()


async def run_gateway(
    settings: Settings,
    gateway: GatewaySettings,
    stop: asyncio.Event,
    *,
    exchange: Exchange | None = None,
    bootstrap: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run one gateway until ``stop`` is set, then shut it down gracefully.

    ``on_ready`` gets the gateway's URL once it accepts connections.
    """
    service = GatewayService(settings, gateway, exchange, bootstrap)
    await service.start()
    try:
        server = GatewayServer(service)
        await server.start()
        # Schemas, models, the app: built once and kept for good. Out of the
        # collector's sight, they no longer make every full collection slower.
        with frozen_heap():
            if on_ready is not None:
                on_ready(server.url)
            log.info("gateway listening", url=server.url, agency=service.agency)
            await server.serve_until(stop)
    finally:
        await service.stop()
