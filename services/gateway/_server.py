"""A gateway's HTTP server: uvicorn serving the app of a started :class:`GatewayService`.

Resources start before the HTTP server, so a bad agency, key, token file or an
unreachable broker stops the gateway with one clear error before it listens.
Shutdown goes the other way: stop listening and answer the requests in
progress, then wait for reports still in flight, then flush and close the
producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Callable, Iterator

import uvicorn

from services.bus import ConfigError, Exchange, Settings, get_logger
from services.gateway._connections import guarded_protocol
from services.gateway._http import create_app
from services.gateway._service import GatewayService
from services.gateway._settings import GatewaySettings

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """The HTTP front door of a started :class:`GatewayService`, served by uvicorn."""

    def __init__(
        self, service: GatewayService, host: str | None = None, port: int | None = None
    ) -> None:
        self.service = service
        self.host = host if host is not None else service.gateway.host
        self._socket = _listen(self.host, port if port is not None else service.gateway.port)
        self.port: int = self._socket.getsockname()[1]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the gateway answers."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Serve HTTP in the background (the socket already accepts connections)."""
        config = uvicorn.Config(
            create_app(self.service),
            lifespan="off",  # the service starts and stops outside the ASGI app
            log_config=None,  # structlog owns logging
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(self.service.gateway.shutdown_grace) or None,
            # What a client may hold (see ._connections): idle and slow clients are
            # cut off, and past the cap new requests get 503.
            http=guarded_protocol(self.service.gateway),
            timeout_keep_alive=self.service.gateway.keep_alive_timeout,
            limit_concurrency=self.service.gateway.max_connections,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name=f"gateway {self.service.agency}"
        )

    async def stop(self) -> None:
        """Stop accepting, answer the requests in progress, then return."""
        self.service.draining = True
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._socket.close()

    async def wait(self) -> None:
        """Return when the server stops on its own (it failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it a keep-alive answer written in two parts waits for
    # the client's delayed ACK (40 ms on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"OIX_GATEWAY_PORT: cannot listen on {host}:{port}: {exc.strerror}; set "
            "OIX_GATEWAY_PORT (or OIX_GATEWAY_HOST) to a free one, or OIX_GATEWAY_PORT=0 "
            "for any free port"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)  # noqa: FBT003  # asyncio needs non-blocking sockets
    return sock


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
        gc.collect()
        gc.freeze()
        if on_ready is not None:
            on_ready(server.url)
        log.info("gateway listening", url=server.url, agency=service.agency)
        stopping = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(server.wait())
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if serving.done():
            serving.result()  # uvicorn stopped by itself: say why
        await server.stop()
    finally:
        await service.stop()
