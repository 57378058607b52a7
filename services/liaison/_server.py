"""A liaison service's HTTP server: uvicorn serving the app of a started :class:`LiaisonService`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from services.bus import ConfigError, Exchange, Settings, get_logger
from services.liaison._console import console_app
from services.liaison._service import LiaisonService
from services.liaison._settings import LiaisonSettings

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the service owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiaisonServer:
    """The HTTP front door of a started :class:`LiaisonService`, served by uvicorn."""

    def __init__(
        self, service: LiaisonService, host: str | None = None, port: int | None = None
    ) -> None:
        self.service = service
        self.host = host if host is not None else service.liaison.host
        self._socket = _listen(self.host, port if port is not None else service.liaison.port)
        self.port: int = self._socket.getsockname()[1]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the service answers."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Serve HTTP in the background (the socket already accepts connections)."""
        config = uvicorn.Config(
            console_app(self.service),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name=f"liaison {self.service.agency}"
        )

    async def stop(self) -> None:
        """Stop accepting, end the live streams, answer the requests in progress."""
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
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"OIX_LIAISON_PORT: cannot listen on {host}:{port}: {exc.strerror}; set "
            "OIX_LIAISON_PORT (or OIX_LIAISON_HOST) to a free one, or OIX_LIAISON_PORT=0 "
            "for any free port"
        ) from exc
    sock.listen(512)
    sock.setblocking(False)  # noqa: FBT003  # asyncio needs non-blocking sockets
    return sock


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
    """Run one liaison service until ``stop`` is set, then shut it down gracefully."""
    service = LiaisonService(settings, liaison, exchange, bootstrap, migrate_first=migrate_first)
    await service.start()
    try:
        server = LiaisonServer(service)
        await server.start()
        if on_ready is not None:
            on_ready(server)
        log.info("liaison service listening", url=server.url, agency=service.agency)
        stopping = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(server.wait())
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if serving.done():
            serving.result()
        await server.stop()
    finally:
        await service.stop()
