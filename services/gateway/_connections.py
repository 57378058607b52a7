"""What a client connection may hold: time limits for idle and slow clients, a connection cap.

uvicorn closes an idle keep-alive connection only after a response, and
resets that timer on any byte: a client that connects and sends nothing, or
sends its request head a byte at a time (slowloris), holds its connection for
ever. :func:`guarded_protocol` adds a deadline for the request head, armed
when a connection opens and again after every response, disarmed only once
the head is complete. The body has its own deadline in the routes (answered
408, see :func:`services.gateway._routes.read_body`), and the number of
connections is capped by uvicorn's ``limit_concurrency`` (503 past it).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.bus import get_logger
from services.gateway._settings import GatewaySettings

log = get_logger(__name__)


class _HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head does not arrive."""

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: no pipelined request is running, so
        # the next request head is awaited (any byte cancels uvicorn's timer, not this one).
        if self.timeout_keep_alive_task is not None:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug(
                "closing a connection that sent no complete request head in time",
                client=":".join(map(str, self.client)) if self.client else None,
                seconds=self.head_timeout,
            )
            self.transport.close()


def guarded_protocol(gateway: GatewaySettings) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for a gateway: uvicorn's, with its request-head deadline."""
    return type(
        "GatewayHttpProtocol",
        (_HeadDeadlineProtocol,),
        {"head_timeout": gateway.request_head_timeout},
    )
