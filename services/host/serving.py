"""Serving a service's ASGI app with uvicorn, on a socket bound before it starts.

Shared by every service that listens (the gateway, the liaison service). The
socket is bound when the server is made, so a taken port stops the service
with one line naming the variable to change, before anything else starts; a
port of 0 takes any free one, and ``port`` says which. uvicorn's own signal
handling is off: whoever runs the service (its command, ``oix up``, a test)
owns the signals. Imported by the services' server modules only, never by
``services.host`` itself: ``oix --help`` must not load a web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from services.bus import ConfigError


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn serving one app in the background on a socket bound at construction."""

    def __init__(self, host: str, port: int, *, variables: str, backlog: int = 2048) -> None:
        """Bind ``host:port``; ``variables`` is the settings prefix, e.g. ``OIX_GATEWAY``.

        Raises:
            ConfigError: the port cannot be bound, naming ``<variables>_PORT``.
        """
        self.host = host
        self._socket = listen(host, port, variables=variables, backlog=backlog)
        self.port: int = self._socket.getsockname()[1]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the server answers."""
        return f"http://{self.host}:{self.port}"

    async def serve(self, app: Any, name: str, **options: Any) -> None:
        """Serve ``app`` in the background; ``options`` are more ``uvicorn.Config`` settings."""
        config = uvicorn.Config(
            app,
            lifespan="off",  # the service starts and stops outside the ASGI app
            log_config=None,  # structlog owns logging
            access_log=False,
            server_header=False,
            **options,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name=name)

    async def stop(self) -> None:
        """Stop accepting, answer the requests in progress, then return."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._socket.close()

    async def wait(self) -> None:
        """Return when the server stops on its own (it failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or the server stops on its own (raising why); stop."""
        stopping = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(self.wait())
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if serving.done():
            serving.result()  # uvicorn stopped by itself: say why
        await self.stop()


def listen(host: str, port: int, *, variables: str, backlog: int = 2048) -> socket.socket:
    """A listening, non-blocking TCP socket; a port in use names ``<variables>_PORT``.

    Raises:
        ConfigError: the address cannot be bound.
    """
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
            f"{variables}_PORT: cannot listen on {host}:{port}: {exc.strerror}; set "
            f"{variables}_PORT (or {variables}_HOST) to a free one, or {variables}_PORT=0 "
            "for any free port"
        ) from exc
    sock.listen(backlog)
    sock.setblocking(False)  # noqa: FBT003  # asyncio needs non-blocking sockets
    return sock
