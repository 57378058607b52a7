"""A running gateway: its resources (producer, store, pipeline, ack reader) and its HTTP server.

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
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        log.info("gateway stopped", agency=self.agency)

    async def broker_problem(self) -> str | None:
        """Why the broker is not reachable right now, or None when it answers."""
        if self._producer is None:
            return "the producer is not running"
        try:
            async with asyncio.timeout(READINESS_TIMEOUT):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError) as exc:
            return f"the broker at {self.bootstrap} does not answer: {exc!r}"
        return None


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
        from services.gateway._http import create_app  # noqa: PLC0415  # FastAPI loads late

        config = uvicorn.Config(
            create_app(self.service),
            lifespan="off",  # the service starts and stops outside the ASGI app
            log_config=None,  # structlog owns logging
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(self.service.gateway.shutdown_grace) or None,
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
            f"OIX_GATEWAY_HOST/PORT: cannot listen on {host}:{port}: {exc.strerror}"
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
